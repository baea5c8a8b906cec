"""Latent browser: what the auto-interp layer job stores for it, and the static HTML pages built from that.

The layer job (notebooks/autointerp_layer.py) already encodes the held-out windows with every SAE of its layer
and a random-weight SAE. From that one pass it stores, next to the Table-1 records, a *browse* file per layer:
the complete held-out activations of the sampled latents and of their best decoder-cosine matches in the other
SAEs, and each such latent's decoder direction through the unembedding (the tokens whose logits it raises and
lowers most). Pages are then built from stored data only (notebooks/autointerp_latents.py): no SAE or LM pass.

Pages are self-contained HTML (inline CSS and JS, data as embedded JSON, no network), rendered with Jinja2 from
`wsae_utils/templates/latents/`: one browser page per SAE, one side-by-side page per layer, an index, and a
blind rating page whose cards hide the SAE (the key that unblinds them is written to a separate JSON file).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from ..paths import PACKAGE_DIR, atomic_write_text
from ..run.results import _jsonable
from .scoring import SparseActs, Windows

TEMPLATE_DIR = PACKAGE_DIR / "templates" / "latents"
RATING_SCHEMA_ID = "wsae-ratings/1"
RATINGS = ("one", "several", "none")
"""The blind rater's answer: the latent means one thing, several things, or nothing recognisable."""


# ---------------------------------------------------------------------------------------------------------
# decoder directions: through the unembedding, and matched across SAEs


def unembedding(model_name: str, cache_dir: str | Path, d_in: int) -> tuple[np.ndarray | None, str]:
    """The LM's unembedding [vocab, d] with its final norm's gain folded in, or (None, why) when it cannot apply.

    A decoder direction d raises token t's logit by (W_U · (g ⊙ d))_t before the final norm's scaling, the usual
    "logit lens" of a latent (SAEDashboard's logit tables). The embedded GGUF model is read from its converted
    safetensors (two tensors, no model build); other registry models are loaded once.
    """
    from ..lm.model import _ensure_converted, load_lm
    from ..lm.registry import model_facts

    facts = model_facts(model_name)
    if int(facts["d_model"]) != int(d_in):
        return None, f"{model_name} has d_model {facts['d_model']}, the SAEs read {d_in}-dimensional activations"
    if facts["kind"] == "gguf":
        from safetensors import safe_open

        folder = _ensure_converted(model_name, Path(cache_dir))
        with safe_open(str(folder / "model.safetensors"), "np") as f:
            keys = set(f.keys())
            w_u = f.get_tensor("lm_head.weight" if "lm_head.weight" in keys else "model.embed_tokens.weight")
            gain = f.get_tensor("model.norm.weight") if "model.norm.weight" in keys else np.ones(w_u.shape[1])
        note = f"{model_name}: unembedding × final RMSNorm gain (converted {folder.name} weights)"
    else:
        lm = load_lm(model_name, cache_dir)
        w_u = lm.model.get_output_embeddings().weight.detach().float().numpy()
        base = lm.model.base_model
        norm = getattr(base, "norm", None) or getattr(base, "final_layer_norm", None)
        gain = norm.weight.detach().float().numpy() if norm is not None else np.ones(w_u.shape[1])
        note = f"{model_name}: output embedding × final norm gain ({lm.note})"
    return (np.asarray(w_u, np.float32) * np.asarray(gain, np.float32)[None, :]), note


def logit_effects(dec: np.ndarray, w_u: np.ndarray, n: int, chunk: int = 256) -> dict[str, np.ndarray]:
    """Per decoder row [m, d]: the n tokens whose logits it raises most and lowers most (ids, values) [m, n]."""
    m = dec.shape[0]
    out = {k: np.zeros((m, n), np.int64 if k.endswith("ids") else np.float32)
           for k in ("up_ids", "up_vals", "down_ids", "down_vals")}
    for a in range(0, m, chunk):
        eff = dec[a:a + chunk].astype(np.float32) @ w_u.T  # [c, vocab]
        up = np.argpartition(-eff, n - 1, axis=1)[:, :n]
        down = np.argpartition(eff, n - 1, axis=1)[:, :n]
        for ids, sign, key in ((up, -1.0, "up"), (down, 1.0, "down")):
            vals = np.take_along_axis(eff, ids, 1)
            order = np.argsort(sign * vals, axis=1, kind="stable")
            out[f"{key}_ids"][a:a + chunk] = np.take_along_axis(ids, order, 1)
            out[f"{key}_vals"][a:a + chunk] = np.take_along_axis(vals, order, 1)
    return out


