"""Suites, cells, executors, the runner and the results store (design.md "Suites, records, leaderboards",
"Execution and scale").

``load_suite(path)`` parses a strict TOML suite into cells (config.py); ``run_cell(cell)`` runs one cell into a
record (cell.py); executors send cells to this process or a Ray cluster (executors.py); ``run_suite(suite,
out_dir)`` runs the cells not yet done and writes records (runner.py); ``ResultsStore(dir)`` reads and writes
``records.jsonl`` and ``predictions/<run_id>.npz`` (store.py); ``tune_suite(suite)`` selects hyperparameters on
validation data (tune.py) into a selection file that ``run_suite`` applies (selection.py; docs/tuning.md).

Names are imported on first use (PEP 562), so ``import ntkbayes.harness.store`` (what the report needs) loads
neither the runner nor torch-heavy modules.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name → the submodule defining it.
_EXPORTS = {
    "Cell": "config", "DatasetSpec": "config", "MethodSpec": "config", "Suite": "config", "load_suite": "config",
    "parse_suite": "config", "run_cell": "cell", "Executor": "executors", "get_executor": "executors",
    "local_executor": "executors", "RunSummary": "runner", "dry_run_suite": "runner", "run_suite": "runner",
    "SCHEMA_VERSION": "store", "ResultsStore": "store", "StoreWarning": "store", "run_cells": "runner",
    "tune_suite": "tune", "Objective": "tune", "load_selection": "selection", "write_selection": "selection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
