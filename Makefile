# oodbench — common entry points. PYTHON may point at a venv's interpreter.
PYTHON ?= python

.PHONY: setup run test lint tables reproduce bench

setup:            ## install oodbench and its dev tools (torch from PyPI if missing)
	$(PYTHON) -m pip install -e ".[dev]"

run: setup        ## the main job: Energy on the ODIN DenseNet CIFAR-10 checkpoint vs every OOD set
	$(PYTHON) run.py detector=energy id=cifar10

test: setup       ## the whole suite on CPU (real data subsets from ../shared; < 10 min)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check oodbench tests scripts run.py

tables:           ## rebuild every paper page (oodbench/conf/paper/*.yaml) from stored rows (no model runs; RESULTS=dir)
	$(PYTHON) -m oodbench tables $(if $(RESULTS),--results $(RESULTS))

PAPERS ?= $(basename $(notdir $(wildcard oodbench/conf/paper/*.yaml)))

reproduce:        ## run every paper spec's cells (resumable, shared cache; cells that cannot run here say why)
	for p in $(PAPERS); do $(PYTHON) run.py +paper=$$p || exit 1; done

bench:            ## results/bench.md + bench.csv: the product path vs pytorch-ood, the table, fixed costs, the forward (~2 h)
	$(PYTHON) scripts/bench.py