def best_matches(anchor: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor decoder row, the row of `other` with the largest cosine: (indices, cosines)."""
    a = anchor / np.maximum(np.linalg.norm(anchor, axis=1, keepdims=True), 1e-12)
    b = other / np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-12)
    cos = a.astype(np.float32) @ b.astype(np.float32).T
    idx = cos.argmax(1)
    return idx.astype(np.int64), cos[np.arange(len(idx)), idx].astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# what the layer job stores for the browser


@dataclass
class Browse:
    """One layer's browser data: per SAE, the complete held-out activations of its browse latents (the Table-1
    sample plus decoder matches of the anchor's sample), their logit effects, and the matches."""

    windows: Windows
    saes: dict[str, dict[str, Any]]  # name -> alpha, variant, untrained, main, n_latents
    acts: dict[str, SparseActs]
    sampled: dict[str, np.ndarray]  # bool per stored latent: in the Table-1 sample
    logits: dict[str, dict[str, np.ndarray]]  # name -> up_ids, up_vals, down_ids, down_vals (may be empty)
    matches: list[dict[str, Any]] = field(default_factory=list)  # anchor, anchor_latent, other, latent, cos
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """browse.safetensors, then browse.json (written last and atomically: readers check its fingerprint)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        for name, a in self.acts.items():
            tensors.update({f"{name}::latents": a.latents, f"{name}::indptr": a.indptr, f"{name}::flat": a.flat,
                            f"{name}::vals": a.vals, f"{name}::sampled": self.sampled[name].astype(np.uint8)})
            tensors.update({f"{name}::{k}": v for k, v in self.logits.get(name, {}).items()})
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.safetensors")
        save_file(tensors, str(tmp))
        os.replace(tmp, path.with_suffix(".safetensors"))
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"windows": asdict(self.windows), "saes": self.saes, "matches": self.matches, **self.meta}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Browse:
        """Read what `save` wrote."""
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        t = load_file(str(path.with_suffix(".safetensors")))
        windows, saes, matches = Windows(**meta.pop("windows")), meta.pop("saes"), meta.pop("matches")
        acts, sampled, logits = {}, {}, {}
        for name in saes:
            acts[name] = SparseActs(t[f"{name}::latents"], t[f"{name}::indptr"], t[f"{name}::flat"],
                                    t[f"{name}::vals"])
            sampled[name] = t[f"{name}::sampled"].astype(bool)
            logits[name] = {k: t[f"{name}::{k}"] for k in ("up_ids", "up_vals", "down_ids", "down_vals")
                            if f"{name}::{k}" in t}
        return cls(windows, saes, acts, sampled, logits, matches, meta)


def browse_fresh(path: str | Path, fp: str) -> bool:
    """Whether browse data with fingerprint `fp` is on disk (else the layer job rebuilds it)."""
    path = Path(path)
    if not (path.with_suffix(".json").is_file() and path.with_suffix(".safetensors").is_file()):
        return False
    return json.loads(path.with_suffix(".json").read_text()).get("fingerprint") == fp


def build_browse(full: dict[str, SparseActs], sampled: dict[str, np.ndarray], dec: dict[str, np.ndarray],
                 saes: dict[str, dict[str, Any]], windows: Windows, anchor: str, compare: list[str],
                 w_u: np.ndarray | None, n_logit_tokens: int, meta: dict[str, Any] | None = None) -> Browse:
    """Browse data of one layer from every SAE's complete activations `full` (CSR over all its latents).

    `sampled[name]` are the Table-1 sample's latent ids; `dec[name]` the decoder [n_latents, d]. Each sampled
    latent of `anchor` gets its best decoder-cosine match in every SAE of `compare`; those matches are stored
    with the samples. `w_u` (None: no logit effects) is the folded unembedding of `unembedding`.
    """
    keep = {n: set(int(x) for x in sampled[n]) for n in full}
    matches = []
    if anchor in full:
        anchor_ids = np.asarray(sorted(keep[anchor]), np.int64)
        for other in compare:
            if other == anchor or other not in full or not len(anchor_ids):
                continue
            idx, cos = best_matches(dec[anchor][anchor_ids], dec[other])
            for a, b, c in zip(anchor_ids, idx, cos, strict=True):
                matches.append({"anchor": anchor, "anchor_latent": int(a), "other": other, "latent": int(b),
                                "cos": round(float(c), 4)})
                keep[other].add(int(b))
    acts, flags, logits = {}, {}, {}
    for name, sp in full.items():
        rows = np.asarray(sorted(keep[name]), np.int64)
        pos = np.searchsorted(sp.latents, rows)
        acts[name] = sp.subset(pos)
        flags[name] = np.isin(rows, np.asarray(sampled[name], np.int64))
        logits[name] = logit_effects(dec[name][rows], w_u, n_logit_tokens) if w_u is not None and len(rows) else {}
    # NaN (the random SAE's α) becomes null: the pages embed this as JSON, which has no NaN.
    return Browse(windows, _jsonable(saes), acts, flags, logits, matches, _jsonable(dict(meta or {})))


# ---------------------------------------------------------------------------------------------------------
# cards: what a page shows of one latent


def _window_acts(f: np.ndarray, v: np.ndarray, pos: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pos), np.float32)
    if len(f):
        j = np.minimum(np.searchsorted(f, pos), len(f) - 1)
        hit = f[j] == pos
        out[hit] = v[j[hit]]
    return out


def _short(x: float) -> float:
    """Three significant digits: what a reader sees, at a third of the JSON weight."""
    return float(f"{float(x):.3g}")


class Vocab:
    """Token strings of one page, each stored once; windows refer to them by position."""

    def __init__(self, token_str: Callable[[int], str]) -> None:
        self.token_str, self.index, self.strings = token_str, {}, []

    def __call__(self, tok: int) -> int:
        """Position of token id `tok` in the page's list."""
        tok = int(tok)
        if tok not in self.index:
            self.index[tok] = len(self.strings)
            self.strings.append(self.token_str(tok))
        return self.index[tok]


def window_view(tokens_flat: np.ndarray, windows: Windows, f: np.ndarray, v: np.ndarray, win: int,
                vocab: Vocab) -> dict[str, Any]:
    """One window: token positions in the page vocabulary and this latent's activation on each token."""
    pos = windows.positions(win)
    return {"w": int(win), "t": [vocab(t) for t in tokens_flat[pos]],
            "a": [_short(a) for a in _window_acts(f, v, pos)]}


@dataclass
class CardConfig:
    """What a card shows: top windows, samples from lower quantile bands, histogram bins."""

    n_top: int = 10
    n_bands: int = 4
    n_per_band: int = 2
    n_bins: int = 24
    seed: int = 0


def latent_card(acts: SparseActs, i: int, windows: Windows, tokens_flat: np.ndarray, vocab: Vocab,
                cfg: CardConfig) -> dict[str, Any]:
    """The card of stored latent i: top-activating windows, lower-quantile samples, histogram, firing frequency.

    Windows are ranked by the latent's largest activation in them; the active windows are cut into `n_bands`
    bands of equal count by that maximum, and `n_per_band` windows are drawn (seeded) from each band below the
    top one, lowest band last. Frequency is the share of held-out tokens (BOS excluded) where the latent fires.
    """
    f, v = acts.row(i)
    lat = int(acts.latents[i])
    w = windows.of_flat(f)
    ok = w >= 0
    wmax = np.zeros(windows.n, np.float32)
    np.maximum.at(wmax, w[ok], v[ok])
    active = np.flatnonzero(wmax > 0)
    by_max = active[np.argsort(-wmax[active], kind="stable")]
    top = by_max[: cfg.n_top]
    rng = np.random.default_rng([cfg.seed, lat])
    bands = []
    asc = by_max[::-1]
    cuts = np.array_split(asc, cfg.n_bands) if len(asc) else []
    for b in range(len(cuts) - 2, -1, -1):  # every band below the top one, highest first
        pool = np.setdiff1d(cuts[b], top)
        if not len(pool):
            continue
        pick = np.sort(rng.choice(pool, size=min(cfg.n_per_band, len(pool)), replace=False))
        pick = pick[np.argsort(-wmax[pick], kind="stable")]
        lo, hi = 100 * b // cfg.n_bands, 100 * (b + 1) // cfg.n_bands
        bands.append({"band": f"{lo}–{hi} %", "wins": [window_view(tokens_flat, windows, f, v, x, vocab)
                                                        for x in pick]})
    n_tok = windows.n_ctx * (windows.ctx_len - 1)
    vmax = float(v.max()) if len(v) else 0.0
    counts, edges = np.histogram(v, bins=cfg.n_bins, range=(0.0, vmax if vmax > 0 else 1.0))
    return {"id": lat, "freq": _short(len(v) / max(n_tok, 1)), "n_fire": int(len(v)), "n_windows": int(len(active)),
            "max": _short(vmax), "top": [window_view(tokens_flat, windows, f, v, x, vocab) for x in top],
            "bands": bands, "hist": {"edges": [_short(e) for e in edges], "counts": counts.tolist()}}


def _logit_lists(logits: dict[str, np.ndarray], i: int, token_str: Callable[[int], str]) -> dict[str, list]:
    if not logits:
        return {}
    return {k: [[token_str(int(t)), _short(x)] for t, x in zip(logits[f"{k}_ids"][i], logits[f"{k}_vals"][i],
                                                                  strict=True)] for k in ("up", "down")}


# ---------------------------------------------------------------------------------------------------------
# pages


def sae_tag(name: str) -> str:
    """File-name form of an SAE name ('cap/alpha1' -> 'cap_alpha1')."""
    return name.replace("/", "_")


def page_path(layer: int, name: str) -> str:
    """Path of an SAE's browser page, relative to the pages folder."""
    return f"layer{layer}/{sae_tag(name)}.html"


def compare_path(layer: int) -> str:
    """Path of a layer's side-by-side page, relative to the pages folder."""
    return f"layer{layer}/compare.html"


def _env() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, path: str | Path, **context: Any) -> Path:
    """Render `templates/latents/<template>` to `path` (atomic write)."""
    return atomic_write_text(path, _env().get_template(template).render(**context))


