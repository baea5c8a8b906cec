"""Cross-check wsae_utils.autointerp.saebench against sae-bench 0.6 on the same inputs (by hand; not a dependency).

sae-bench's `run_eval` entry points cannot run offline: they load the model with TransformerLens's `from_pretrained`
(hub; the embedded SmolLM2 is not in its model list) and the probing data sets from the hub. Its metric functions
take tensors and SAE objects, though, so this script feeds them exactly what `lm_saebench` feeds ours (the probing
passages' activations from `lm_probes`, an exported SAE loaded by `sae_lens.SAE.load_from_disk`, the same balanced
example sets, the same probes) and compares:

1. SAE latents and their passage means (sae_lens + sae-bench's `get_sae_meaned_activations` vs ours);
2. k-sparse probing accuracy (sae-bench's `train_probe_on_activations`, sklearn, vs our Newton fit of the same
   objective) per task class and k;
3. TPP and SCR (sae-bench's node effects, token-level ablation + decode + error, and plotting dicts vs our
   mean-pooled shortcut), per N;
4. absorption per word given the same probe direction and split latents (sae-bench's
   `FeatureAbsorptionCalculator` with the activations served by a stub model vs ours), and our batched k-sparse
   letter fits against sklearn's on sae-bench's own selected latents;
5. optionally (`--e2e`), sae-bench's whole absorption pipeline (letter probe, k-sparse probes, absorption) on the
   embedded SmolLM2 converted by hand to a TransformerLens `HookedTransformer` (exact to 3e-7 relative), on a sample
   of the vocabulary, against ours on the same words: independent prompts and probe seeds on both sides, so the
   tolerance there is statistical.

Run in a throw-away venv (sae-bench pins numpy < 2 and pulls a torchvision that does not match the CPU torch wheel):

    python3 -m venv /tmp/sbvenv && /tmp/sbvenv/bin/pip install torch==2.13.0 sae-bench==0.6.0
    /tmp/sbvenv/bin/pip uninstall -y torchvision  # else transformers: "operator torchvision::nms does not exist"
    PYTHONPATH=. /tmp/sbvenv/bin/python benchmarks/saebench_crosscheck.py --layer 12 --out results/bench/saebench_xcheck
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

TOL = {"latents": 1e-4, "tie_share": 1e-3, "probe_acc_unit": 0.02, "probe_acc_mean": 0.005, "tpp": 0.02,
       "tpp_exact": 0.002, "scr": 0.02, "absorption_word": 1e-5, "letter_f1": 0.02, "e2e_absorption": 0.05}
"""Tolerances: float32 encodings (a Top-k near-tie may pick another k-th latent in a differently ordered sum, so
passage means are compared by the share of entries that differ); sklearn's lbfgs stops at tol 1e-4, short of the
optimum our Newton steps reach, so a few borderline test examples may flip (a unit's accuracy by up to 0.02, the mean
by 0.005); TPP/SCR read probes on ablated means, where the same flips propagate (and sae-bench's TPP also removes
the latents of its zeroed BOS positions: compared once as is, once with that term added to ours); the end-to-end
absorption compares two random draws of prompts and probe initialisations."""


def main(argv: list[str] | None = None) -> int:  # noqa: C901 (a linear script)
    """Run the cross-check; exit 1 when a comparison is outside its tolerance."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", default="results/lm/probes")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--sae", default=None, help="exported SAE folder (default results/lm/saes/layer{L}/alpha0)")
    ap.add_argument("--out", default="results/bench/saebench_xcheck")
    ap.add_argument("--ns", default="1,2,5,20")
    ap.add_argument("--e2e", action="store_true", help="also run sae-bench's absorption pipeline on SmolLM2 in TL")
    ap.add_argument("--e2e-only", action="store_true", help="only the end-to-end absorption comparison")
    ap.add_argument("--e2e-words", type=int, default=1500)
    ap.add_argument("--model-path", default="resources/models/smollm2-135m", help="the converted embedded LM")
    ap.add_argument("--rows", default=None, help="lm_saebench rows.csv of the layer (our end-to-end numbers)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)

    import sae_bench.evals.scr_and_tpp.main as sb_scr
    import sae_bench.evals.sparse_probing.probe_training as sb_pt
    import sae_bench.sae_bench_utils.activation_collection as sb_ac
    from sae_bench.evals.absorption.feature_absorption_calculator import FeatureAbsorptionCalculator
    from sae_bench.evals.absorption.prompting import SpellingPrompt
    from sae_lens import SAE
    from safetensors.torch import load_file

    from wsae_utils.autointerp import saebench as B
    from wsae_utils.core.export import load_sae

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"tolerances": TOL, "layer": args.layer, "checks": {}}
    fails: list[str] = []

    def check(name: str, value: float, tol: float) -> None:
        ok = bool(abs(value) <= tol)
        report["checks"][name] = {"value": float(value), "tolerance": tol, "ok": ok}
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (tolerance {tol:g})", flush=True)
        if not ok:
            fails.append(name)

    sae_dir = args.sae or f"results/lm/saes/layer{args.layer}/alpha0"
    ours, _ = load_sae(sae_dir)
    theirs = SAE.load_from_disk(sae_dir, device="cpu").eval()
    info = json.loads((Path(args.probes) / "tasks.json").read_text())
    tk = load_file(str(Path(args.probes) / "tasks.safetensors"))
    acts = load_file(str(Path(args.probes) / f"layer{args.layer}.safetensors"))
    pas, words = acts["passages"].float(), acts["words"].float()
    test = tk["passage_test"].numpy().astype(bool)
    doc, dialogue = tk["passage_doc"].numpy(), tk["passage_dialogue"].numpy()
    d = pas.shape[-1]

    if args.e2e_only:
        report["e2e"] = e2e_absorption(args, theirs, info, tk, words, None, check)
        (out / "crosscheck_e2e.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        return 1 if fails else 0

    # 1. latents and passage means
    with torch.no_grad():
        diff = (ours.encode(words) - theirs.encode(words)).abs().max().item()
        check("latents: max |ours − sae_lens| on the words", diff, TOL["latents"])
        bld = pas.clone()
        bld[:, 0] = 0.0  # sae-bench masks BOS by zeroing it, then averages over non-zero tokens
        their_mean = sb_ac.get_sae_meaned_activations({"x": bld}, theirs, 64)["x"]
        our_mean = ours.encode(pas[:, 1:].reshape(-1, d)).reshape(len(pas), -1, ours.cfg.n_latents).mean(1)
        # top-k near-ties at the k-th latent may resolve differently in differently ordered float sums: count them
        check("passage-mean latents: share of entries where |ours − sae-bench| > 1e-4",
              ((our_mean - their_mean).abs() > 1e-4).float().mean().item(), TOL["tie_share"])
    x_mean = pas[:, 1:].mean(1)

    # 2. k-sparse probing on the same balanced sets
    units = B.probe_units("document", doc, test, info["doc_names"], 0)
    units += B.probe_units("dialogue", dialogue, test, ["narration", "dialogue"], 0)
    rows = []
    for u in units:
        ours_c = B.sparse_probe_correct(our_mean, u, [1, 2, 5])
        tr = {"pos": our_mean[u.train_idx[u.train_y == 1]], "neg": our_mean[u.train_idx[u.train_y == 0]]}
        te = {"pos": our_mean[u.test_idx[u.test_y == 1]], "neg": our_mean[u.test_idx[u.test_y == 0]]}
        for k in (1, 2, 5):
            # the body of sae-bench's train_probe_on_activations for one class (called step by step: its jaxtyping
            # memo refuses the combined set, twice the size of one class, when called as a whole here)
            xtr, ytr = sb_pt.prepare_probe_data(tr, "pos")
            xte, yte = sb_pt.prepare_probe_data(te, "pos")
            mask = sb_pt.get_top_k_mean_diff_mask(xtr, ytr, k)
            _, acc = sb_pt.train_sklearn_probe(sb_pt.apply_topk_mask_reduce_dim(xtr, mask), ytr,
                                               sb_pt.apply_topk_mask_reduce_dim(xte, mask), yte)
            rows.append({"unit": f"{u.task}:{u.cls}", "k": k, "ours": float(ours_c[k].mean()), "sae_bench": acc})
    diffs = np.array([r["ours"] - r["sae_bench"] for r in rows])
    report["sparse_probing"] = rows
    check("k-sparse probing: max |Δ accuracy| over units and k", np.abs(diffs).max(), TOL["probe_acc_unit"])
    check("k-sparse probing: |Δ mean accuracy|", diffs.mean(), TOL["probe_acc_mean"])

    # 3. TPP and SCR: sae-bench's own functions, its example sampling replaced by our sets
    ns = [int(n) for n in args.ns.split(",")]
    splits: dict[int, str] = {}
    current: dict = {}

    def patched_prepare(all_acts: dict, class_name: str, perform_scr: bool = False):  # noqa: ARG001
        """Our balanced set of `class_name`: the dict holds exactly its rows, in the set's order (test split for the
        dicts sae-bench builds itself: the ablated test activations)."""
        unit = current[class_name]
        y = unit.train_y if splits.get(id(all_acts)) == "train" else unit.test_y
        return all_acts[class_name], torch.as_tensor(y, dtype=torch.int)

    sb_pt.prepare_probe_data = patched_prepare

    def their_probe(p: B.LinearProbe) -> sb_pt.Probe:
        pr = sb_pt.Probe(d, torch.float32)
        with torch.no_grad():
            pr.net.weight.copy_(p.w[None])
            pr.net.bias.copy_(p.b.reshape(1))
        return pr

    def bind(x: torch.Tensor, split: str, names_units: dict) -> dict:
        current.clear()
        current.update(names_units)
        dct = {n: x[u.train_idx if split == "train" else u.test_idx] for n, u in names_units.items()}
        splits[id(dct)] = split
        return dct

    doc_units = {u.cls: u for u in units if u.task == "document"}
    probes = {n: B.fit_probe(x_mean, u) for n, u in doc_units.items()}
    t_probes = {n: their_probe(p) for n, p in probes.items()}
    names = list(doc_units)
    with torch.no_grad():
        tr_bld, te_bld = bind(bld, "train", doc_units), bind(bld, "test", doc_units)
        te_bd = bind(x_mean, "test", doc_units)
        effects = sb_scr.get_all_node_effects_for_one_sae(theirs, t_probes, names, False, tr_bld, 64)
        abl = sb_scr.perform_feature_ablations(t_probes, theirs, 64, te_bld, effects, ns, names, 500, False)
        clean = sb_scr.get_probe_test_accuracy(t_probes, names, te_bd, 500, False)
        tpp_theirs, _ = sb_scr.create_tpp_plotting_dict(abl, clean)
    tpp_ours = B.tpp(x_mean, our_mean, ours.W_dec.detach(), [probes[n] for n in names], ns)
    report["tpp"] = {n: {"ours": tpp_ours[n]["value"], "sae_bench": tpp_theirs[f"tpp_threshold_{n}_total_metric"]}
                     for n in ns}
    check("TPP: max |Δ| over N", max(abs(v["ours"] - v["sae_bench"]) for v in report["tpp"].values()), TOL["tpp"])
    # sae-bench zeroes masked tokens (BOS here) before encoding and keeps counting their latents in the ablation
    # (decode(f(0) ablated) + error(0) ≠ 0 at BOS), so its ablated means also remove f_j(0)/n_tokens per latent; with
    # that term added ours must agree to a flipped example or so
    with torch.no_grad():
        f0 = theirs.encode(torch.zeros(1, d))[0]
    leak = B.tpp(x_mean, our_mean, ours.W_dec.detach(), [probes[n] for n in names], ns,
                 ablate_codes=our_mean + f0[None, :] / (pas.shape[1] - 1))
    for n in ns:
        report["tpp"][n]["ours_with_bos_term"] = leak[n]["value"]
    check("TPP with sae-bench's masked-token term: max |Δ| over N",
          max(abs(v["ours_with_bos_term"] - v["sae_bench"]) for v in report["tpp"].values()), TOL["tpp_exact"])

    classes = sorted(c for c in np.unique(doc) if c >= 0)
    a_, b_ = classes[0], classes[1]
    attr_a = np.where(doc == a_, 1, np.where(doc == b_, 0, -1))
    sets = B.scr_sets("pair", attr_a, np.where(attr_a >= 0, dialogue, -1), test, 0)
    sp = B.scr_probes(x_mean, sets)
    key_a, key_b, key_z = "professor / nurse", "male / female", "male_professor / female_nurse"
    scr_units = {key_a: sets.a, key_b: sets.b, key_z: sets.biased}
    t_scr = {key_a: their_probe(sp.a), key_b: their_probe(sp.b), key_z: their_probe(sp.biased)}
    with torch.no_grad():
        tr_bld, te_bld = bind(bld, "train", scr_units), bind(bld, "test", scr_units)
        te_bd = bind(x_mean, "test", scr_units)
        keys = [key_a, key_b, key_z]
        effects = sb_scr.get_all_node_effects_for_one_sae(theirs, t_scr, keys, True, tr_bld, 64)
        abl = sb_scr.perform_feature_ablations(t_scr, theirs, 64, te_bld, effects, ns, keys, 500, True)
        clean = sb_scr.get_probe_test_accuracy(t_scr, keys, te_bd, 500, True)
        scr_theirs = sb_scr.get_scr_plotting_dict(abl, clean)
    scr_ours = B.scr(x_mean, our_mean, ours.W_dec.detach(), sp, ns)
    report["scr"] = {n: {"ours": scr_ours[n]["value"], "sae_bench": scr_theirs[f"scr_metric_threshold_{n}"],
                         "direction_ours": sp.direction} for n in ns}
    check("SCR: max |Δ| over N", max(abs(v["ours"] - v["sae_bench"]) for v in report["scr"].values()), TOL["scr"])

    # 4. absorption per word: sae-bench's calculator, activations served by a stub model
    w_letter, w_test = tk["word_letter"].numpy(), tk["word_test"].numpy().astype(bool)
    letter = B.letter_probe(words[~w_test], w_letter[~w_test], words[w_test], w_letter[w_test], batch_size=64)
    ksl = B.k_sparse_letter_probes(ours.encode(words[~w_test]).detach(), w_letter[~w_test],
                                   ours.encode(words[w_test]).detach(), w_letter[w_test], batch_size=512)
    tps = B.true_positive_words(letter, words[w_test], w_letter[w_test])
    xt = words[w_test]

    class Stub:
        """Serves the stored activation of word i for the prompt whose base is str(i)."""

        def run_with_cache(self, prompts: list[str], names_filter: list[str]):  # noqa: D102
            return None, {names_filter[0]: xt[[int(p) for p in prompts]][:, None, :]}

        def to_tokens(self, text: str):  # noqa: D102
            return torch.zeros(1, 3, dtype=torch.long)

    calc = FeatureAbsorptionCalculator(model=Stub(), icl_word_list=["x"], word_token_pos=-1, batch_size=64)
    worst = 0.0
    for c, idx in tps.items():
        calc._build_prompts = lambda ws, idx=idx: [SpellingPrompt(str(i), "", w) for i, w in zip(idx, ws,
                                                                                                 strict=True)]
        res = calc.calculate_absorption(theirs, [str(i) for i in idx], letter.weight[c], ksl.split[c].tolist(),
                                        args.layer, show_progress=False)
        frac, full = B.absorption_scores(xt[idx], ours.encode(xt[idx]).detach(), ours.W_dec.detach(),
                                         letter.weight[c], ksl.split[c])
        tf = np.array([r.absorption_fraction for r in res.word_results])
        tu = np.array([r.is_full_absorption for r in res.word_results])
        worst = max(worst, float(np.abs(tf - frac).max()), float((tu != full).mean()))
    check("absorption per word: max |Δ fraction| and share of full-absorption flags that differ", worst,
          TOL["absorption_word"])
    from sklearn.linear_model import LogisticRegression

    f1_d = []
    for c in np.flatnonzero(letter.used)[:8]:
        for k in (1, 2, 5):
            feats = ksl.feats[c][k]
            ctr = ours.encode(words[~w_test]).detach()[:, feats].numpy()
            cte = ours.encode(xt).detach()[:, feats].numpy()
            sk = LogisticRegression(max_iter=500, class_weight="balanced").fit(ctr, (w_letter[~w_test] == c))
            f1_d.append(B.f1_score(w_letter[w_test] == c, sk.decision_function(cte) > 0) - ksl.f1[c, k - 1])
    check("k-sparse letter probes: max |Δ F1| (sklearn vs ours on the same latents)", np.abs(f1_d).max(),
          TOL["letter_f1"])

    if args.e2e:
        report["e2e"] = e2e_absorption(args, theirs, info, tk, words, letter, check)
    report["seconds"] = time.time() - t0
    (out / "crosscheck.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"{len(report['checks']) - len(fails)} of {len(report['checks'])} checks within tolerance; "
          f"{out / 'crosscheck.json'}")
    return 1 if fails else 0


def smollm_in_transformerlens(path: str):
    """The embedded SmolLM2 as a TransformerLens HookedTransformer, its config built like TL's own Llama branch."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import _get_rope_theta
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads, n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers, n_ctx=2048, eps=c.rms_norm_eps, d_vocab=c.vocab_size,
        act_fn=c.hidden_act,
        n_key_value_heads=c.num_key_value_heads if c.num_key_value_heads != c.num_attention_heads else None,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False,
        rotary_dim=c.hidden_size // c.num_attention_heads, rotary_base=_get_rope_theta(c), final_rms=True,
        gated_mlp=True, original_architecture="LlamaForCausalLM", default_prepend_bos=True, model_name="smollm2-135m")
    tl = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    tl.load_state_dict(convert_llama_weights(hf, cfg), strict=False)
    return tl.eval(), hf


def e2e_absorption(args, theirs, info, tk, words, letter, check) -> dict:
    """sae-bench's absorption pipeline on SmolLM2-in-TL (a sample of our words) vs ours (lm_saebench's rows)."""
    import pandas as pd
    import sae_bench.evals.absorption.feature_absorption as sb_fa
    import sae_bench.evals.absorption.k_sparse_probing as sb_ks
    import sae_bench.evals.absorption.main as sb_main
    from sae_bench.evals.absorption import common as sb_common

    model, _ = smollm_in_transformerlens(args.model_path)
    rng = np.random.default_rng(0)
    strings = info["word_strings"]
    vocab = [strings[i] for i in sorted(rng.choice(len(strings), size=min(args.e2e_words, len(strings)),
                                                   replace=False).tolist())]
    sb_fa.get_alpha_tokens = lambda _tok: vocab  # a sample instead of the whole vocabulary (CPU time)
    sb_common.get_alpha_tokens = lambda _tok: vocab
    work = Path(args.out) / "e2e"
    t0 = time.time()
    common = {"model": model, "sae": theirs, "layer": args.layer, "sae_name": "xcheck", "max_k_value": 10,
              "prompt_template": "{word} has the first letter:", "prompt_token_pos": -6, "device": "cpu",
              "probes_dir": work / "probes"}
    ks = sb_ks.run_k_sparse_probing_experiment(**common, experiment_dir=work / "ks", k_sparse_probe_batch_size=512,
                                               verbose=False)
    raw = sb_fa.run_feature_absortion_experiment(**common, experiment_dir=work / "fa",
                                                 sparse_probing_experiment_dir=work / "ks", batch_size=32)
    agg = sb_main._aggregate_results_df(raw)
    good = set(ks[ks.f1_probe > 0.6].letter)
    agg = agg[agg.letter.isin(good)]
    out = {"sae_bench_mean_absorption": float(agg.mean_absorption_fraction.mean()),
           "sae_bench_full_rate": float(agg.full_absorption_rate.mean()), "sae_bench_letters": len(agg),
           "words": len(vocab), "seconds": time.time() - t0}
    if args.rows:
        r = pd.read_csv(args.rows)
        sae_name = Path(args.sae or f"results/lm/saes/layer{args.layer}/alpha0")
        mine = r[(r.kind == "trained") & (r.sae == f"paper/{sae_name.name}")]
        for metric, key in (("absorption", "sae_bench_mean_absorption"), ("full_absorption", "sae_bench_full_rate")):
            ours = float(mine[mine.metric == metric].value.iloc[0])
            out[f"ours_{metric}"] = ours
            check(f"end to end {metric}: ours − sae-bench (independent prompts and probe seeds)", ours - out[key],
                  TOL["e2e_absorption"])
    return out


t0 = time.time()
if __name__ == "__main__":
    sys.exit(main())
