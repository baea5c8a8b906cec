"""Latent browser data and pages on planted latents: logit effects, decoder matches, cards, self-contained pages and
a blind page that names no SAE."""

import json
import re

import numpy as np
import pytest
from latent_data import N_LAT, SAES, browse, token_str, tokens

from wsae_utils.autointerp import latent_pages as LP
from wsae_utils.autointerp.scoring import SparseActs, Windows


def test_logit_effects_find_planted_tokens():
    w_u = np.eye(12, dtype=np.float32)[:, :12]  # vocab 12, d 12: token i's logit is coordinate i
    dec = np.zeros((2, 12), np.float32)
    dec[0, 3], dec[0, 7], dec[0, 5] = 2.0, 1.0, -3.0
    dec[1, 9], dec[1, 1] = 0.5, -0.25
    eff = LP.logit_effects(dec, w_u, 2)
    assert eff["up_ids"][0].tolist() == [3, 7] and eff["up_vals"][0].tolist() == [2.0, 1.0]
    assert eff["down_ids"][0][0] == 5 and eff["down_vals"][0][0] == -3.0
    assert eff["up_ids"][1][0] == 9 and eff["down_ids"][1][0] == 1


def test_best_matches_recover_a_permutation_and_random_directions_do_not_match():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 64))
    perm = rng.permutation(30)
    idx, cos = LP.best_matches(a, 3.0 * a[perm] + 1e-3 * rng.normal(size=(30, 64)))
    assert (perm[idx] == np.arange(30)).all() and (cos > 0.999).all()
    _, cos_rand = LP.best_matches(a, rng.normal(size=(200, 64)))
    assert cos_rand.max() < 0.6  # chance level in 64 dimensions, far from a match


def test_card_ranks_windows_marks_the_peak_and_counts_frequency():
    win = Windows(4, 9, 4)  # 2 windows per context, 8 windows
    dense = np.zeros((1, 36), np.float32)
    dense[0, [1, 6, 10, 15, 19, 24, 28, 33]] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 5.0]
    acts = SparseActs.from_dense_rows([7], dense)
    tok = np.arange(36) % 10
    vocab = LP.Vocab(str)
    card = LP.latent_card(acts, 0, win, tok, vocab, LP.CardConfig(n_top=3, n_bands=4, n_per_band=1, n_bins=5))
    maxes = [max(w["a"]) for w in card["top"]]
    assert maxes == [5.0, 0.7, 0.6]  # windows ranked by the latent's largest activation in them
    top0 = card["top"][0]
    assert vocab.strings[top0["t"][int(np.argmax(top0["a"]))]] == str(33 % 10)  # the peak token is the real one
    assert card["freq"] == pytest.approx(8 / (4 * 8), rel=1e-3) and card["n_windows"] == 8
    assert sum(card["hist"]["counts"]) == 8 and card["max"] == 5.0
    lower = [max(w["a"]) for b in card["bands"] for w in b["wins"]]
    assert lower and max(lower) < 0.6 and set(lower).isdisjoint(maxes)  # samples come from below the top windows


def test_browse_stores_samples_matches_and_logits_and_round_trips(tmp_path):
    b = browse()
    for name in SAES:
        assert b.sampled[name].sum() == 8
    m = [x for x in b.matches if x["other"] == "cap/alpha1"]
    assert len(m) == 8 and all(x["cos"] > 0.999 for x in m)  # the permuted decoder is matched exactly
    r = [x for x in b.matches if x["other"] == "random"]
    assert len(r) == 8 and max(x["cos"] for x in r) < 0.99
    for x in m + r:  # every partner's activations are stored, sampled or not
        assert x["latent"] in set(b.acts[x["other"]].latents.tolist())
    b.save(tmp_path / "browse")
    c = LP.Browse.load(tmp_path / "browse")
    assert c.matches == b.matches and c.saes == b.saes and c.meta["fingerprint"] == "x"
    assert LP.browse_fresh(tmp_path / "browse", "x") and not LP.browse_fresh(tmp_path / "browse", "y")
    for name in SAES:
        assert np.array_equal(c.acts[name].flat, b.acts[name].flat)
        assert np.array_equal(c.logits[name]["up_ids"], b.logits[name]["up_ids"])


def _data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    layers = {2: browse(2, 0), 5: browse(5, 3)}
    scores = {(2, "paper/alpha0"): {int(x): {"intruder": 0.5 + 0.01 * int(x)} for x in range(N_LAT)}}
    expl = {(2, "paper/alpha0"): {int(x): {"lexical": f"' w{x + 4}'"} for x in range(N_LAT)}}
    built = LP.write_pages(layers, tokens(0).reshape(-1), token_str, root / "latents", root / "key.json",
                           LP.CardConfig(n_top=4, n_per_band=1), LP.RateConfig(n_cards=5, seed=1), 0.5, scores, expl)
    return root, layers, built


