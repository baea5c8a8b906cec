"""Language-model path: hook fidelity (GPT-NeoX Pythia shape, tiny Llama), one-pass stream, resume, eval, errors."""

import os
import subprocess
import sys
import time

import pytest
import torch

from wsae_utils import lm as L
from wsae_utils.metrics import fvu
from wsae_utils.sae import SAEConfig, SparseAutoencoder, make_gamma, reconstruction_loss
from wsae_utils.train import TrainConfig, load_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return L.LM("tiny-llama", LlamaForCausalLM(cfg).eval().requires_grad_(False), L._ByteTokenizer())


@pytest.fixture(scope="module")
def pythia_random(tmp_path_factory):
    return L.load_lm("pythia-160m-random", tmp_path_factory.mktemp("models"))


def _hidden_states(lm, ids):
    return lm.model.base_model(input_ids=ids, output_hidden_states=True).hidden_states


def _check_hooks_equal_hidden_states(lm, ids):
    n = lm.n_layers
    acts = L.layer_activations(lm, ids, list(range(n)))
    hs = _hidden_states(lm, ids)
    assert len(hs) == n + 1
    for l in range(n - 1):  # layer l = output of block l = hidden_states[l + 1], exactly
        assert torch.equal(acts[l], hs[l + 1]), l
    # HF applies the final norm to the last hidden state; our hook is the raw block output.
    norm = lm.model.base_model.norm if hasattr(lm.model.base_model, "norm") else lm.model.base_model.final_layer_norm
    assert torch.allclose(norm(acts[n - 1]), hs[n], atol=1e-5)


def test_pythia_shape_hooks_equal_hidden_states(pythia_random):
    lm = pythia_random
    assert (lm.n_layers, lm.d_model, lm.vocab_size) == (12, 768, 50304)
    assert lm.model.config.model_type == "gpt_neox" and lm.model.config.use_parallel_residual
    assert lm.hook_name(5) == "gpt_neox.layers.5"
    ids = torch.randint(0, 50304, (2, 12), generator=torch.Generator().manual_seed(0))
    _check_hooks_equal_hidden_states(lm, ids)


def test_tiny_llama_hooks_equal_hidden_states(tiny_llama):
    ids = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(1))
    _check_hooks_equal_hidden_states(tiny_llama, ids)
    assert tiny_llama.hook_name(2) == "model.layers.2"


def test_forward_stops_after_deepest_layer(pythia_random):
    calls = []
    h = pythia_random.blocks[4].register_forward_hook(lambda *a: calls.append(1))
    try:
        L.layer_activations(pythia_random, torch.zeros(1, 4, dtype=torch.long), [1, 3])
    finally:
        h.remove()
    assert calls == []


def test_stream_runs_lm_once_per_batch_for_all_layers(tiny_llama):
    tokens = torch.randint(0, 300, (8, 9), generator=torch.Generator().manual_seed(2))
    calls = []
    h = tiny_llama.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        stream = L.ActivationStream(tiny_llama, tokens, [0, 2], batch_size=16, batch_contexts=2, shuffle_batches=2)
        b = stream.batch(0)
        stream.batch(1)  # same chunk: no new LM pass
    finally:
        h.remove()
    assert sorted(b) == [0, 2] and b[0].shape == (16, 32)
    assert len(calls) == 2  # chunk = 2 LM batches of 2 contexts, each one forward for both layers
    assert stream.per_chunk == 4 * 8 // 16  # a chunk of 4 contexts × 8 tokens serves 2 batches of 16 rows


def test_layer_beyond_model_and_nan_activations(tiny_llama):
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"layers \[4\] are beyond tiny-llama \(4 blocks"):
        L.layer_activations(tiny_llama, ids, [1, 4])
    w = tiny_llama.blocks[1].mlp.down_proj.weight
    saved = w.clone()
    try:
        w.fill_(float("nan"))
        with pytest.raises(FloatingPointError, match="layer 1"):
            L.layer_activations(tiny_llama, ids, [0, 1, 2])
    finally:
        w.copy_(saved)


