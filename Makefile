# `make run`      : set up .venv, run the cells of the default suite that results/default lacks, then render the
#                  leaderboards, comparisons and report. The records are committed, the per-cell predictions are not
#                  (several MB a cell): a fresh clone reruns the cells to recreate them; once they exist, `make run`
#                  only renders. Ctrl-C stops every runner; the next `make run` resumes.
# `make tune`     : select each method's hyperparameters on validation data (`ntkbayes tune`, docs/tuning.md):
#                  trials into $(OUT)/tuning (resumable), the selection into <suite>.selected.toml beside the suite,
#                  which `make run` then applies. Not part of `make run`; commit the selection file after review.
# `make reproduce`: rerun every cell of the default suite from scratch into results/default, then render.
# `make test`     : set up .venv, lint, check the layer rules, run the tests (the numerical ones twice: AVX-512 and
#                  AVX2 kernels of torch)
# `make bench`    : performance benchmarks into results/perf
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run render tune posterior reproduce test bench bench-quick lint clean-venv

SUITE ?= benchmarks/suites/default.toml
OUT ?= results/default
#: Datasets of the suite with shifted-test metrics (a table of their own; empty: none).
SHIFT_DATASETS ?= digits mnist1d
NTKBAYES := $(VENV)/bin/ntkbayes
#: Test directories whose tolerances depend on floating-point kernels: run again with the AVX2 kernels of torch's
#: ATen and of MKL/OpenBLAS (each picks its code path separately).
NUMERICAL_TESTS := tests/ntk tests/metrics tests/methods tests/data

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ray]'
	@touch $(STAMP)

# Two runners (this process and one worker it starts and stops; one torch thread each on a 2-core machine) share
# the cells through the store's claims.
run: $(STAMP)
	$(NTKBAYES) run $(SUITE) --out $(OUT) --workers 2
	$(MAKE) --no-print-directory render

# Two runners share the trials as in `make run`; the selection is written once both are done.
tune: $(STAMP)
	$(NTKBAYES) tune $(SUITE) --out $(OUT)/tuning --workers 2

# The posterior study (benchmarks/suites/posterior.toml → results/posterior, its README): NUTS references and every
# method's distance to them; about 15 minutes on 2 cores.
posterior: $(STAMP)
	$(NTKBAYES) run benchmarks/suites/posterior.toml --out results/posterior --workers 2
	$(NTKBAYES) render results/posterior

render: $(STAMP)
	$(NTKBAYES) render $(OUT) $(if $(SHIFT_DATASETS),--shift-datasets $(SHIFT_DATASETS))

reproduce: $(STAMP)
	rm -rf $(OUT)/records.jsonl $(OUT)/records.jsonl.lock $(OUT)/predictions $(OUT)/claims
	$(MAKE) --no-print-directory run

lint: $(STAMP)
	$(VENV)/bin/ruff check ntkbayes tests benchmarks

test: $(STAMP) lint
	$(VENV)/bin/lint-imports
	$(PY) -m pytest
	ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell $(PY) -m pytest $(NUMERICAL_TESTS)

bench: $(STAMP)
	$(PY) benchmarks/perf/run_all.py --out results/perf

# Smaller sizes of every benchmark: a smoke check, into the git-ignored results/perf_quick. The committed
# results/perf/ come from `make bench` (about 6 minutes on this 2-core CPU).
bench-quick: $(STAMP)
	$(PY) benchmarks/perf/run_all.py --out results/perf_quick --quick

clean-venv:
	rm -rf $(VENV)
