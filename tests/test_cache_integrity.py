"""The activation cache is verified, not trusted: damaged shards stop every reader with the shard's name."""

import json
import shutil

import numpy as np
import pytest
import torch

from wsae_utils.lm import cache as C
from wsae_utils.lm import model as L
from wsae_utils.lm import saes as S
from wsae_utils.lm import text as T

SHARD = "layer1/train-00001.safetensors"


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return L.LM("tiny-llama", LlamaForCausalLM(cfg).eval().requires_grad_(False), L._ByteTokenizer())


def _token_set(n, seed):
    ids = torch.randint(1, 300, (n, 9), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 0
    return T.TokenSet(ids, torch.zeros(n, dtype=torch.long), ["doc"], {"doc": n})


@pytest.fixture(scope="module")
def clean(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("acts")
    C.write_activation_cache(tiny_llama, {"train": _token_set(24, 1), "heldout": _token_set(8, 2)}, [1], out,
                             batch_contexts=4, shard_contexts=8,
                             meta_extra={"settings": {"layers": [1], "context_size": 9, "out_dir": "x"}})
    return out


@pytest.fixture()
def cache(clean, tmp_path):
    """A fresh copy of the clean cache for one fault."""
    return shutil.copytree(clean, tmp_path / "acts")


def _readers(cache):
    """Every way a later stage reads layer 1's training shards."""
    return {
        "iter_activations": lambda: list(C.iter_activations(cache, 1, "train")),
        "layer_stats": lambda: C.layer_stats(cache, 1, "train"),
        "CachedBatches": lambda: [S.CachedBatches(cache, 1, batch_size=16, shuffle_shards=1).batch(s)
                                  for s in range(12)],
    }


def test_meta_records_every_file(clean):
    meta = C.read_meta(clean)
    assert set(meta["files"]) == {"tokens.safetensors", "layer1/train-00000.safetensors", SHARD,
                                  "layer1/train-00002.safetensors", "layer1/heldout-00000.safetensors"}
    rec = meta["files"][SHARD]
    assert len(rec["sha256"]) == 64 and rec["tensors"]["acts"] == {"shape": [8, 9, 16], "dtype": "float32"}
    for read in _readers(clean).values():
        read()  # a clean cache reads


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nan(path):
    data = bytearray(path.read_bytes())
    data[-64:] = np.full(16, np.nan, dtype=np.float32).tobytes()  # the last 16 activations of the tensor
    path.write_bytes(bytes(data))


def _garbage(path):
    """Finite values of the same shape and dtype: a well-formed file that is simply not the LM's activations."""
    from safetensors.torch import save_file

    save_file({"acts": torch.randn(8, 9, 16)}, path)


@pytest.mark.parametrize("fault,expect", [
    (_truncate, "truncated"),
    (_nan, "non-finite"),
    (_garbage, "sha256"),
    (lambda p: p.unlink(), "missing"),
])
def test_damaged_shard_stops_every_reader_naming_it(cache, fault, expect):
    fault(cache / SHARD)
    for name, read in _readers(cache).items():
        with pytest.raises(C.CacheError) as err:
            read()
        msg = str(err.value)
        assert SHARD in msg and expect in msg and "--forcerun lm_acts" in msg, (name, msg)


def test_changed_tokens_and_missing_records_are_refused(cache):
    meta = json.loads((cache / "meta.json").read_text())
    _garbage(cache / "tokens.safetensors")
    with pytest.raises(C.CacheError, match="tokens.safetensors"):
        C.load_tokens(cache, "train")
    del meta["files"]
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(C.CacheError, match="no integrity record"):
        next(C.iter_activations(cache, 1, "train"))
    (cache / "meta.json").write_text("{not json")
    with pytest.raises(C.CacheError, match="meta.json: not valid JSON"):
        C.read_meta(cache)


def test_recorded_nan_is_reported_as_non_finite_not_as_an_alpha_problem(cache):
    """A cache whose recorded hash matches NaN activations (an LM overflow written by an older writer)."""
    _nan(cache / SHARD)
    C.write_meta(cache, {k: v for k, v in C.read_meta(cache).items() if k != "files"})
    with pytest.raises(C.CacheError, match=r"train-00001.safetensors: non-finite activations.*lm_dtype float32"):
        C.layer_stats(cache, 1)


def test_writer_refuses_non_finite_activations(tiny_llama, tmp_path, monkeypatch):
    real = L.layer_activations

    def overflow(lm, ids, layers):
        out = real(lm, ids, layers)
        return {l: a.masked_fill(torch.zeros_like(a, dtype=torch.bool).index_fill_(1, torch.tensor([3]), True),
                                 float("inf")) for l, a in out.items()}

    monkeypatch.setattr(L, "layer_activations", overflow)
    with pytest.raises(C.CacheError, match=r"layer 1, train contexts 0\.\.7: the LM produced \d+ non-finite"):
        C.write_activation_cache(tiny_llama, {"train": _token_set(8, 1)}, [1], tmp_path, shard_contexts=8)
    assert not (tmp_path / "meta.json").exists()


def test_declared_shards_follow_the_cache_written_with_these_settings(clean):
    settings = {"layers": [1], "context_size": 9, "out_dir": "elsewhere", "device": "cuda"}
    shards = C.declared_shards(clean, settings, [1])
    assert sorted(shards) == sorted(str(clean / f) for f in C.read_meta(clean)["files"] if f.startswith("layer1"))
    assert C.declared_shards(clean, {**settings, "context_size": 17}, [1]) == []  # other settings: lm_acts reruns
    assert C.declared_shards(clean / "nowhere", settings, [1]) == []