def nav_entries(layers: dict[int, Browse]) -> list[dict[str, Any]]:
    """Every page of the browser, for the navigation bar of each page (paths relative to the pages folder)."""
    out = []
    for layer, b in sorted(layers.items()):
        out.append({"layer": layer, "label": "side by side", "path": compare_path(layer), "kind": "compare"})
        for name, info in b.saes.items():
            out.append({"layer": layer, "label": sae_label(name, info), "path": page_path(layer, name), "kind": "sae"})
    return out


def sae_label(name: str, info: dict[str, Any]) -> str:
    """Reader-facing name: α, Γ variant, flags."""
    if name == "random":
        return "random-weight SAE (floor)"
    flag = " — untrained" if info.get("untrained") else ""
    return f"α = {info.get('alpha'):g}, Γ {info.get('variant')}{flag}"


def sae_page_data(b: Browse, layer: int, name: str, tokens_flat: np.ndarray, token_str: Callable[[int], str],
                  cfg: CardConfig, scores: dict[int, dict[str, float]] | None = None,
                  explanations: dict[int, dict[str, str]] | None = None) -> dict[str, Any]:
    """JSON of one SAE's page: the cards of its Table-1 sample with their proxy scores and explanations."""
    vocab = Vocab(token_str)
    acts, cards = b.acts[name], []
    for i in np.flatnonzero(b.sampled[name]):
        card = latent_card(acts, int(i), b.windows, tokens_flat, vocab, cfg)
        card["logits"] = _logit_lists(b.logits.get(name, {}), int(i), token_str)
        card["scores"] = (scores or {}).get(card["id"], {})
        card["expl"] = (explanations or {}).get(card["id"], {})
        cards.append(card)
    proxies = sorted({p for c in cards for p in c["scores"]})
    return {"layer": layer, "sae": name, "label": sae_label(name, b.saes[name]), "info": b.saes[name],
            "vocab": vocab.strings, "cards": cards, "proxies": proxies, "logit_note": b.meta.get("logit_note", "")}


