"""The ``ntkbayes`` command: ``run | tune | list | leaderboard | compare | report | render | lazy`` (design.md layout).

``ntkbayes run [SUITE]`` runs a suite file (default ``benchmarks/suites/default.toml``; a bare name such as
``smoke`` means ``benchmarks/suites/smoke.toml``) into ``results/<suite name>`` and resumes where it stopped;
``--workers N`` runs N runners on the store together (:mod:`ntkbayes.harness.workers`; Ctrl-C stops all of them),
``--executor ray [--address ADDR]`` runs the cells on a Ray cluster (:mod:`ntkbayes.harness.executors`),
``--dry-run`` a tiny CPU version of the suite on stand-in data (:func:`ntkbayes.harness.runner.dry_run_suite`);
it applies the suite's selection file ``<suite>.selected.toml`` when one exists (``--selection FILE``,
``--no-selection``). ``ntkbayes tune [SUITE]`` runs the tuning trials on validation data into
``results/<suite name>/tuning`` and writes that selection file (:mod:`ntkbayes.harness.tune`, docs/tuning.md).
``ntkbayes list`` shows methods with their parameters and defaults, datasets with their options, and suites;
``ntkbayes leaderboard DIR`` renders a results directory; ``compare`` and ``report`` write the comparisons and the
HTML page (``ntkbayes.report.comparison.compare_store``, ``ntkbayes.report.html.build_report``); ``lazy`` runs the
lazy-regime study (:mod:`ntkbayes.lazy`). Every command handler lives here, and no module imports this one.

User errors — a bad suite file, a missing dataset file, a bad option or command line — print one line
``ntkbayes: error: <message>`` on stderr and exit with status 2, without a traceback. An unreadable line of a
store's ``records.jsonl`` is reported once per process as ``ntkbayes: warning: FILE line N: ...; line skipped``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ntkbayes.errors import UserError

#: Suite run when none is named (what ``make run`` runs).
DEFAULT_SUITE = "benchmarks/suites/default.toml"

#: Suite of ``ntkbayes lazy`` when none is named.
DEFAULT_LAZY_SUITE = "benchmarks/suites/lazy.toml"

#: Where suites are looked up by bare name and listed, relative to the working directory (then to the checkout).
SUITES_DIR = "benchmarks/suites"

#: Exit status of user errors (as argparse uses for usage errors).
EXIT_USER_ERROR = 2

#: Store warnings already printed by this process (each is printed once).
_STORE_WARNINGS_SHOWN: set[str] = set()


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises a UserError instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sub = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise UserError(f"{sub}{message}")


def _checkout_root() -> Path:
    return Path(__file__).resolve().parents[1]


def resolve_suite_path(spec: str) -> Path:
    """A suite file path: as given, else ``benchmarks/suites/<spec>.toml``, here or in the ntkbayes checkout."""
    p = Path(spec)
    candidates = [p]
    if p.suffix != ".toml" and len(p.parts) == 1:
        candidates.append(Path(SUITES_DIR) / f"{spec}.toml")
    if not p.is_absolute():
        candidates += [_checkout_root() / c for c in list(candidates)]
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(f"suite file not found: {spec} (looked in {', '.join(str(c) for c in candidates)})")


def _suites_dirs() -> list[Path]:
    dirs = [Path(SUITES_DIR), _checkout_root() / SUITES_DIR]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


# -- commands ----------------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from ntkbayes.harness.config import load_suite
    from ntkbayes.harness.runner import run_suite

    _check_runners(args)
    suite = load_suite(resolve_suite_path(args.suite), unknown_methods="fail" if args.dry_run else "error")
    if args.selection is not None and args.no_selection:
        raise UserError("run: --selection and --no-selection exclude each other")
    if args.selection is not None and not Path(args.selection).is_file():
        raise UserError(f"--selection: file not found: {args.selection}")
    selection = False if args.no_selection else args.selection
    name = f"{suite.name}-dry-run" if args.dry_run else suite.name
    out = args.out if args.out is not None else str(Path("results") / name)
    summary, status = _with_workers(args, out, lambda: run_suite(
        suite, out, device=args.device, seeds=args.seeds, executor=args.executor, progress=not args.no_progress,
        download=args.download, data_root=args.root, address=args.address, retry_failed=not args.no_retry_failed,
        threads=args.threads, dry_run=args.dry_run, selection=selection))
    print(summary)
    for label, error in summary.failures:
        print(f"  failed: {label}: {error}", file=sys.stderr)
    return status


def _check_runners(args: argparse.Namespace) -> None:
    """``--address`` and ``--workers`` of ``run`` and ``tune``: Ray needs no extra runners, local ones need ≥ 1."""
    if args.address is not None and args.executor != "ray":
        raise UserError(f"{args.command}: --address needs --executor ray")
    if args.workers < 1 or (args.workers > 1 and args.executor != "local"):
        raise UserError(f"{args.command}: --workers expects an integer ≥ 1 with the local executor, got {args.workers}")


def _with_workers(args: argparse.Namespace, out: str, work: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``work()`` here while ``args.workers - 1`` extra runners of the same command (:func:`_worker_argv`)
    share the suite; returns ``work``'s result and the worst exit status of the extra runners (0 when none).
    SIGTERM counts as an interrupt; on an interrupt or error the runners are stopped, else awaited."""
    from ntkbayes.harness.workers import sigterm_as_interrupt, start_workers, stop_workers

    workers, interrupted = [], True
    with sigterm_as_interrupt():
        try:
            if args.workers > 1:
                workers = start_workers(_worker_argv(args, out), args.workers - 1)
            result = work()
            interrupted = False
        finally:
            status = stop_workers(workers, interrupted=interrupted)
    return result, status


