"""Toy model of the paper (ground truth known): data, stacked SAE grids, evaluation, claim checks."""
