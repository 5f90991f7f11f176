# `make run`  : set up .venv and run the default suite into results/default (leaderboard, comparisons, report)
# `make test` : set up .venv, lint, run the tests
# `make bench`: performance benchmarks into results/perf
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-quick lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ray]'
	@touch $(STAMP)

# Two runners share each suite's cells through the store's claims (one torch thread each on a 2-core machine).
run: $(STAMP)
	$(VENV)/bin/ntkbayes run benchmarks/suites/default.toml --out results/default --no-progress & pid=$$!; \
	  $(VENV)/bin/ntkbayes run benchmarks/suites/default.toml --out results/default || exit 1; \
	  wait $$pid
	$(VENV)/bin/ntkbayes leaderboard results/default --format md --output results/default/leaderboard.md
	$(VENV)/bin/ntkbayes leaderboard results/default --format csv --output results/default/leaderboard.csv
	$(VENV)/bin/ntkbayes leaderboard results/default --format latex --output results/default/leaderboard.tex
	$(VENV)/bin/ntkbayes leaderboard results/default --format html --output results/default/leaderboard.html
	$(VENV)/bin/ntkbayes leaderboard results/default --format md --metrics 'shift/*' --datasets digits mnist1d \
	  --output results/default/leaderboard_shift.md
	$(VENV)/bin/ntkbayes compare results/default
	$(VENV)/bin/ntkbayes report results/default

lint: $(STAMP)
	$(VENV)/bin/ruff check ntkbayes tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/perf/run_all.py --out results/perf

# Smaller sizes of every benchmark: a smoke check, into the git-ignored results/perf_quick. The committed
# results/perf/ come from `make bench` (about 6 minutes on this 2-core CPU).
bench-quick: $(STAMP)
	$(PY) benchmarks/perf/run_all.py --out results/perf_quick --quick

clean-venv:
	rm -rf $(VENV)
