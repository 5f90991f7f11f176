"""Leaderboards, comparisons, figures and the HTML report (reads only the results store)."""