def _worker_argv(args: argparse.Namespace, out: str) -> list[str]:
    """The ``ntkbayes run`` command line of one extra worker: the same run, one runner, no progress bar."""
    argv = [args.command, args.suite, "--out", out, "--workers", "1", "--no-progress", "--executor", args.executor]
    for flag, value in (("--device", args.device), ("--root", args.root), ("--threads", args.threads),
                        ("--selection", getattr(args, "selection", None)),
                        ("--max-trials", getattr(args, "max_trials", None))):
        if value is not None:
            argv += [flag, str(value)]
    if args.seeds is not None:
        argv += ["--seeds", *map(str, args.seeds)]
    argv += [flag for flag, on in (("--dry-run", getattr(args, "dry_run", False)), ("--download", args.download),
                                   ("--no-retry-failed", getattr(args, "no_retry_failed", False)),
                                   ("--no-selection", getattr(args, "no_selection", False)),
                                   ("--trials-only", args.command == "tune")) if on]
    return argv


def cmd_tune(args: argparse.Namespace) -> int:
    """Runs the tuning trials (``--workers`` runners share them) and writes the selection file."""
    from ntkbayes.harness.config import load_suite
    from ntkbayes.harness.tune import TUNING_DIR, tune_suite

    _check_runners(args)
    suite = load_suite(resolve_suite_path(args.suite))
    out = args.out if args.out is not None else str(Path("results") / suite.name / TUNING_DIR)
    common = dict(objective=args.objective, max_trials=args.max_trials, seeds=args.seeds, download=args.download,
                  data_root=args.root, threads=args.threads, selection_out=args.selection_out)
    shared = args.workers > 1
    summary, status = _with_workers(args, out, lambda: tune_suite(
        suite, out, device=args.device, executor=args.executor, address=args.address, progress=not args.no_progress,
        write=not args.trials_only and not shared, **common))
    if shared and not args.trials_only and status == 0:  # every runner is done: select from the store
        run = summary.run
        summary = tune_suite(suite, out, run_trials=False, **common)
        summary.run = run
    print(summary)
    for label, error in summary.run.failures:
        print(f"  failed: {label}: {error}", file=sys.stderr)
    return status


def _fmt_default(v) -> str:
    import inspect

    if v is inspect.Parameter.empty:
        return "(required)"
    return repr(getattr(v, "value", v))


