"""Adding a method is one file: ``tests/byo_method.py`` defines ``byo_centroid`` and nothing else in the repository
names it. Loaded into fresh processes (so the registry of this process stays the package's), it passes the
contract test (tests/methods/test_contract.py, parametrized over the registry) and runs in a suite whose leaderboard,
comparison and report show it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NAME = "byo_centroid"

SUITE = """
name = "byo"
seeds = [0, 1]
threads = 1

[datasets.moons]
n = 200

[methods.byo_centroid]
members = 3

[methods.map]
width = 16
epochs = 30
patience = 5
"""

RUN = """
import sys
import byo_method  # noqa: F401  (registers byo_centroid: the only thing that names it)
from ntkbayes.cli import main
suite, out = sys.argv[1], sys.argv[2]
for argv in (["run", suite, "--out", out, "--no-progress"], ["leaderboard", out, "--output", out + "/leaderboard.md"],
             ["compare", out], ["report", out]):
    code = main(argv)
    if code:
        sys.exit(code)
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_byo_method_passes_the_contract_test():
    proc = subprocess.run([sys.executable, "-m", "pytest", str(TESTS / "methods" / "test_contract.py"), "-q",
                           "-o", "addopts=", "-p", "byo_method", "-k", NAME, "-p", "no:cacheprovider"],
                          cwd=TESTS.parent, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    passed = re.search(r"(\d+) passed", proc.stdout)  # exit 0 with -k NAME: the plugin registered it, all passed
    assert passed and int(passed.group(1)) >= 6, proc.stdout[-3000:]


@pytest.mark.slow
def test_byo_method_runs_in_a_suite_and_shows_everywhere(tmp_path):
    suite = tmp_path / "byo.toml"
    suite.write_text(SUITE)
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-c", RUN, str(suite), str(out)], cwd=TESTS.parent, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert NAME in (out / "leaderboard.md").read_text()
    compare = "\n".join(p.read_text() for p in (out / "compare").rglob("*.md"))
    assert NAME in compare
    assert NAME in (out / "report.html").read_text()
