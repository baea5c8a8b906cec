"""The hand-run benchmark scripts still run (tiny shapes, CPU); their timings are never asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_lm_e2e_trains_every_layer_alpha_pair_from_one_pass(bench_path, capsys):
    import lm_e2e

    assert lm_e2e.main(["--model", "pythia-160m-random", "--layers", "0", "11", "--alphas", "0", "1",
                        "--expansion", "1", "--k", "8", "--batch-tokens", "128", "--ctx", "64", "--steps", "2",
                        "--warmup", "1", "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    r = json.loads(out[out.index("{"):])
    assert r["saes"] == 4 and r["layers"] == [0, 11] and r["n_latents"] == 768 and r["batch_tokens"] == 128
    assert r["tokens_per_s"] > 0 and 0 < r["lm_share"] < 1 and r["peak_memory_gb"] > 0
    assert all(math.isfinite(v) for v in r["final_losses"])


def test_lm_e2e_refuses_a_batch_that_is_not_whole_contexts(bench_path):
    import lm_e2e

    with pytest.raises(ValueError, match="--batch-tokens 100 must be a positive multiple of --ctx 64"):
        lm_e2e.main(["--layers", "0", "--expansion", "1", "--batch-tokens", "100", "--ctx", "64", "--device", "cpu"])


def test_sae_step_times_wsae_against_the_bound_without_the_anchors(bench_path, tmp_path, capsys):
    import sae_step

    out = tmp_path / "bench"
    assert sae_step.main(["--shapes", "toy", "--adapters", "bound,wsae,wsae_weighted", "--dtypes", "fp32",
                          "--toy-k", "2", "--rounds", "1", "--toy-steps", "2", "--threads", "1", "--device", "cpu",
                          "--out", str(out)]) == 0
    rows = json.loads(Path(str(out) + ".json").read_text())["rows"]
    by = {r["adapter"]: r for r in rows}
    assert {"bound", "wsae", "wsae_weighted"} <= set(by) and by["wsae"]["tok_s"] > 0
    assert math.isfinite(by["wsae"]["last_loss"]) and by["wsae_weighted"]["n_timed"] == 2
    assert "| toy 20→200 k=2" in capsys.readouterr().out