def test_resume_gives_identical_weights(tiny_llama, tmp_path):
    tokens = torch.randint(0, 300, (12, 9), generator=torch.Generator().manual_seed(3))
    layers, alphas = [0, 2], [0.0, 1.0]
    stats = L.layer_stats(tiny_llama, tokens[:4], layers)
    tcfg = TrainConfig(steps=7, batch_size=8, lr=1e-2, auxk_alpha=1 / 32, dead_window=16, seed=5, log_every=1)
    kw = dict(sae_kwargs={"n_latents": 64, "activation": "topk", "k": 4}, train_cfg=tcfg, stats=stats,
              batch_contexts=2, shuffle_batches=2, progress=False)
    full = L.train_lm_saes(tiny_llama, tokens, layers, alphas, **kw)
    ckpt = tmp_path / "ckpt.pt"
    part = L.train_lm_saes(tiny_llama, tokens, layers, alphas, checkpoint_path=ckpt, checkpoint_every=2,
                           stop_after=3, **kw)
    assert part.trainers["layer0/alpha0"].state.step == 3 and load_checkpoint(ckpt)["step"] == 3
    resumed = L.train_lm_saes(tiny_llama, tokens, layers, alphas, checkpoint_path=ckpt, checkpoint_every=2, **kw)
    assert resumed.resumed_from == 3
    assert sorted(full.trainers) == ["layer0/alpha0", "layer0/alpha1", "layer2/alpha0", "layer2/alpha1"]
    for key, tr in full.trainers.items():
        other = resumed.trainers[key]
        for name, p in tr.sae.state_dict().items():
            assert torch.equal(p, other.sae.state_dict()[name]), (key, name)
        assert tr.state.loss_curve == other.state.loss_curve
    # α only changes γ: the same layer's SAEs start from the same seed, and α = 0 has γ = 1
    assert torch.equal(full.gammas["layer0/alpha0"], torch.ones(32))
    assert torch.allclose(full.gammas["layer2/alpha1"], stats[2]["var"])
    assert not list(tmp_path.glob("*.tmp*"))
    # a checkpoint from another configuration is not resumed from
    other = TrainConfig(**{**tcfg.to_dict(), "lr": 2e-2})
    with pytest.warns(UserWarning, match="another configuration"):
        fresh = L.train_lm_saes(tiny_llama, tokens, layers, alphas, checkpoint_path=ckpt,
                                **{**kw, "train_cfg": other})
    assert fresh.resumed_from == 0


def test_evaluate_perfect_sae(tiny_llama):
    """A top-k SAE that reconstructs exactly: FVU 0, CE recovered 1, KL 0, L0 = k, no dead latents."""
    d = 32
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_latents=2 * d, activation="topk", k=d, bias=False))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
    tokens = torch.randint(1, 300, (4, 8), generator=torch.Generator().manual_seed(4))
    ev = L.evaluate_sae(tiny_llama, sae, 1, tokens, batch_contexts=2, n_sample_latents=3, top_examples=2,
                        progress=False)
    assert ev.fvu < 1e-10 and abs(ev.ce_recovered - 1) < 1e-5 and abs(ev.kl) < 1e-5
    assert ev.l0 == pytest.approx(d) and ev.n_tokens == 4 * 7 and ev.dead_window_tokens == 28
    assert ev.ce_zero > ev.ce_clean
    assert len(ev.examples) == 3


