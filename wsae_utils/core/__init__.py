"""The SAE core every experiment calls: model, top-k kernels, trainer, metrics, statistics, export."""