def test_pages_are_self_contained_light_and_escape_tokens(pages):
    root, layers, built = pages
    stats = LP.page_stats(root / "latents")
    names = {s["page"] for s in stats}
    assert names == {"index.html", "rate.html", "layer2/compare.html", "layer5/compare.html"} | {
        LP.page_path(layer, n) for layer in layers for n in SAES}
    assert all(s["network_refs"] == 0 for s in stats) and max(s["bytes"] for s in stats) < 5 * 2**20
    page = (root / "latents" / LP.page_path(2, "paper/alpha0")).read_text()
    raw = re.search(r'id="data">(.*?)</script>', page, re.S).group(1)
    assert "<b>" not in raw and "\\u003cb\\u003e" in raw  # token " <b>" travels as escaped JSON
    data = _data(page)
    assert len(data["cards"]) == 8 and data["proxies"] == ["intruder"]
    assert all(c["expl"]["lexical"] == f"' w{c['id'] + 4}'" for c in data["cards"])
    rows = np.flatnonzero(layers[2].sampled["paper/alpha0"])
    up = layers[2].logits["paper/alpha0"]["up_ids"]
    assert [c["logits"]["up"][0][0] for c in data["cards"]] == [token_str(int(up[r][0])) for r in rows]
    index = (root / "latents" / "index.html").read_text()
    for layer in layers:
        for n in SAES:
            assert f'href="{LP.page_path(layer, n)}"' in index


def test_compare_page_pairs_each_anchor_latent_with_its_match(pages):
    root, layers, _ = pages
    data = _data((root / "latents" / "layer2" / "compare.html").read_text())
    assert [c["sae"] for c in data["columns"]] == ["paper/alpha0", "cap/alpha1", "random"]
    assert len(data["rows"]) == 8
    for row in data["rows"]:
        anchor, cap, rand = row["cells"]
        assert anchor["card"]["id"] == row["anchor_latent"] and cap["match"] and not rand["match"]


def test_blind_page_names_no_sae_and_the_key_maps_every_card(pages):
    root, layers, built = pages
    html = (root / "latents" / "rate.html").read_text()
    for leak in ["alpha", "paper", "cap/", "random", "α", '"sae"', '"latent"', "layer2/"]:
        assert leak not in html, leak
    data = _data(html)
    key = json.loads((root / "key.json").read_text())
    ids = [c["card"] for c in data["cards"]]
    assert len(ids) == len(set(ids)) == 2 * 3 * 5 and set(ids) == set(key["cards"])
    assert data["key_id"] == key["key_id"] == built["key_id"]
    truth = [key["cards"][i]["sae"] for i in ids]
    assert truth != sorted(truth)  # shuffled, not grouped by SAE
    for c in data["cards"]:  # shading is relative: each card's strongest token is 1, no raw activation
        assert max(max(w["a"]) for w in c["wins"]) == 1.0 and all("w" not in w for w in c["wins"])
    for t in key["cards"].values():  # the key names real sampled latents
        b = layers[t["layer"]]
        assert t["latent"] in set(b.acts[t["sae"]].latents[b.sampled[t["sae"]]].tolist())


def test_rating_session_is_seeded():
    layers = {2: browse(2, 0)}
    a = LP.rating_session(layers, tokens(0).reshape(-1), token_str, LP.RateConfig(n_cards=4, seed=3))
    b = LP.rating_session(layers, tokens(0).reshape(-1), token_str, LP.RateConfig(n_cards=4, seed=3))
    c = LP.rating_session(layers, tokens(0).reshape(-1), token_str, LP.RateConfig(n_cards=4, seed=4))
    assert a == b and a[1]["key_id"] != c[1]["key_id"]



@pytest.mark.slow
def test_unembedding_ranks_tokens_as_the_embedded_models_own_logits():
    """The folded unembedding (tied embedding × final RMSNorm gain, read from safetensors) ranks tokens exactly as
    the model's own head does on a residual vector: logits = W_U · norm(r), and the RMS scale is positive."""
    import torch

    from wsae_utils.lm.model import load_lm

    lm = load_lm("smollm2-135m")
    w_u, note = LP.unembedding("smollm2-135m", "resources/models", 576)
    assert w_u is not None and w_u.shape == (lm.vocab_size, 576) and "RMSNorm" in note
    r = torch.randn(3, 576, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = lm.model.lm_head(lm.model.model.norm(r)).numpy()
    eff = LP.logit_effects(r.numpy(), w_u, 10)
    for i in range(3):
        assert eff["up_ids"][i].tolist() == np.argsort(-logits[i])[:10].tolist()
        assert eff["down_ids"][i].tolist() == np.argsort(logits[i])[:10].tolist()
    assert LP.unembedding("smollm2-135m", "resources/models", 64)[0] is None  # another width: no logit effects
