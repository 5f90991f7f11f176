"""Suites, the runner and the results store (design.md "Suites, records, leaderboards", "Execution and scale").

``load_suite(path)`` parses a strict TOML suite into cells (config.py), ``run_suite(suite, out_dir)`` runs the cells
not yet done through an executor and writes records (runner.py), ``ResultsStore(dir)`` reads and writes
``records.jsonl`` and ``predictions/<run_id>.npz`` (store.py); ``ray_executor.run_cells`` runs cells on a Ray
cluster (imported only for ``executor="ray"``).
"""

from ntkbayes.harness.config import Cell, DatasetSpec, MethodSpec, Suite, load_suite, parse_suite
from ntkbayes.harness.runner import (
    Executor,
    RunSummary,
    dry_run_suite,
    get_executor,
    local_executor,
    run_cell,
    run_suite,
)
from ntkbayes.harness.store import SCHEMA_VERSION, ResultsStore, StoreWarning

__all__ = [
    "Cell", "DatasetSpec", "Executor", "MethodSpec", "ResultsStore", "RunSummary", "SCHEMA_VERSION", "StoreWarning",
    "Suite", "dry_run_suite", "get_executor", "load_suite", "local_executor", "parse_suite", "run_cell", "run_suite",
]