def cmd_list(args: argparse.Namespace) -> int:
    from ntkbayes import data, methods
    from ntkbayes.harness.config import load_suite

    print("methods:")
    for name in methods.available():
        cls = methods.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"  {name}" + (f" — {doc[0]}" if doc else ""))
        params = ", ".join(f"{k}={_fmt_default(v)}" for k, v in cls.param_defaults().items())
        print(textwrap.fill(params or "(no parameters)", width=110, initial_indent=" " * 6,
                            subsequent_indent=" " * 6, break_on_hyphens=False))
    print("datasets:")
    for name in data.available():
        opts = data.describe(name)
        text = f"{name}: " + (", ".join(f"{k}={_fmt_default(v)}" for k, v in opts.items()) or "(no options)")
        print(textwrap.fill(text, width=110, initial_indent="  ", subsequent_indent=" " * 6,
                            break_on_hyphens=False))
    print("suites:")
    found = False
    for d in _suites_dirs():
        for path in sorted(d.glob("*.toml")):
            found = True
            try:
                suite = load_suite(path)
                info = f"{suite.name}: {len(suite.cells())} cells" + (f" — {suite.description}"
                                                                      if suite.description else "")
            except UserError as e:
                info = f"(invalid: {e})"
                try:  # not a benchmark suite: perhaps a lazy-regime study file (`ntkbayes lazy`)
                    from ntkbayes.lazy.config import load_config

                    cfg = load_config(path)
                    info = f"{cfg.name}: lazy-regime study, run with `ntkbayes lazy` — {cfg.description}"
                except UserError:
                    pass
            print(f"  {path}: {info}")
    if not found:
        print(f"  (none found in {SUITES_DIR})")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ntkbayes.report.export import leaderboard, write_csv

    if args.format == "csv" and args.output:  # the long CSV plus its _summary and _cells companions
        for path in write_csv(args.dir, args.output, metrics=args.metrics, datasets=args.datasets):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    text = leaderboard(args.dir, args.format, metrics=args.metrics, datasets=args.datasets,
                       standalone=not args.fragment, layout=args.layout, textwidth=args.textwidth,
                       table_env=args.table_env)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Writes OUTDIR/compare/ (tables, summary.md) and OUTDIR/figures/ (heatmaps); OUTDIR defaults to DIR."""
    from ntkbayes.report.comparison import compare_store

    root = Path(args.dir)
    out = Path(args.output or root)
    if out.suffix:
        raise UserError(f"--output {out}: expected a directory (compare writes several tables and figures)")
    results = compare_store(root, args.dataset, args.methods, out_dir=out)
    n = sum(len({k.split("/", 1)[0] for k in m}) for m in results.values())
    print(f"compared {len(results)} dataset(s), {n} split(s): tables in {out / 'compare'}, "
          f"summary {out / 'compare' / 'summary.md'}, heatmaps in {out / 'figures'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Writes the static report page and prints its path."""
    from ntkbayes.report.html import build_report

    print(f"report: {build_report(args.dir, args.output)}")
    return 0


#: The leaderboards ``ntkbayes render`` writes into a results directory: file name → ``leaderboard`` arguments (the
#: CSV files come from ``write_csv``; ``leaderboard_shift.md`` when ``--shift-datasets`` names datasets).
RENDERED_LEADERBOARDS = {"leaderboard.md": {"fmt": "md"}, "leaderboard.tex": {"fmt": "latex"},
                         "leaderboard_by_metric.tex": {"fmt": "latex", "layout": "datasets"},
                         "leaderboard.html": {"fmt": "html"}}


def cmd_render(args: argparse.Namespace) -> int:
    """Everything a results directory shows, in one process (the store read once, one warning per bad line):
    leaderboards (Markdown, CSV with its companions, LaTeX by dataset and by metric, HTML, the shift table),
    the comparisons and the report page. ``reference.jsonl`` is first recomputed, where records are newer than it,
    for the cells whose predictions exist (its rows say which reference each dataset has); without predictions its
    rows are used as they are."""
    from ntkbayes.harness.reference import REFERENCE_FILE, compute_references
    from ntkbayes.report.comparison import compare_store
    from ntkbayes.report.export import leaderboard, write_csv
    from ntkbayes.report.html import build_report

    root = Path(args.dir)
    rows, records = root / REFERENCE_FILE, root / "records.jsonl"
    if rows.is_file() and records.is_file() and rows.stat().st_mtime < records.stat().st_mtime:
        compute_references(root)  # records newer than the rows (ntkbayes run computes them after its cells)
    written = write_csv(root, root / "leaderboard.csv")
    tables = {name: leaderboard(root, **kw) for name, kw in RENDERED_LEADERBOARDS.items()}
    if args.shift_datasets:
        tables["leaderboard_shift.md"] = leaderboard(root, "md", metrics=["shift/*"], datasets=args.shift_datasets)
    for name, text in tables.items():
        (root / name).write_text(text, encoding="utf-8")
        written.append(root / name)
    results = compare_store(root)
    page = build_report(root)
    print(f"rendered {root}: {', '.join(p.name for p in written)}; compare/ ({len(results)} datasets), figures/, "
          f"{page.name}")
    return 0


