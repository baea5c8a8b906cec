"""Auto-interp notebooks end to end on a synthetic activation cache: checks → layer → summary (offline proxies),
and an unreachable OpenAI-compatible server failing fast without leaving a table."""

import json
import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file

from wsae_utils.core.export import save_sae
from wsae_utils.core.sae import SAEConfig, SparseAutoencoder
from wsae_utils.lm.cache import write_meta
from wsae_utils.run.nbrun import NotebookError, execute_notebook

pytestmark = pytest.mark.slow

N_CTX, CTX, D, LAYER = 24, 33, 16, 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fake activation cache (tokens, meta, one layer's shards) and two SAEs with lm_train's rows.csv."""
    root = tmp_path_factory.mktemp("ai")
    acts = root / "acts"
    rng = np.random.default_rng(0)
    tokens = rng.integers(40, 100, (N_CTX, CTX)).astype(np.int32)
    tokens[:, 0] = 0
    (acts / f"layer{LAYER}").mkdir(parents=True)
    save_file({"heldout": tokens, "train": tokens}, str(acts / "tokens.safetensors"))
    emb = rng.normal(size=(256, D)).astype(np.float32)
    x = emb[tokens] + 0.1 * rng.normal(size=(N_CTX, CTX, D)).astype(np.float32)
    shards = []
    for i, s in enumerate(range(0, N_CTX, 8)):
        save_file({"acts": x[s:s + 8]}, str(acts / f"layer{LAYER}" / f"heldout-{i:05d}.safetensors"))
        shards.append({"index": i, "start": s, "n_contexts": 8})
    meta = {"model": "pythia-160m-random", "model_cache": str(root / "models"), "layers": [LAYER],
            "splits": {"heldout": {"documents": ["synthetic"], "n_contexts": N_CTX, "shards": shards}}}
    write_meta(acts, meta)  # with the integrity record every cache reader checks
    rows = []
    for seed in (0, 1):  # lm_train trains every SAE per SAE seed; autointerp_layer scores those of `sae_seeds`
        for a in (0.0, 1.0):
            sae = SparseAutoencoder(SAEConfig(d_in=D, n_latents=32, activation="topk", k=4), seed=int(a) + 10 * seed)
            with torch.no_grad():
                enc = emb[40 + 8 * seed:72 + 8 * seed]
                sae.W_enc.copy_(torch.from_numpy(enc / np.linalg.norm(enc, axis=1, keepdims=True)))
            d = root / "saes" / f"layer{LAYER}" / (f"alpha{a:g}" if seed == 0 else f"seed{seed}_alpha{a:g}")
            save_sae(sae, d, alpha=a, model_name="x", hook_name="h", context_size=CTX,
                     extra={"layer": LAYER, "variant": "paper" if a == 0 else "cap", "untrained": False})
            rows.append({"sae": f"{'paper' if a == 0 else 'cap'}/alpha{a:g}", "seed": seed,
                         "variant": "paper" if a == 0 else "cap", "alpha": a, "untrained": False, "dir": str(d)})
    pd.DataFrame(rows).to_csv(root / "train_rows.csv", index=False)
    return root


SMALL = {"window": 8, "n_explain": 6, "n_explain_non": 4, "n_test_act": 6, "n_test_non": 6, "n_quantiles": 2,
         "n_boot": 200, "embed": False, "max_contexts": 0}


def _run(name, out, params):
    return execute_notebook(f"notebooks/{name}.py", out / "report.ipynb", {"out_dir": str(out), **params},
                            log_path=out / "run.log")


def test_offline_pipeline_builds_table_and_verdict(cache):
    checks = cache / "out" / "checks"
    _run("autointerp_checks", checks, {"acts_dir": str(cache / "acts"), **SMALL})
    layer = cache / "out" / f"layer{LAYER}"
    _run("autointerp_layer", layer, {"acts_dir": str(cache / "acts"), "checks_dir": str(checks), "layer": LAYER,
                                     "train_rows": str(cache / "train_rows.csv"), "sae_root": str(cache / "saes"),
                                     "n_latents": 6, "min_windows": 4, "extra_saes": []})
    rows = pd.read_csv(layer / "rows.csv")
    assert set(rows.sae) == {"paper/alpha0", "cap/alpha1", "random"}
    assert {"margin", "margin_lo", "margin_hi", "random_sae_mean", "shuffled_mean"} <= set(rows.columns)
    # The latent browser from what the layer job stored (this cache's d = 16 has no matching unembedding).
    browse = json.loads((layer / "browse.json").read_text())
    assert set(browse["saes"]) == {"paper/alpha0", "cap/alpha1", "random"} and browse["matches"]
    assert "d_model 768" in browse["logit_note"]
    latents, pages = cache / "out" / "latents", cache / "out" / "pages"
    _run("autointerp_latents", latents, {"layer_dirs": [str(layer)], "acts_dir": str(cache / "acts"),
                                         "pages_dir": str(pages), "n_rate_cards": 3})
    assert (pages / "index.html").exists() and (pages / "rate.html").exists()
    assert (pages / f"layer{LAYER}" / "compare.html").exists() and (pages / f"layer{LAYER}" / "random.html").exists()
    key = json.loads((latents / "rating_key.json").read_text())
    assert len(key["cards"]) == 3 * 3  # plain, largest α, random
    # No ratings yet: the human rows say so, and Table 1 gains no number.
    human = cache / "out" / "human"
    _run("autointerp_human", human, {"ratings_dir": str(cache / "out" / "no_ratings"),
                                     "rating_key": str(latents / "rating_key.json"),
                                     "table": str(cache / "out" / "human.csv")})
    m = json.loads((human / "metrics.json").read_text())
    assert m["status"] == "no human ratings yet" and m["claims"][0]["numbers"] == "no human ratings yet"
    human_rows = pd.read_csv(cache / "out" / "human.csv")
    assert human_rows.scorer.tolist() == ["no human ratings yet"] and human_rows["mean"].isna().all()
    summary = cache / "out" / "summary"
    table = cache / "out" / "autointerp.csv"
    _run("autointerp_summary", summary, {"checks_dir": str(checks), "layer_dirs": [str(layer)], "table": str(table),
                                         "table1_csv": str(cache / "out" / "t1.csv"), "n_boot": 200,
                                         "human_table": str(cache / "out" / "human.csv"), "latents_dir": str(pages)})
    t = pd.read_csv(table)
    assert {"layer", "alpha", "gamma_variant", "scorer", "backend", "model", "n_latents", "mean", "ci_lo", "ci_hi",
            "shuffled_mean", "random_sae_mean", "margin", "margin_lo", "margin_hi"} <= set(t.columns)
    claims = json.loads((summary / "metrics.json").read_text())["claims"]
    assert claims and all(c["id"] == "lm-table1" and c["verdict"] == "not decidable here" for c in claims)
    t1 = pd.read_csv(cache / "out" / "t1.csv")
    assert t1[t1.backend == "human"].scorer.tolist() == ["no human ratings yet"]
    report = (summary / "report.ipynb").read_text()
    assert "no human ratings yet" in report and "../pages/index.html" in report
    assert set(t[t.sae != "random"].seed) == {0} and set(t[t.sae == "random"].seed) == {-1}
    # Two SAE seeds scored: the second seed's SAEs keyed name@seed1, and Table 1 averages the seeds of a cell.
    two = cache / "out" / "two_seeds"
    _run("autointerp_layer", two / "layer", {
        "acts_dir": str(cache / "acts"), "checks_dir": str(checks), "layer": LAYER,
        "train_rows": str(cache / "train_rows.csv"), "sae_root": str(cache / "saes"), "n_latents": 6,
        "min_windows": 4, "extra_saes": [], "sae_seeds": [0, 1]})
    rows2 = pd.read_csv(two / "layer" / "rows.csv")
    assert set(zip(rows2.sae, rows2.seed, strict=True)) == {("paper/alpha0", 0), ("cap/alpha1", 0), ("random", -1),
                                                           ("paper/alpha0@seed1", 1), ("cap/alpha1@seed1", 1)}
    _run("autointerp_summary", two / "summary", {"checks_dir": str(checks), "layer_dirs": [str(two / "layer")],
                                                 "table": str(two / "autointerp.csv"), "n_boot": 200,
                                                 "table1_csv": str(two / "t1.csv"), "min_latents": 2})
    t1 = pd.read_csv(two / "t1.csv")
    assert {"seed"} <= set(pd.read_csv(two / "autointerp.csv").columns) and len(t1)

def test_unreachable_llm_server_fails_fast_without_table(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = cache / "dead" / "checks"
    t0 = time.time()
    with pytest.raises(NotebookError, match="no OpenAI-compatible server answers"):
        _run("autointerp_checks", out, {"acts_dir": str(cache / "acts"), **SMALL, "backend": "openai",
                                        "base_url": f"http://127.0.0.1:{port}/v1"})
    assert time.time() - t0 < 30
    assert not (out / "metrics.json").exists() and not (out / "rows.csv").exists()
    layer = cache / "dead" / "layer"
    with pytest.raises(NotebookError, match="no OpenAI-compatible server answers"):
        _run("autointerp_layer", layer, {"acts_dir": str(cache / "acts"), "checks_dir": str(out), "layer": LAYER,
                                         "train_rows": str(cache / "train_rows.csv"), "backend": "openai",
                                         "llm_model": "m", "base_url": f"http://127.0.0.1:{port}/v1"})
    assert not (layer / "rows.csv").exists() and not (layer / "scores.csv").exists()


def test_llm_backend_through_loopback_server_and_key_never_written(cache, monkeypatch):
    from test_autointerp import _Server

    def answer(body):
        text = body["messages"][-1]["content"]
        if '{"explanation"' in text:
            return '{"explanation": "some tokens"}'
        n = int(text.split("For each of the ")[1].split()[0]) if "For each of the" in text else 1
        return str([j % 2 for j in range(n)])

    secret = "sk-loopback-SECRET-0987654321"
    monkeypatch.setenv("WSAE_TEST_KEY", secret)
    server = _Server(answer)
    try:
        out = cache / "llm"
        llm = {"backend": "openai", "base_url": server.url, "api_key_env": "WSAE_TEST_KEY"}
        _run("autointerp_checks", out / "checks", {"acts_dir": str(cache / "acts"), **SMALL, **llm})
        _run("autointerp_layer", out / "layer", {
            "acts_dir": str(cache / "acts"), "checks_dir": str(out / "checks"), "layer": LAYER,
            "train_rows": str(cache / "train_rows.csv"), "sae_root": str(cache / "saes"), "n_latents": 4,
            "min_windows": 4, "extra_saes": [], "llm_model": "scripted", "n_llm_latents": 2, **llm})
        n_requests = len(server.requests)
        assert n_requests > 0 and server.headers[-1]["Authorization"] == f"Bearer {secret}"
        rows = pd.read_csv(out / "layer" / "rows.csv")
        llm_rows = rows[rows.scorer.str.startswith("llm-")]
        assert set(llm_rows.backend) == {"openai"} and set(llm_rows.model) == {"scripted"}
        assert (llm_rows.n_latents <= 2).all() and (out / "layer" / "llm_prompts.json").exists()
        _run("autointerp_summary", out / "summary", {
            "checks_dir": str(out / "checks"), "layer_dirs": [str(out / "layer")], "table": str(out / "t.csv"),
            "table1_csv": str(out / "t1.csv"), "n_boot": 200})
        claims = json.loads((out / "summary" / "metrics.json").read_text())["claims"]
        assert any("scripted" in c["test"] for c in claims)
        # a rerun of the layer is answered from the cache
        _run("autointerp_layer", out / "layer", {
            "acts_dir": str(cache / "acts"), "checks_dir": str(out / "checks"), "layer": LAYER,
            "train_rows": str(cache / "train_rows.csv"), "sae_root": str(cache / "saes"), "n_latents": 4,
            "min_windows": 4, "extra_saes": [], "llm_model": "scripted", "n_llm_latents": 2, **llm})
        assert len(server.requests) == n_requests
        assert json.loads((out / "layer" / "metrics.json").read_text())["n_encoded"] == 0  # records reused
    finally:
        server.close()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and not [p for p in files if secret.encode() in p.read_bytes()]
