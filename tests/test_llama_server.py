"""The paper's judge path against a real OpenAI-compatible server: llama-cpp-python's llama.cpp server with the
embedded SmolLM2-135M-Instruct GGUF on loopback (wsae_utils.autointerp.llm_server), through the project's OpenAI
backend.

A real chat template, real free-text habits, real latency and real logprobs: explain → detection → fuzzing for a
few latents of a small SAE, every answer read or counted, a rerun answered from the cache, Table 1's row naming
the server's model and saying "plumbing check", a killed server failing the run with its URL and a restarted one
resuming from the cache, and the server gone afterwards whatever happens.

Needs `llama-cpp-python[server]` (the test extra). Where it is missing these tests skip, saying so; `make test`
sets WSAE_REQUIRE_LLAMA_SERVER=1, so there a missing package fails instead of skipping.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from test_autointerp import _Server, synthetic_tokens, token_str
from test_autointerp_notebooks import LAYER, SMALL, _run, cache  # noqa: F401 (cache is a fixture)

from wsae_utils.autointerp import llm_client as C
from wsae_utils.autointerp import llm_judge as J
from wsae_utils.autointerp import llm_server as S
from wsae_utils.autointerp import scoring as A
from wsae_utils.run.config import ConfigError, load_config

REASON = S.unavailable_reason()
REQUIRED = os.environ.get("WSAE_REQUIRE_LLAMA_SERVER") == "1"
needs_server = pytest.mark.skipif(REASON is not None and not REQUIRED, reason=f"skipped: {REASON}")


def test_server_package_present_where_required():
    """In `make test` the package is installed by the test extra: its absence is a failure, not a skip."""
    if REQUIRED:
        assert REASON is None, REASON


@pytest.fixture(scope="module")
def planted():
    """Planted latents (digit, comma, after_mr, in_quotes, random) on synthetic text; 5 + 5 test examples each
    (the real server generates a few tokens per second here: every judged example costs about two)."""
    tokens = synthetic_tokens(n_ctx=120)
    names, dense = A.planted_latents(tokens, token_str, seed=0)
    records = A.build_records(A.SparseActs.from_dense_rows(list(range(len(names))), dense),
                              A.Windows(*tokens.shape, 16), A.RecordConfig(n_explain=6, n_test_act=5, n_test_non=5,
                                                                           n_explain_non=2, n_quantiles=2, seed=0),
                              rows=np.arange(len(names)))
    return tokens, names, records


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = S.start_server(n_ctx=2048, log_path=tmp_path_factory.mktemp("srv") / "server.log")
    yield s
    s.stop()
    assert not s.alive() and not S.port_in_use("127.0.0.1", s.port)


def _gone(pid, within_s=20.0):
    t0 = time.time()
    while time.time() - t0 < within_s:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


# ---------------------------------------------------------------------------------------------------------
# what every judged latent must satisfy; the same check must fail on a server whose answers the parser cannot read


def check_judgements(rows, min_read=0.9):
    """Accounting of llm_score rows: every asked example judged or counted as unjudged, and most of them read."""
    asked = sum(r[f"{k}_asked"] for r in rows for k in J.KINDS)
    judged = sum(r[f"{k}_judged"] for r in rows for k in J.KINDS)
    failed = sum(r[f"{k}_failed"] for r in rows for k in J.KINDS)
    assert asked > 0 and judged + failed == asked, (asked, judged, failed)
    for r in rows:
        for k in J.KINDS:
            assert np.isnan(r[k]) == (r[f"{k}_judged"] == 0) or r[f"{k}_judged"] > 0, r  # no score from nothing
    assert judged >= min_read * asked, f"judgements read {judged} of {asked} (< {min_read:.0%})"
    return judged, asked


def _judge(base_url, model, records, tokens, cache_dir, rows=(0,), **kw):
    """Explain and score `rows` with 1 detection + 1 fuzzing prompt of 10 examples each."""
    c = C.OpenAIChat(base_url, model, cache_dir=cache_dir, backoff_s=0.1, max_retries=1, **kw)
    cfg = J.JudgeConfig(n_explain_shown=6, per_prompt=10, parse_retries=1)
    expl, _ = J.llm_explain(c, records, list(rows), token_str, tokens, cfg)
    return c, expl, J.llm_score(c, records, list(rows), expl, token_str, tokens, cfg)


@needs_server
def test_real_server_answers_are_read_and_a_prose_server_is_caught(server, planted, tmp_path):
    tokens, names, records = planted
    rows_i = (names.index("digit"),)
    c, expl, rows = _judge(server.base_url, server.model_id, records, tokens, tmp_path / "cache", rows=rows_i)
    check_judgements(rows)
    st = c.settings()
    # llama-cpp-python refuses OpenAI's json_schema type (HTTP 500, a validation error), takes a GBNF grammar, and
    # returns logprobs
    assert st["format_used"] == "grammar" and "json_schema + logprobs: refused" in st["negotiation"][0]
    assert "HTTP 500" in st["negotiation"][0]
    assert st["logprobs_returned"] is True and rows[0]["detection_with_p"] > 0 and expl[0]
    assert c.check() == [server.model_id]
    # the same check on a server that answers in prose (a format the parser does not handle) must fail; its
    # answers are counted as unjudged, never scored
    prose = _Server(lambda body: "Yes, the first one and maybe the third.")
    try:
        _, _, bad = _judge(prose.url, "prose", records, tokens, tmp_path / "prose", rows=rows_i, constrain="none")
    finally:
        prose.close()
    assert bad[0]["detection_failed"] == bad[0]["detection_asked"] > 0 and np.isnan(bad[0]["detection"])
    with pytest.raises(AssertionError, match=r"judgements read 0 of \d+"):
        check_judgements(bad)


@needs_server
def test_notebooks_against_the_real_server(server, cache, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    info = tmp_path / "llm_server.json"
    info.write_text(json.dumps(server.info()))
    # 2 + 2 test examples per latent: the real server's answers cost seconds per token here
    _run("autointerp_checks", out / "checks", {"acts_dir": str(cache / "acts"), **SMALL, "n_test_act": 2,
                                               "n_test_non": 2})
    layer_params = {"acts_dir": str(cache / "acts"), "checks_dir": str(out / "checks"), "layer": LAYER,
                    "train_rows": str(cache / "train_rows.csv"), "sae_root": str(cache / "saes"), "n_latents": 4,
                    "min_windows": 4, "extra_saes": [], "backend": "openai", "base_url": server.base_url,
                    "llm_model": server.model_id, "n_llm_latents": 1, "per_prompt": 4, "server_info": str(info)}
    t0 = time.time()
    _run("autointerp_layer", out / "layer", layer_params)
    first = time.time() - t0
    m = json.loads((out / "layer" / "metrics.json").read_text())
    assert m["llm_requests"] > 0 and m["llm_model"] == server.model_id
    assert m["llm_settings"]["format_used"] == "grammar" and m["llm_settings"]["server_models"] == [
        server.model_id]
    scores = pd.read_csv(out / "layer" / "scores.csv")
    llm = scores[scores.proxy.isin(["llm-detection", "llm-fuzzing"])]
    assert len(llm) == 3 * 2  # 3 SAEs (plain, weighted, random) × 1 latent × 2 kinds
    assert ((llm.judged + llm.failed) == llm.asked).all() and (llm.asked > 0).all()
    assert llm.judged.sum() >= 0.9 * llm.asked.sum() and llm.asked.sum() == 3 * 2 * 4
    assert scores[scores.proxy == "llm-detection-auc"].score.notna().any()  # logprobs → AUC
    prompts = json.loads((out / "layer" / "llm_prompts.json").read_text())
    assert prompts["server"]["chat_template"] and prompts["server"]["sha256"] == server.facts["sha256"]
    assert prompts["answer_schemas"]["labels(n)"]["properties"]["labels"]["maxItems"] == 5
    # 3 format probes (json_schema refused with and without logprobs, grammar taken), then one request per distinct
    # prompt, each cached (the fixture's two trained SAEs share an encoder, so their prompts coincide), within the
    # report's estimate; under the grammar every answer reads at once
    n_cached = len(list((out / "layer" / "llm_cache").glob("*.json")))
    assert m["llm_requests"] == 3 + n_cached <= 3 + J.expected_requests(3, 1, 4, 4) and llm.retried.sum() == 0
    # a rerun is served from the cache: zero requests, same scores
    _run("autointerp_layer", out / "layer", layer_params)
    again = json.loads((out / "layer" / "metrics.json").read_text())
    assert again["llm_requests"] == 0 and again["n_encoded"] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "layer" / "scores.csv"), scores)
    # Table 1: an openai row naming the server's model, flagged as a plumbing check, with no verdict
    _run("autointerp_summary", out / "summary", {
        "checks_dir": str(out / "checks"), "layer_dirs": [str(out / "layer")], "table": str(out / "t.csv"),
        "table1_csv": str(out / "t1.csv"), "n_boot": 200})
    t1 = pd.read_csv(out / "t1.csv")
    row = t1[(t1.backend == "openai") & (t1.scorer == "llm (detection + fuzzing)/2")]
    assert len(row) and (row.model == server.model_id).all()
    assert row.note.str.contains("plumbing check").all() and (row.validated == False).all()  # noqa: E712
    # one latent per SAE: no CI, so the cells say so instead of giving a number
    cells = row[row.layer != "mean"]
    assert cells["mean"].isna().all() and cells.status.str.startswith("too few latents for a CI (1 <").all()
    claims = json.loads((out / "summary" / "metrics.json").read_text())["claims"]
    llm_claim = next(c for c in claims if server.model_id in c["test"])
    assert llm_claim["verdict"] == "not decidable here" and "plumbing check" in llm_claim["why"]
    assert "judgements read" in llm_claim["numbers"]
    print(f"\nlayer notebook against the server: {first:.1f} s, {m['llm_requests']} requests")


@needs_server
def test_killed_server_fails_with_its_url_and_a_restart_resumes_from_the_cache(planted, tmp_path):
    tokens, _, records = planted
    srv = S.start_server(n_ctx=2048, log_path=tmp_path / "a.log")
    answered = []

    class Dying(C.OpenAIChat):
        def _post(self, payload):
            reply = super()._post(payload)
            answered.append(1)
            if len(answered) == 2:  # the grammar probe and the explanation answered: kill it mid-run
                srv.proc.kill()
                srv.proc.wait()
            return reply

    cache_dir = tmp_path / "cache"
    cfg = J.JudgeConfig(n_explain_shown=6, per_prompt=10, parse_retries=1)
    c = Dying(srv.base_url, srv.model_id, cache_dir=cache_dir, concurrency=1, backoff_s=0.1, max_retries=1)
    try:
        with pytest.raises(C.BackendError) as err:
            expl, _ = J.llm_explain(c, records, [0], token_str, tokens, cfg)
            J.llm_score(c, records, [0], expl, token_str, tokens, cfg)
        assert srv.base_url in str(err.value) and "connection failed" in str(err.value)
        cached = len(list(cache_dir.glob("*.json")))
        assert cached == 1  # what was answered before the kill is kept (the probe is never cached)
    finally:
        srv.stop()
    # restarted (on another port: the cache is keyed by the request, not the URL): only what is missing is asked
    with S.start_server(n_ctx=2048, log_path=tmp_path / "b.log") as srv2:
        c2 = C.OpenAIChat(srv2.base_url, srv2.model_id, cache_dir=cache_dir, concurrency=1)
        expl, _ = J.llm_explain(c2, records, [0], token_str, tokens, cfg)
        rows = J.llm_score(c2, records, [0], expl, token_str, tokens, cfg)
        total = 1 + 1 + 1  # 1 explanation + 1 detection + 1 fuzzing prompt of 10 examples
        # the 3 probe requests of a new client (json_schema refused twice, grammar taken), then only what is missing
        assert c2.n_requests == 3 + total - cached
        check_judgements(rows)
    assert not S.port_in_use("127.0.0.1", srv2.port)


_OWNER = """
import sys, time
from wsae_utils.autointerp.llm_server import start_server
s = start_server(n_ctx=512, log_path=sys.argv[2])
print(s.proc.pid, flush=True)
if sys.argv[1] == "raise":
    raise RuntimeError("the owner fails")