def cmd_lazy(args: argparse.Namespace) -> int:
    """Runs the lazy-regime study into ``--out`` (default ``results/<study name>``)."""
    import torch

    from ntkbayes.lazy.config import load_config
    from ntkbayes.lazy.study import run_study

    cfg = load_config(resolve_suite_path(args.suite))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = args.out or str(Path("results") / cfg.name)
    summary = run_study(cfg, out, device=args.device, progress=True)
    print(f"lazy study {cfg.name}: {summary['seconds']['total'] / 60:.1f} min, rows {summary['rows']}; "
          f"wrote {out}/README.md, table.md, *.csv, figures/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = _ArgumentParser(prog="ntkbayes", description="Benchmark Bayesian uncertainty in classification.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    sub.required = True

    r = sub.add_parser("run", help="run a suite into a results directory (resumes)")
    r.add_argument("suite", nargs="?", default=DEFAULT_SUITE, help=f"suite file or name (default {DEFAULT_SUITE})")
    r.add_argument("--out", help="results directory (default results/<suite name>)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the suite's device")
    r.add_argument("--seeds", nargs="+", type=int, help="override the suite's seeds")
    r.add_argument("--executor", choices=["local", "ray"], default="local", help="where cells run")
    r.add_argument("--address", help="Ray cluster address for --executor ray (e.g. auto; default: start a local one)")
    r.add_argument("--dry-run", action="store_true",
                   help="tiny subsets, few members/epochs, narrow networks, first seed, CPU "
                   "(into results/<suite>-dry-run)")
    r.add_argument("--download", action="store_true", help="let dataset loaders download missing files")
    r.add_argument("--root", help="data root (default: the suite's data_root, else datasets/)")
    r.add_argument("--threads", type=int, help="torch CPU threads per cell (default: the suite's, else torch's)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-retry-failed", action="store_true", help="leave cells whose last record failed")
    r.add_argument("--workers", type=int, default=1,
                   help="local runners sharing the cells (this process and N-1 children; Ctrl-C stops all)")
    r.add_argument("--selection", help="tuned parameters to apply (default: <suite>.selected.toml when present)")
    r.add_argument("--no-selection", action="store_true", help="ignore the suite's selection file")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("tune", help="select hyperparameters on validation data (writes <suite>.selected.toml)")
    t.add_argument("suite", nargs="?", default=DEFAULT_SUITE, help=f"suite file or name (default {DEFAULT_SUITE})")
    t.add_argument("--out", help="tuning store (default results/<suite name>/tuning)")
    t.add_argument("--objective", default="val/nll", help="validation metric to optimize: val/nll (default), val/acc")
    t.add_argument("--max-trials", type=int, default=8, help="trials per dataset × method row × seed (default 8)")
    t.add_argument("--selection-out", help="selection file to write (default: beside the suite)")
    t.add_argument("--trials-only", action="store_true", help="run the trials, write no selection")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the suite's device")
    t.add_argument("--seeds", nargs="+", type=int, help="override the suite's seeds")
    t.add_argument("--executor", choices=["local", "ray"], default="local", help="where trials run")
    t.add_argument("--address", help="Ray cluster address for --executor ray")
    t.add_argument("--download", action="store_true", help="let dataset loaders download missing files")
    t.add_argument("--root", help="data root (default: the suite's data_root, else datasets/)")
    t.add_argument("--threads", type=int, help="torch CPU threads per cell")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--workers", type=int, default=1, help="local runners sharing the trials")
    t.set_defaults(func=cmd_tune)

    ls = sub.add_parser("list", help="methods and parameters, datasets and options, suites")
    ls.set_defaults(func=cmd_list)

    lb = sub.add_parser("leaderboard", help="per-dataset tables of a results directory")
    lb.add_argument("dir", help="results directory")
    lb.add_argument("--format", choices=["md", "csv", "latex", "html"], default="md")
    lb.add_argument("--metrics", nargs="+", help="metric keys or patterns (e.g. 'ood/*/entropy/auroc')")
    lb.add_argument("--datasets", nargs="+", help="only these datasets")
    lb.add_argument("--output", help="write to this file instead of stdout")
    lb.add_argument("--fragment", action="store_true", help="html: only the tables, not a page")
    lb.add_argument("--layout", choices=["groups", "datasets"], default="groups",
                    help="tables per dataset, metrics in groups (groups) or one per metric, methods × datasets")
    lb.add_argument("--table-env", choices=["table", "table*"], default="table", help="LaTeX float environment")
    lb.add_argument("--textwidth", type=float,
                    help="width the tables must fit: LaTeX in pt (default 345), HTML in px (default 1400)")
    lb.set_defaults(func=cmd_leaderboard)

    c = sub.add_parser("compare", help="compare methods' predictive distributions on the same points")
    c.add_argument("dir", help="results directory")
    c.add_argument("--dataset", nargs="+", help="only these datasets")
    c.add_argument("--methods", nargs="+", help="only these method labels")
    c.add_argument("--output", help="output directory for tables and figures (default DIR)")
    c.set_defaults(func=cmd_compare)

    rd = sub.add_parser("render", help="leaderboards, comparisons and report of a results directory, in one go")
    rd.add_argument("dir", help="results directory")
    rd.add_argument("--shift-datasets", nargs="+", help="also write leaderboard_shift.md for these datasets")
    rd.set_defaults(func=cmd_render)

    rp = sub.add_parser("report", help="static HTML report of a results directory")
    rp.add_argument("dir", help="results directory")
    rp.add_argument("--output", help="output file (default DIR/report.html)")
    rp.set_defaults(func=cmd_report)

    lz = sub.add_parser("lazy", help="lazy-regime diagnostics suite")
    lz.add_argument("suite", nargs="?", default=DEFAULT_LAZY_SUITE, help=f"suite file (default {DEFAULT_LAZY_SUITE})")
    lz.add_argument("--out", help="results directory")
    lz.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device")
    lz.set_defaults(func=cmd_lazy)
    return p


def _one_line(e: BaseException) -> str:
    msg = str(e)
    if isinstance(e, FileNotFoundError) and e.filename and not msg.startswith(str(e.filename)):
        msg = f"{e.filename}: {e.strerror or msg}" if e.strerror else msg
    return " ".join(msg.split()) or type(e).__name__


@contextlib.contextmanager
def _plain_store_warnings():
    """Within the block, a :class:`~ntkbayes.harness.store.StoreWarning` (an unreadable line of records.jsonl)
    prints once per process as one plain line ``ntkbayes: warning: FILE line N: problem; line skipped``, however
    many times the file is read; other warnings show as usual."""
    from ntkbayes.harness.store import StoreWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", StoreWarning)
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, StoreWarning):
                return show(message, category, filename, lineno, file, line)
            text = " ".join(str(message).split())
            if text not in _STORE_WARNINGS_SHOWN:
                _STORE_WARNINGS_SHOWN.add(text)
                print(f"ntkbayes: warning: {text}", file=sys.stderr)

        warnings.showwarning = showwarning
        yield


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ntkbayes`` console script; returns the exit status."""
    # Dependencies (laplace-torch's asdl, among others) call torch.jit.script, deprecated in torch 2.14: a warning
    # about their code, printed at the first fit of every run, that a user can do nothing about.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    try:
        args = build_parser().parse_args(argv)
        with _plain_store_warnings():
            return int(args.func(args) or 0)
    except (UserError, FileNotFoundError) as e:
        print(f"ntkbayes: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ntkbayes: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
