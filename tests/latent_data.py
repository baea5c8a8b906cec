"""Synthetic browser data for the latent-page tests: planted latents whose meaning, matches and logit effects are
known, written the way autointerp_layer writes them (no SAE or LM involved)."""

from __future__ import annotations

import numpy as np

from wsae_utils.autointerp import latent_pages as LP
from wsae_utils.autointerp.scoring import SparseActs, Windows

N_CTX, CTX, WINDOW, N_TOK, VOCAB, D, N_LAT = 24, 17, 8, 48, 160, 128, 20
SAES = {"paper/alpha0": 0.0, "cap/alpha1": 1.0, "random": None}
WORDS = [f" w{i}" for i in range(VOCAB)]


def token_str(t: int) -> str:
    """Token id -> text ('<' in token 3 checks escaping)."""
    return " <b>" if t == 3 else WORDS[t]


def tokens(seed: int = 0, n_ctx: int = N_CTX, ctx: int = CTX) -> np.ndarray:
    """Held-out token ids [n_ctx, ctx], BOS (id 0) at position 0."""
    t = np.random.default_rng(seed).integers(1, N_TOK, (n_ctx, ctx))  # ids seen in text
    t[:, 0] = 0
    return t


def planted_acts(tok: np.ndarray, seed: int, n_lat: int = N_LAT) -> SparseActs:
    """Latent j fires on token id j % 40 + 4 (a one-meaning latent), values in [0.5, 1.5]; BOS never."""
    rng = np.random.default_rng(seed)
    flat = tok.reshape(-1)
    dense = np.zeros((n_lat, flat.size), np.float32)
    for j in range(n_lat):
        hit = flat == j % 40 + 4
        dense[j, hit] = rng.uniform(0.5, 1.5, hit.sum())
    dense[:, ::tok.shape[1]] = 0
    return SparseActs.from_dense_rows(list(range(n_lat)), dense)


def browse(layer: int = 2, seed: int = 0, n_sample: int = 8, n_lat: int = N_LAT, n_ctx: int = N_CTX, ctx: int = CTX,
           window: int = WINDOW) -> LP.Browse:
    """One layer's browse data: cap/alpha1's decoder is paper/alpha0's with rows permuted (exact matches), random's
    is random (128 dimensions: chance cosines stay far below a match); w_u is the identity on the first D tokens, so
    decoder row e_i raises token i."""
    tok = tokens(seed, n_ctx, ctx)
    rng = np.random.default_rng(seed + 1)
    base = rng.normal(size=(n_lat, D)).astype(np.float32)
    perm = rng.permutation(n_lat)
    dec = {"paper/alpha0": base, "cap/alpha1": base[perm], "random": rng.normal(size=(n_lat, D)).astype(np.float32)}
    full = {n: planted_acts(tok, seed + i, n_lat) for i, n in enumerate(SAES)}
    sampled = {n: np.sort(rng.choice(n_lat, n_sample, replace=False)) for n in SAES}
    saes = {n: {"alpha": a, "variant": n.split("/")[0] if a is not None else "random", "untrained": False,
                "main": a is not None, "n_latents": n_lat} for n, a in SAES.items()}
    w_u = np.zeros((VOCAB, D), np.float32)
    w_u[:D] = np.eye(D)
    return LP.build_browse(full, sampled, dec, saes, Windows(n_ctx, ctx, window), "paper/alpha0",
                           ["cap/alpha1", "random"], w_u, 5, {"fingerprint": "x", "layer": layer,
                                                              "logit_note": "identity"})
