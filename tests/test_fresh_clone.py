"""A fresh clone works: ``git clone`` the committed HEAD into a temporary directory and run the smoke suite end to
end through the command line there (run → render: leaderboards, compare, report), as ``make run`` does with the default
suite; every command exits 0 and leaves its files, and a second pass (resume, render again) changes no byte of
anything it wrote. Skipped only outside a git checkout."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Files the pipeline must leave in the results directory (beyond records and predictions).
EXPECTED = ("leaderboard.md", "leaderboard.csv", "leaderboard_summary.csv", "leaderboard.tex", "leaderboard.html",
            "compare/summary.md", "report.html")


def _in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    p = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True, text=True)
    return p.returncode == 0 and Path(p.stdout.strip()).resolve() == REPO.resolve()


def _run(clone: Path, *argv: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "ntkbayes.cli", *argv], cwd=clone, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, (argv, p.stdout[-2000:], p.stderr[-2000:])
    return p.stdout


def _pipeline(clone: Path, out: str) -> str:
    summary = _run(clone, "run", "smoke", "--out", out, "--workers", "2", "--no-progress")
    _run(clone, "render", out)  # what `make run` renders after the cells
    return summary


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.skipif(not _in_git_checkout(), reason="not in a git checkout")
def test_fresh_clone_runs_the_smoke_suite_end_to_end(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    out = "results/smoke-fresh"
    summary = _pipeline(clone, out)
    assert "0 already done" in summary and ", 0 failed)" in summary, summary
    root = clone / out
    for name in EXPECTED:
        assert (root / name).is_file() and (root / name).stat().st_size > 0, name
    assert list((root / "predictions").glob("*.npz")) and list((root / "figures").glob("*.png"))
    before = _digests(root)
    tracked_before = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    again = _pipeline(clone, out)
    assert "ran 0" in again, again
    after = _digests(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a second pass rewrote {changed}"
    tracked_after = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert tracked_after == tracked_before
