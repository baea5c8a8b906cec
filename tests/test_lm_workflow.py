"""The LM part of the DAG: the activation pass is a workflow product, so α and SAE settings rerun no LM pass."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_copy import copy_workflow

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def smk(root, *args):
    """Run snakemake in `root`, return stdout + stderr (fails the test on a non-zero exit)."""
    proc = subprocess.run([SNAKEMAKE, *args], cwd=root, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _config(**changes):
    lm = {"layers": [1], "alphas": [0.0, 1.0],
          "acts": {"model": "pythia-160m-random", "context_size": 16, "train_tokens": 512, "heldout_tokens": 128,
                   "batch_contexts": 8, "shard_contexts": 8},
          "train": {"k": 4, "expansion": 1, "variants": [], "steps": 4, "batch_size": 32, "monitor_points": 2,
                    "monitor_contexts": 2, "shuffle_shards": 2},
          "sae": {"ce_contexts": 2, "n_boot": 20}}
    for key, value in changes.items():
        *path, last = key.split(".")
        node = lm
        for p in path:
            node = node[p]
        node[last] = value
    return {"device": "cpu", "title": "lm dag test", "lm": lm}


@pytest.fixture(scope="module")
def lm_root(tmp_path_factory):
    """A copy of the workflow sources whose activation cache has been built for real (random Pythia, tiny)."""
    root = tmp_path_factory.mktemp("lmwf")
    copy_workflow(root)
    (root / "base.yaml").write_text(yaml.safe_dump(_config()))
    smk(root, "results/lm/acts/metrics.json", "--cores", "2", "--configfile", "base.yaml")  # targets first
    return root


@pytest.mark.parametrize("change,lm_pass", [
    ({"alphas": [0.0, 0.5, 1.0]}, False),
    ({"train.k": 2, "train.steps": 6, "train.variants": ["cap"]}, False),
    ({"sae.ce_contexts": 3}, False),
    ({"acts.context_size": 32}, True),  # the control: a change of the token set does rerun the LM pass
])
def test_alpha_and_sae_settings_rerun_no_lm_pass(lm_root, change, lm_pass):
    cfg = lm_root / "changed.yaml"
    cfg.write_text(yaml.safe_dump(_config(**change)))
    out = smk(lm_root, "results/lm/summary/metrics.json", "-n", "--configfile", str(cfg))
    assert ("lm_acts" in out) == lm_pass, out[-3000:]
    assert "lm_train" in out


@pytest.mark.parametrize("module,lm_pass", [
    ("paths.py", True),  # the data-path resolver: the LM pass imports it (through the corpus reader)
    ("lm/text.py", True),
    ("core/train.py", False),  # the trainer shapes no activation
])
def test_code_edits_rerun_the_lm_pass_exactly_when_it_imports_them(lm_root, module, lm_pass):
    """Rule code inputs are the notebooks' import closures: an edit reruns the LM pass iff lm_acts runs the file."""
    src = lm_root / "wsae_utils" / module
    kept = src.read_text()
    base = str(lm_root / "base.yaml")
    try:
        src.write_text(kept + "\n# edited\n")
        out = smk(lm_root, "results/lm/summary/metrics.json", "-n", "--configfile", base)
    finally:
        src.write_text(kept)
    assert ("lm_acts" in out) == lm_pass, out[-3000:]
    assert "lm_train" in out  # every per-layer job imports all three


def test_missing_shard_reruns_the_lm_pass(lm_root):
    """Shards are declared outputs of lm_acts: a deleted one makes `snakemake -n` rerun the LM pass."""
    shard = lm_root / "results/lm/acts/layer1/train-00001.safetensors"
    base = str(lm_root / "base.yaml")
    assert "lm_acts" not in smk(lm_root, "results/lm/summary/metrics.json", "-n", "--configfile", base)
    kept, st = shard.read_bytes(), shard.stat()
    shard.unlink()
    try:
        out = smk(lm_root, "results/lm/summary/metrics.json", "-n", "--configfile", base)
        assert "rule lm_acts" in out and "train-00001.safetensors" in out, out[-3000:]
    finally:
        shard.write_bytes(kept)
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
