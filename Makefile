# `make demo` and `make test` do all set-up on a fresh machine: create .venv if missing, install, run.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Tests and the demo use the shared CIFAR-10 archive when it is there; the decode cache stays in the repo.
SHARED_CIFAR := $(abspath ../shared/data/cifar10-jpeg.tar.gz)
ifneq ($(wildcard $(SHARED_CIFAR)),)
export PFLNAS_DATA ?= $(SHARED_CIFAR)
endif
export PFLNAS_CACHE ?= $(CURDIR)/.cache/pflnas

.PHONY: install test lint demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[dev,bench,postgres]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check pflnas tests benchmarks search_spaces
	$(PY) -m ruff format --check pflnas tests benchmarks search_spaces

test: install lint
	$(PY) -m pytest -q

demo: install
	$(PY) -m pflnas search --space cell_v1 --preset quick --out runs/demo-search --overwrite
	$(PY) -m pflnas arch show runs/demo-search/found.json
	$(PY) -m pflnas profile --arch runs/demo-search/found.json --batch-size 8 --warmup 2 --repeats 5
	$(PY) -m pflnas profile --arch experiments/archs/r50.json experiments/archs/r50_max.json \
		experiments/archs/r50_hybrid.json --dataset imagenet --batch-size 4 --warmup 2 --repeats 5
	$(PY) -m pflnas retrain --arch runs/demo-search/found.json --recipe quick --out runs/demo-retrain --overwrite
	$(PY) -m pflnas report runs/demo-search --out runs/demo-report
	@echo "demo: found architecture at runs/demo-search/found.json (per-epoch records in runs/demo-search/metrics.jsonl);"
	@echo "      retrained network in runs/demo-retrain (metrics.jsonl, last.pt, best.pt, result.json);"
	@echo "      report in runs/demo-report/report.html (and report.md)"

bench: install
	$(PY) benchmarks/search_step.py
	$(PY) benchmarks/retrain_throughput.py
	PFLNAS="$(PY) -m pflnas" bash benchmarks/paper_models.sh

clean:
	rm -rf $(VENV) .cache runs
