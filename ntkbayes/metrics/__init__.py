"""Uncertainty and calibration metrics (benchmarks.md §1)."""
