"""The ``ntkbayes`` command: user errors are one line on stderr with exit status 2 and no traceback; run, resume,
list, leaderboard and the lazily imported subcommands."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ntkbayes.cli import build_parser, main

sys.path.insert(0, str(Path(__file__).resolve().parent / "harness"))
import harness_fakes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fakes():
    harness_fakes.register_fakes()
    yield
    harness_fakes.unregister_fakes()


def suite_file(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntkbayes: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_subprocess_unknown_key_exits_2_with_one_line(tmp_path):
    bad = suite_file(tmp_path, """
        seeds = [0]
        colour = "blue"
        [datasets.moons]
        [methods.map]
    """)
    p = subprocess.run([sys.executable, "-m", "ntkbayes.cli", "run", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert_one_line_error(p.returncode, p.stderr, str(bad), "'colour'")
    assert not (tmp_path / "o").exists()


def test_console_script_missing_dataset_files_exit_2(tmp_path):
    """A suite whose dataset files are missing stops before running anything, naming the path."""
    script = Path(sys.executable).parent / "ntkbayes"
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    from ntkbayes import methods

    if "map" not in methods.available():
        pytest.skip("map method not written yet")
    suite = suite_file(tmp_path, """
        seeds = [0]
        [datasets.mnist]
        subset = 100
        [methods.map]
        epochs = 1
    """)
    p = subprocess.run([str(script), "run", str(suite), "--out", str(tmp_path / "o"), "--root", str(tmp_path / "d"),
                        "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert_one_line_error(p.returncode, p.stderr, "mnist", str(tmp_path / "d"), "--download")
    assert not (tmp_path / "o" / "records.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["run", "--device", "tpu"], ["run:", "--device", "tpu"]),
        (["run", "--seeds", "a"], ["--seeds", "'a'"]),
        (["frobnicate"], ["frobnicate"]),
        ([], ["required"]),
        (["run", "nosuchsuite"], ["suite file not found: nosuchsuite"]),
        (["leaderboard", "nodir"], ["nodir", "not a results directory"]),
        (["leaderboard"], ["dir"]),
        (["run", "--address", "auto"], ["--address needs --executor ray"]),
        (["run", "smoke", "--dry-run", "--device", "cuda"], ["dry run", "--device"]),
        (["run", "smoke", "--dry-run", "--seeds", "1"], ["dry run", "--seeds"]),
    ],
)
def test_user_errors_in_process(capsys, argv, needles):
    rc = main(argv)
    assert_one_line_error(rc, capsys.readouterr().err, *needles)


def test_suite_errors_in_process(tmp_path, capsys, fakes):
    cases = [
        ("seeds = [0]\n[datasets._tiny]\n[methods.nosuch]\n", ["[methods.nosuch]", "unknown method"]),
        ("seeds = [0]\n[datasets._tiny]\n[methods._test_logreg]\nstepz = 1\n", ["stepz", "unknown parameter"]),
        ("seeds = [0]\n[datasets._tiny]\nbogus = 1\n[methods._test_logreg]\n", ["[datasets._tiny] bogus"]),
        ("seeds = [0]\n[datasets._tiny]\nn = 2\n[methods._test_logreg]\n", ["[datasets._tiny]"]),
        ("seeds = [0\n", ["invalid TOML"]),
    ]
    for i, (text, needles) in enumerate(cases):
        path = suite_file(tmp_path, text, f"s{i}.toml")
        rc = main(["run", str(path), "--out", str(tmp_path / f"o{i}"), "--no-progress"])
        assert_one_line_error(rc, capsys.readouterr().err, str(path), *needles)
    missing = suite_file(tmp_path, "seeds = [0]\n[datasets._missing]\n[methods._test_logreg]\n", "m.toml")
    rc = main(["run", str(missing), "--out", str(tmp_path / "om"), "--root", str(tmp_path / "data")])
    assert_one_line_error(rc, capsys.readouterr().err, "'_missing'", f"missing file {tmp_path}/data/_missing")
    good = suite_file(tmp_path, "seeds = [0]\n[datasets._tiny]\n[methods._test_logreg]\n", "g.toml")
    import torch

    if not torch.cuda.is_available():  # no silent fallback to CPU
        rc = main(["run", str(good), "--out", str(tmp_path / "og"), "--device", "cuda"])
        assert_one_line_error(rc, capsys.readouterr().err, "'cuda'", "no CUDA device")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"seeds = [0]\nname = '\xe9'\n")
    assert_one_line_error(main(["run", str(latin)]), capsys.readouterr().err, "latin.toml", "not UTF-8")


def test_run_resume_and_leaderboard(tmp_path, capsys, fakes, monkeypatch):
    suite = suite_file(tmp_path, """
        name = "clitest"
        seeds = [0, 1]
        device = "cpu"
        [datasets._tiny]
        n = 60
        [methods.lr]
        method = "_test_logreg"
        steps = 5
    """)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(suite), "--no-progress", "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 cells, 0 already done, ran 1 (1 ok, 0 failed)" in out
    results = tmp_path / "results" / "clitest"  # default --out
    assert (results / "records.jsonl").read_text().count("\n") == 1
    assert main(["run", str(suite), "--no-progress", "--seeds", "3"]) == 0
    assert "ran 0" in capsys.readouterr().out
    assert (results / "records.jsonl").read_text().count("\n") == 1  # resume adds no records
    assert main(["leaderboard", str(results), "--metrics", "cls/acc", "ood/*/msp/auroc"]) == 0
    md = capsys.readouterr().out
    assert "_tiny" in md and "cls/acc" in md and "ood/far/msp/auroc" in md and "ood/far/msp/fpr95" not in md
    assert main(["leaderboard", str(results), "--format", "csv", "--output", "lb/x.csv"]) == 0
    header = (tmp_path / "lb" / "x.csv").read_text().splitlines()[0].split(",")
    assert {"dataset", "method", "seed", "metric", "value"} <= set(header), header
    assert main(["leaderboard", str(results), "--format", "html", "--fragment"]) == 0
    assert "<html" not in capsys.readouterr().out


def test_list_shows_methods_datasets_and_suites(capsys, fakes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks" / "suites").mkdir(parents=True)
    (tmp_path / "benchmarks" / "suites" / "mine.toml").write_text(
        'seeds = [0, 1]\n[datasets._tiny]\n[methods._test_logreg]\nsteps = [1, 2]\n')
    (tmp_path / "benchmarks" / "suites" / "broken.toml").write_text("seeds = [\n")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "methods:" in out and "  _test_logreg — Logistic regression" in out
    assert "      steps=30, lr=0.5, members=1, fail='none', sleep=0.0, alloc_mb=0" in out
    assert "datasets:" in out and "  _tiny: n=90, classes=3, dim=4" in out and "  moons: n=600" in out
    assert "mine.toml: mine: 4 cells" in out and "broken.toml: (invalid:" in out


def test_compare_report_and_lazy_handlers_call_the_library(monkeypatch, capsys):
    """The handlers live in cli.py and call the library functions with the parsed arguments."""
    from ntkbayes.lazy import study
    from ntkbayes.report import comparison, html

    seen = {}
    monkeypatch.setattr(comparison, "compare_store",
                        lambda root, datasets, methods, out_dir: seen.setdefault("compare", (root, datasets, methods,
                                                                                             out_dir)) and {})
    monkeypatch.setattr(html, "build_report", lambda d, output=None: seen.setdefault("report", (d, output)))
    monkeypatch.setattr(study, "run_study", lambda cfg, out, device=None, progress=False: seen.setdefault(
        "lazy", (cfg.name, out, device)) and {"seconds": {"total": 0.0}, "rows": {}})
    assert main(["compare", "R", "--dataset", "moons", "--methods", "map", "laplace"]) == 0
    assert seen["compare"] == (Path("R"), ["moons"], ["map", "laplace"], Path("R"))
    assert main(["report", "R", "--output", "x.html"]) == 0 and seen["report"] == ("R", "x.html")
    assert main(["lazy", "--device", "cpu", "--out", "L"]) == 0 and seen["lazy"] == ("lazy", "L", "cpu")
    assert_one_line_error(main(["compare", "R", "--output", "x.md"]), capsys.readouterr().err, "expected a directory")


def test_nothing_imports_the_cli():
    """cli.py is the top of the import graph (the layer rules in pyproject.toml check the rest)."""
    code = ("import sys, ntkbayes, ntkbayes.harness.runner, ntkbayes.harness.executors, ntkbayes.lazy, "
            "ntkbayes.report.html, ntkbayes.report.comparison; assert 'ntkbayes.cli' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parser_defaults():
    args = build_parser().parse_args(["run"])
    assert args.suite == "benchmarks/suites/default.toml" and args.executor == "local" and args.out is None
    args = build_parser().parse_args(["run", "smoke", "--executor", "ray", "--address", "auto", "--download"])
    assert (args.executor, args.address, args.download) == ("ray", "auto", True)


@pytest.mark.slow
def test_smoke_suite_runs_and_resumes(tmp_path):
    """The repository's smoke suite end to end through the console script, then a rerun that adds nothing."""
    from ntkbayes import methods

    if "map" not in methods.available():
        pytest.skip("map method not written yet")
    script = shutil.which("ntkbayes", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("console script not installed")
    out = tmp_path / "smoke"
    cmd = [script, "run", str(REPO / "benchmarks/suites/smoke.toml"), "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr
    n = (out / "records.jsonl").read_text().count("\n")
    assert n >= 2 and '"status":"failed"' not in (out / "records.jsonl").read_text()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 0 and "ran 0" in p.stdout
    assert (out / "records.jsonl").read_text().count("\n") == n
