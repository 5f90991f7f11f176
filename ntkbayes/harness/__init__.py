"""Suites, the runner and the results store."""
