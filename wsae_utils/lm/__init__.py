"""Language-model experiment: model registry, embedded LM, corpus, activation cache, layer SAEs, fidelity."""