def test_evaluate_imperfect_sae_matches_independent_ce_and_kl(tiny_llama):
    """x̂ = 0.5·x: CE recovered and KL(clean‖sae) against a separate hook + F.cross_entropy / F.kl_div."""
    import torch.nn.functional as F

    d, layer = 32, 1
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_latents=2 * d, activation="topk", k=d, bias=False))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]) * 0.5)
    tokens = torch.randint(1, 300, (4, 8), generator=torch.Generator().manual_seed(5))
    ev = L.evaluate_sae(tiny_llama, sae, layer, tokens, batch_contexts=4, n_sample_latents=2, progress=False)

    def logits_with(scale):
        def hook(_m, _i, out):
            h = out[0] if isinstance(out, tuple) else out
            h = torch.cat([h[:, :1], scale * h[:, 1:]], 1)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = tiny_llama.blocks[layer].register_forward_hook(hook) if scale != 1 else None
        try:
            with torch.no_grad():
                return tiny_llama.model(input_ids=tokens, use_cache=False).logits.float()[:, 1:-1]
        finally:
            if handle is not None:
                handle.remove()

    target = tokens[:, 2:].reshape(-1)
    clean, half, zero = (lg.reshape(-1, lg.shape[-1]) for lg in map(logits_with, (1.0, 0.5, 0.0)))
    ce = {k: float(F.cross_entropy(v, target)) for k, v in (("clean", clean), ("sae", half), ("zero", zero))}
    kl = float(F.kl_div(half.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="sum")) / len(target)
    assert ev.ce_clean == pytest.approx(ce["clean"], rel=1e-4) and ev.ce_sae == pytest.approx(ce["sae"], rel=1e-4)
    assert ev.ce_recovered == pytest.approx((ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]), rel=1e-4)
    assert ev.kl == pytest.approx(kl, rel=1e-3) and ev.kl > 0
    assert ev.fvu == pytest.approx(_fvu_half(tiny_llama, tokens, layer), rel=1e-4)


def _fvu_half(lm, tokens, layer):
    """FVU of x̂ = 0.5·x on the non-BOS positions, computed directly."""
    x = L.layer_activations(lm, tokens, [layer])[layer][:, 1:].reshape(-1, 32).double()
    return float((0.5 * x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_fvu_and_gamma_identities():
    x = torch.randn(100, 6)
    assert fvu(x, x) == 0.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    var = torch.rand(6)
    g = make_gamma(var, 0.0)
    x_hat = torch.randn(100, 6)
    assert torch.equal(reconstruction_loss(x, x_hat, g), reconstruction_loss(x, x_hat))
    assert torch.allclose(reconstruction_loss(x, x_hat, g), (x - x_hat).pow(2).sum(-1).mean())


def test_k_larger_than_latents_errors():
    with pytest.raises(ValueError, match="k=40"):
        SAEConfig(d_in=4, n_latents=16, activation="topk", k=40)
    errs = L.config_errors({"layers": [4], "train": {"model": "smollm2-135m", "k": 5000, "expansion": 8}})
    assert any("train.k = 5000" in e and "4608" in e for e in errs)
    errs = L.config_errors({"layers": [40], "train": {"model": "smollm2-135m"}})
    assert any("layers = [40]" in e for e in errs)


def test_austen_corpus_and_tokenization(tmp_path):
    train, held = L.load_corpus("austen")
    assert len(train) == 5 and held[0].startswith("Persuasion")
    tok = L._ByteTokenizer()
    ids = L.tokenize_contexts(tok, ["hello world", "abc"], context_size=5, vocab_size=1000)
    assert ids.shape == (4, 5) and (ids[:, 0] == 0).all()  # BOS first in every context
    assert ids[0, 1:].tolist() == [b + 1 for b in b"hell"]
    assert (L.tokenize_contexts(tok, ["zzzz" * 10], 5, vocab_size=7) < 7).all()


def test_empty_corpus_and_missing_data(tmp_path):
    (tmp_path / "a.txt").write_text("   \n")
    with pytest.raises(ValueError, match="empty"):
        L.load_corpus(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make data"):
        L.read_austen(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="make data"):
        L.load_corpus(str(tmp_path / "missing.txt"))


def test_unknown_model_names_embedded_default():
    with pytest.raises(RuntimeError, match="smollm2-135m"):
        L.load_lm("gpt-17")


def test_hub_model_offline_fails_fast_naming_default(tmp_path):
    code = ("from wsae_utils.lm import load_lm\n"
            "import time; t=time.time()\n"
            "try:\n    load_lm('pythia-160m')\n"
            "except RuntimeError as e:\n    print('ERR', round(time.time()-t, 2), e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR" in out.stdout, out.stderr[-2000:]
    seconds = float(out.stdout.split()[1])
    assert seconds < 5 and "smollm2-135m" in out.stdout and "pythia-160m" in out.stdout
    assert time.time() - t < 60