def compare_page_data(b: Browse, layer: int, tokens_flat: np.ndarray, token_str: Callable[[int], str],
                      cfg: CardConfig, min_cos: float, n_top: int = 5) -> dict[str, Any]:
    """JSON of a layer's side-by-side page: each sampled anchor latent next to its best decoder match in every
    compared SAE (`n_top` top windows each); a match with cosine below `min_cos` is shown as "no match" with its
    cosine."""
    vocab = Vocab(token_str)
    small = CardConfig(n_top=n_top, n_bands=cfg.n_bands, n_per_band=0, n_bins=cfg.n_bins, seed=cfg.seed)
    pos = {n: {int(x): i for i, x in enumerate(a.latents)} for n, a in b.acts.items()}

    def card(name: str, lat: int) -> dict[str, Any]:
        i = pos[name][lat]
        c = latent_card(b.acts[name], i, b.windows, tokens_flat, vocab, small)
        c["logits"] = _logit_lists(b.logits.get(name, {}), i, token_str)
        c.pop("bands")
        return c

    anchor = next((m["anchor"] for m in b.matches), None)
    others = list(dict.fromkeys(m["other"] for m in b.matches))
    rows = []
    if anchor is not None:
        for lat in sorted({m["anchor_latent"] for m in b.matches}):
            cells = [{"sae": anchor, "cos": 1.0, "match": True, "card": card(anchor, lat)}]
            for o in others:
                m = next(x for x in b.matches if x["anchor_latent"] == lat and x["other"] == o)
                cells.append({"sae": o, "cos": m["cos"], "match": m["cos"] >= min_cos,
                              "card": card(o, m["latent"])})
            rows.append({"anchor_latent": lat, "cells": cells})
    columns = ([{"sae": anchor, "label": sae_label(anchor, b.saes[anchor])}] if anchor else []) + [
        {"sae": o, "label": sae_label(o, b.saes[o])} for o in others]
    return {"layer": layer, "columns": columns, "rows": rows, "vocab": vocab.strings, "min_cos": min_cos}


