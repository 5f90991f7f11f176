"""Infinite-width and empirical NTKs, the linearized model, the function-space solver, lazy-regime diagnostics."""
