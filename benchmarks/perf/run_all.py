"""Run every performance benchmark in benchmarks/perf and write results/perf/ (JSON figures + summary.md).

Each benchmark module exposes ``run(quick: bool = False) -> dict`` whose result has a ``"summary"`` list of rows
(dicts with at least ``figure``, ``value``, ``unit``) for the Markdown table, plus any detail it wants in JSON.

    python benchmarks/perf/run_all.py --out results/perf [--quick] [--only ntk solve]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def environment() -> dict:
    import numpy
    import scipy

    import ntkbayes

    cpu = f"cpu ({platform.processor() or platform.machine()})"
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu
    return {
        "device": dev,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "ntkbayes": ntkbayes.__version__,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in {"run_all"} and not p.stem.startswith("_"))


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"ntkbayes_perf_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/perf")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run of the benchmarks)")
    ap.add_argument("--only", nargs="*", help="benchmark names (default: all)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    rows = []
    for name in args.only or discover():
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = load(name).run(quick=args.quick)
            status = "ok"
        except Exception as e:  # a failing benchmark is reported, the others still run
            result, status = {"error": f"{type(e).__name__}: {e}", "summary": []}, "failed"
            print(f"   failed: {result['error']}", file=sys.stderr)
        result = {"benchmark": name, "status": status, "seconds": time.perf_counter() - t0, "environment": env,
                  **result}
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        for row in result.get("summary", []):
            rows.append({"benchmark": name, **row})
        if status != "ok":
            rows.append({"benchmark": name, "figure": "status", "value": result["error"], "unit": ""})
    lines = [
        "# Performance figures",
        "",
        f"Device: {env['device']}, {env['cpu_threads']} threads; torch {env['torch']}, python {env['python']}; "
        f"{env['timestamp']}. Produced by `{'make bench-quick' if args.quick else 'make bench'}`.",
        "",
        "| benchmark | figure | value | unit | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["value"]
        v = f"{v:.4g}" if isinstance(v, float) else str(v)
        lines.append(f"| {r['benchmark']} | {r['figure']} | {v} | {r.get('unit', '')} | {r.get('note', '')} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