# ---------------------------------------------------------------------------------------------------------
# blind rating cards


@dataclass
class RateConfig:
    """Blind rating session: which SAEs, how many cards per (layer, SAE), windows per card, seed."""

    n_cards: int = 12
    n_top: int = 8
    n_low: int = 4
    seed: int = 0


def rating_saes(b: Browse) -> list[str]:
    """The SAEs a blind session compares: the plain SAE (α = 0), the largest-α main SAE, the random-weight SAE
    (of the first scored SAE seed: the others, keyed `name@seedS`, would only repeat the comparison)."""
    main = {n: i for n, i in b.saes.items() if i.get("main") and n != "random" and "@seed" not in n}
    out = [n for n, i in main.items() if i.get("alpha") == 0]
    rest = sorted((n for n, i in main.items() if i.get("alpha") not in (0, None)), key=lambda n: main[n]["alpha"])
    out += rest[-1:]
    return out + (["random"] if "random" in b.saes else [])


def rating_session(layers: dict[int, Browse], tokens_flat: np.ndarray, token_str: Callable[[int], str],
                   cfg: RateConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(page data, key) of a blind session: cards with opaque ids, shuffled; the key maps ids to SAEs.

    A card shows a latent's top windows and a few lower-quantile ones, shaded relative to its own largest
    activation, with no number, latent id or SAE name. Card ids are random (seeded) hex strings unrelated to
    the SAE; the page holds only a hash of the key, so exported ratings can be checked against it.
    """
    rng = np.random.default_rng(cfg.seed)
    vocab = Vocab(token_str)
    items, key_cards = [], {}
    for layer, b in sorted(layers.items()):
        for name in rating_saes(b):
            rows = np.flatnonzero(b.sampled[name])
            pick = np.sort(rng.choice(rows, size=min(cfg.n_cards, len(rows)), replace=False))
            for i in pick:
                c = latent_card(b.acts[name], int(i), b.windows, tokens_flat, vocab,
                                CardConfig(n_top=cfg.n_top, n_bands=2, n_per_band=cfg.n_low, seed=cfg.seed))
                wins = c["top"] + [w for band in c["bands"] for w in band["wins"]]
                peak = max((max(w["a"]) for w in wins), default=0.0) or 1.0
                for w in wins:  # relative shading only: raw scales differ between SAEs
                    w["a"] = [round(a / peak, 2) for a in w["a"]]
                    w.pop("w")
                items.append((wins, {"layer": int(layer), "sae": name, "latent": int(c["id"]),
                                     "alpha": b.saes[name].get("alpha"), "variant": b.saes[name].get("variant")}))
    ids: set[str] = set()
    cards = []
    for j in rng.permutation(len(items)):
        while (cid := "c" + rng.bytes(4).hex()) in ids:
            pass
        ids.add(cid)
        wins, truth = items[int(j)]
        cards.append({"card": cid, "wins": wins})
        key_cards[cid] = truth
    body = json.dumps(key_cards, sort_keys=True)
    key_id = hashlib.sha256(body.encode()).hexdigest()[:16]
    key = {"schema": "wsae-rating-key/1", "key_id": key_id, "seed": cfg.seed, "cards": key_cards}
    page = {"key_id": key_id, "schema": RATING_SCHEMA_ID, "ratings": list(RATINGS), "cards": cards,
            "vocab": vocab.strings}
    return page, key


def page_stats(folder: str | Path) -> list[dict[str, Any]]:
    """Every HTML page under `folder` with its size (bytes) and whether it names any network resource."""
    rows = []
    for p in sorted(Path(folder).rglob("*.html")):
        text = p.read_text()
        rows.append({"page": str(p.relative_to(folder)), "bytes": p.stat().st_size,
                     "network_refs": sum(text.count(s) for s in ("src=\"http", "href=\"http", "src='http",
                                                                  "href='http", "url(http", "@import"))})
    return rows


def write_pages(layers: dict[int, Browse], tokens_flat: np.ndarray, token_str: Callable[[int], str],
                pages_dir: str | Path, key_path: str | Path, card_cfg: CardConfig, rate_cfg: RateConfig,
                min_cos: float, scores: dict[tuple[int, str], dict[int, dict[str, float]]] | None = None,
                explanations: dict[tuple[int, str], dict[int, dict[str, str]]] | None = None,
                n_compare_top: int = 5) -> dict[str, Any]:
    """Write the whole browser under `pages_dir` and the blind session's key to `key_path` (kept out of the pages
    folder a rater browses). Returns what was written: pages per SAE, compare pages, rating key."""
    pages_dir = Path(pages_dir)
    nav = nav_entries(layers)
    index_rows, compare_rows = [], []
    for layer, b in sorted(layers.items()):
        for name in b.saes:
            data = sae_page_data(b, layer, name, tokens_flat, token_str, card_cfg,
                                 (scores or {}).get((layer, name)), (explanations or {}).get((layer, name)))
            here = page_path(layer, name)
            render("sae.html.j2", pages_dir / here, data=data, nav=nav, root="../", here=here)
            freqs = [c["freq"] for c in data["cards"]]
            index_rows.append({"layer": layer, "sae": name, "label": data["label"], "path": here,
                               "n": len(data["cards"]), "freq": f"{100 * float(np.median(freqs)):.3g} %" if freqs
                               else "–"})
        cmp = compare_page_data(b, layer, tokens_flat, token_str, card_cfg, min_cos, n_compare_top)
        here = compare_path(layer)
        render("compare.html.j2", pages_dir / here, data=cmp, nav=nav, root="../", here=here)
        n_match = {c["sae"]: sum(r["cells"][j]["match"] for r in cmp["rows"]) for j, c in enumerate(cmp["columns"])}
        compare_rows.append({"layer": layer, "path": here, "n_rows": len(cmp["rows"]), "matched": n_match,
                             "note": f"{len(cmp['rows'])} latents of the plain SAE; matched (cos ≥ {min_cos:g}): "
                             + ", ".join(f"{sae_label(s, b.saes[s])} {n}" for s, n in list(n_match.items())[1:])})
    page, key = rating_session(layers, tokens_flat, token_str, rate_cfg)
    # The blind page gets no navigation to the SAE pages: nothing on it names an SAE.
    render("rate.html.j2", pages_dir / "rate.html", data=page, nav=[], root="", here="rate.html")
    atomic_write_text(key_path, json.dumps(key, indent=1))
    render("index.html.j2", pages_dir / "index.html", rows=index_rows, layers=compare_rows, nav=nav, root="",
           here="index.html")
    return {"saes": index_rows, "compare": compare_rows, "key_id": key["key_id"], "n_rate_cards": len(page["cards"])}
