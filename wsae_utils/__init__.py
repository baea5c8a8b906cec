"""wsae_utils: SAEs and weighted SAEs (arXiv 2506.15963), their training, metrics and experiment helpers."""

__version__ = "0.1.0"
