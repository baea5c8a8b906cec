"""SAELens export: sae_lens loads our folders and encodes the same latents; load_sae round trip; atomic writes."""

import json

import pytest
import torch
from safetensors.torch import load_file

from wsae_utils.core import export as export
from wsae_utils.core.export import load_sae, save_sae
from wsae_utils.core.sae import SAEConfig, SparseAutoencoder, make_gamma


def _sae(d=24, m=96, k=5, seed=0):
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_latents=m, activation="topk", k=k), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial biases so the b_dec / b_enc conventions are exercised
        sae.b_dec.copy_(torch.randn(d, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(m, generator=g))
    return sae


def test_saelens_round_trip(tmp_path):
    from sae_lens import SAE

    sae = _sae()
    var = torch.rand(24) + 0.1
    gamma = make_gamma(var, 1.0)
    out = save_sae(sae, tmp_path / "layer3" / "alpha1", alpha=1.0, gamma=gamma, proxy=var, model_name="m",
                   hook_name="blocks.3.hook_resid_post", context_size=64)
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 24 and cfg["d_sae"] == 96 and cfg["k"] == 5
    assert cfg["normalize_activations"] == "none" and cfg["rescale_acts_by_decoder_norm"] is False
    assert cfg["apply_b_dec_to_input"] is True and cfg["dtype"] == "float32"
    assert tuple(int(x) for x in cfg["metadata"]["sae_lens_version"].split(".")) >= (6, 0, 0)
    assert cfg["metadata"]["wsae"]["file"] == "wsae.json"
    w = load_file(out / "sae_weights.safetensors")
    assert sorted(w) == ["W_dec", "W_enc", "b_dec", "b_enc"]
    assert w["W_enc"].shape == (24, 96) and w["W_dec"].shape == (96, 24)
    assert torch.equal(w["W_enc"], sae.W_enc.detach().t())

    lens = SAE.load_from_disk(str(out), device="cpu")
    x = torch.randn(50, 24) * 3
    with torch.no_grad():
        z_lens = lens.encode(x)
        z_ours = sae.encode(x)
        assert torch.equal(z_lens != 0, z_ours != 0)
        assert torch.allclose(z_lens, z_ours, atol=1e-5)
        assert torch.allclose(lens.decode(z_lens), sae(x).x_hat, atol=1e-4)

    back, info = load_sae(out)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(sae, name))
    assert info["wsae"]["alpha"] == 1.0 and info["wsae"]["proxy"] == "variance"
    assert torch.equal(info["gamma"], gamma) and torch.equal(info["proxy"], var)


def test_overwrite_and_failed_export_leave_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "sae"
    save_sae(_sae(seed=0), target, alpha=0.0)
    before = load_file(target / "sae_weights.safetensors")["W_enc"]

    calls = {"n": 0}
    real = export.save_file

    def failing(tensors, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(tensors, path)

    monkeypatch.setattr(export, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        save_sae(_sae(seed=1), target, alpha=1.0, gamma=torch.ones(24))
    # the old SAE is untouched and no temporary folder is left behind
    assert torch.equal(load_file(target / "sae_weights.safetensors")["W_enc"], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]
    monkeypatch.setattr(export, "save_file", real)
    save_sae(_sae(seed=1), target, alpha=1.0)
    assert json.loads((target / "wsae.json").read_text())["alpha"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]


def test_export_refuses_non_topk_and_missing_folder(tmp_path):
    relu = SparseAutoencoder(SAEConfig(d_in=4, n_latents=8, activation="relu"))
    with pytest.raises(ValueError, match="topk"):
        save_sae(relu, tmp_path / "x", alpha=0.0)
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path / "nothing")


def test_saelens_reproduces_project_fvu_on_cached_heldout_from_cfg_json_alone(tmp_path):
    """Load exported SAEs with sae_lens and, using only cfg.json (positions, normalisation), match our FVU."""
    from sae_lens import SAE
    from transformers import LlamaConfig, LlamaForCausalLM

    from wsae_utils.core.train import TrainConfig
    from wsae_utils.lm import fidelity as E
    from wsae_utils.lm import model as L
    from wsae_utils.lm import saes as S
    from wsae_utils.lm.text import TokenSet

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=24, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    lm = L.LM("tiny", LlamaForCausalLM(cfg).eval().requires_grad_(False), L._ByteTokenizer())
    sets = {}
    for split, n, seed in (("train", 24, 1), ("heldout", 10, 2)):
        ids = torch.randint(1, 300, (n, 12), generator=torch.Generator().manual_seed(seed))
        ids[:, 0] = 0
        sets[split] = TokenSet(ids, torch.zeros(n, dtype=torch.long), ["d"], {"d": n})
    acts = tmp_path / "acts"
    S.write_activation_cache(lm, sets, [1], acts, batch_contexts=4, shard_contexts=4)
    stats = S.layer_stats(acts, 1)
    specs = S.layer_specs(stats, [0.0, 1.0], ["standardize"], "cap", permuted_control=False)
    trained = S.train_layer_saes(acts, 1, specs, stats, S.LayerTrainConfig(
        n_latents=96, k=6, train=TrainConfig(steps=20, batch_size=32, lr=3e-3, lr_warmup_steps=10, lr_decay_frac=0.2,
                                             auxk_alpha=1 / 32, dead_window=20_000, log_every=5),
        monitor_contexts=2, shuffle_shards=2))
    pc = E.evaluate_layer(acts, 1, {n: t.sae for n, t in trained.items()}, lm=None)
    ours = {r["sae"]: r["value"] for r in E.layer_metrics(pc, stats["var"], 2, 20) if r["metric"] == "fvu"}
    held = torch.cat([x for _, x in S.iter_activations(acts, 1, "heldout")])
    for name, t in trained.items():
        out = save_sae(t.sae, tmp_path / name, alpha=t.spec.alpha, metadata={"seqpos_slice": [1, None]})
        meta = json.loads((out / "cfg.json").read_text())
        assert meta["normalize_activations"] == "none"
        start, stop = meta["metadata"]["seqpos_slice"]
        x = held[:, start:stop].reshape(-1, meta["d_in"]).double()
        lens = SAE.load_from_disk(str(out), device="cpu", dtype="float64")
        with torch.no_grad():
            x_hat = lens.decode(lens.encode(x))
        fvu_lens = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        assert fvu_lens == pytest.approx(ours[name], abs=1e-4), name
        assert 0.01 < ours[name] < 2
        for f in out.iterdir():  # world-readable weight files
            assert f.stat().st_mode & 0o044 == 0o044, f