time.sleep(600)
"""


@needs_server
@pytest.mark.parametrize("end", ["raise", "sigkill"])
def test_server_never_outlives_its_owner(end, tmp_path):
    """An owner that fails (atexit) or is SIGKILLed (parent-death signal) takes its server down."""
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, end, str(tmp_path / "s.log")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        pid = int(owner.stdout.readline())
        if end == "sigkill":
            owner.kill()
        owner.wait(60)
        assert _gone(pid), f"server {pid} outlived its owner ({end})"
    finally:
        owner.kill()


def test_a_taken_port_is_refused_naming_it():
    if REASON is not None:
        pytest.skip(f"skipped: {REASON}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(S.ServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            S.start_server(port=port)
    with pytest.raises(S.ServerError, match="loopback only"):
        S.start_server(host="0.0.0.0")


# ---------------------------------------------------------------------------------------------------------
# the workflow's server settings (no server needed)


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update(backend="offline"), r"serve: the workflow's llama.cpp server is reached through backend"),
    (lambda a: a.update(base_url="http://10.0.0.5:8765/v1"), r"base_url = 'http://10.0.0.5:8765/v1': with serve"),
    (lambda a: a.update(base_url="http://127.0.0.1/v1"), r"explicit port"),
    (lambda a: a.update(base_url="https://127.0.0.1:8765/v1"), r"loopback, explicit port"),
    (lambda a: a.update(llm_model=""), r"llm_model = '': with serve it is the model id"),
    (lambda a: a["serve"].update(gguf="/nonexistent/m.gguf"), r"serve.gguf = '/nonexistent/m.gguf': no such file"),
    (lambda a: a["serve"].update(n_ctx=10), r"serve.n_ctx = 10"),
    (lambda a: a["serve"].update(port=1), r"serve"),
])
def test_serve_settings_are_checked_before_any_job(edit, message, tmp_path):
    import yaml

    cfg = yaml.safe_load(open("config/local_llm.yaml"))
    edit(cfg["autointerp"])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_local_llm_config_resolves_with_server_defaults_in_one_place():
    cfg = load_config("config/local_llm.yaml")
    ai = cfg["autointerp"]
    assert ai["backend"] == "openai" and ai["serve"] == {"gguf": "embedded"}
    assert ai["llm_model"] == S.EMBEDDED_ALIAS and ai["summary"]["plumbing_check"] is True
    st = S.settings_from_config(ai["serve"])
    assert st.gguf == "embedded" and st.n_ctx == S.ServerSettings.n_ctx
    assert S.embedded_gguf().name == S.EMBEDDED_GGUF


def test_concurrency_benchmark_runs_against_a_server(monkeypatch):
    """benchmarks/llm_concurrency.py (run by hand) still runs: rates and read answers at a level, the paper count."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import llm_concurrency as B

    s = _Server(lambda body: json.dumps({"labels": [1, 0, 1, 0, 1][: (5 if "For each" in str(body) else 1)]}))
    try:
        r = B.run_level(C.OpenAIChat(s.url, "m", concurrency=4), 4, 8, seed=1)
    finally:
        s.close()
    assert r["requests"] == r["read"] == 8 and r["req_per_s"] > 0 and len(s.requests) == 8 + 1  # + format probe
    n, how = B.paper_requests()
    assert n > 0 and "12 layers × 4 SAEs" in how and "100 latents" in how
