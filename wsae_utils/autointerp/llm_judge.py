"""The LLM judge of auto-interpretability: explain → detection → fuzzing (delphi's protocol, arXiv 2410.13928; this
project's wording), through any backend of `wsae_utils.autointerp.llm_client`.

What a small or stubborn model answers is handled, never guessed. Every answer is asked for as JSON under an answer
schema, which the server enforces where it can (JSON mode / grammar, negotiated by the backend); an answer that
still cannot be read is asked again with a follow-up turn, at most `parse_retries` times; what remains unreadable is
counted as unjudged, never scored as 'no'. Where the server returns logprobs, each judged example also gets the
probability of "1" at its label token (delphi's log-prob scoring), so detection and fuzzing report an AUC next to
balanced accuracy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsae_utils.autointerp.scoring import Records, auc, balanced_accuracy, detection_items, fuzz_items

Messages = list[dict[str, str]]

SYSTEM = ("You study one feature of a neural network's view of text. Text excerpts are given; in some, tokens "
          "where the feature is active are wrapped in << and >>.")
EXPLANATION_MAX_CHARS = 100
EXPLANATION_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["explanation"],
    "properties": {"explanation": {"type": "string", "minLength": 1, "maxLength": EXPLANATION_MAX_CHARS}}}


def labels_schema(n: int) -> dict[str, Any]:
    """JSON schema of a judgement: {"labels": [n values, each 0 or 1]}."""
    return {"type": "object", "additionalProperties": False, "required": ["labels"],
            "properties": {"labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]},
                                      "minItems": n, "maxItems": n}}}


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


EXPLAIN_REPLY = 'Reply with only this JSON: {"explanation": "<one short sentence>"}.'


def labels_reply(n: int) -> str:
    """The answer-format sentence of a judgement prompt (also the retry reminder)."""
    return (f'Reply with only this JSON: {{"labels": [...]}} holding exactly {n} values, each 0 or 1, one per '
            "excerpt in order; nothing before or after it.")


def explain_messages(examples: Sequence[str]) -> Messages:
    """Ask for a one-sentence explanation of what the highlighted tokens share."""
    body = "\n".join(f"Excerpt {j + 1}: {e}" for j, e in enumerate(examples))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{body}\n\nIn one short sentence, what do the highlighted tokens have in "
                                        f"common (words, context, meaning)? {EXPLAIN_REPLY}"}]


def _judge_messages(explanation: str, excerpts: Sequence[str], heading: str, question: str) -> Messages:
    """A scorer prompt: the explanation, the numbered excerpts, and one 0/1 question per excerpt."""
    body = "\n".join(f"{j + 1}. {e}" for j, e in enumerate(excerpts))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Feature description: {explanation}\n\n{heading}:\n{body}\n\n"
                                        f"For each of the {len(excerpts)} excerpts, {question} "
                                        f"{labels_reply(len(excerpts))}"}]


def detection_messages(explanation: str, excerpts: Sequence[str]) -> Messages:
    """Ask, for each excerpt, whether the feature is active anywhere in it."""
    return _judge_messages(explanation, excerpts, "Excerpts (no highlighting)",
                           "is the feature active on some token (1) or not (0)?")


def fuzz_messages(explanation: str, excerpts: Sequence[str]) -> Messages:
    """Ask, for each highlighted excerpt, whether the highlighted tokens are ones the feature fires on."""
    return _judge_messages(explanation, excerpts, "Highlighted excerpts",
                           "do the highlighted tokens match the description (1) or not (0)?")


def retry_messages(messages: Messages, bad_answer: str, reminder: str) -> Messages:
    """The conversation asked again after an unreadable answer: that answer, then the format once more."""
    return [*messages, {"role": "assistant", "content": bad_answer},
            {"role": "user", "content": f"That reply could not be read. {reminder}"}]


def parse_explanation(answer: str) -> str:
    """The explanation in an answer: the JSON field, else the text after 'Explanation:', else the last non-empty
    line ('' when the answer is empty)."""
    for m in re.finditer(r"\{[^{}]*\}", answer):
        try:
            d = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(d, dict) and isinstance(d.get("explanation"), str) and d["explanation"].strip():
            return d["explanation"].strip().splitlines()[0].strip()
    m = re.search(r'"explanation"\s*:\s*"([^"]+)', answer)  # a JSON answer cut off by max_tokens
    if m and m.group(1).strip():
        return m.group(1).strip()
    m = re.search(r"explanation\s*:\s*(.+)", answer, flags=re.I | re.S)
    text = m.group(1) if m else next((ln for ln in reversed(answer.splitlines()) if ln.strip()), "")
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def find_labels(answer: str, n: int) -> tuple[list[bool], tuple[int, int]] | None:
    """The first JSON list of n zeros/ones in the answer with its character span, else None."""
    for m in re.finditer(r"\[[^\[\]]*\]", answer):
        try:
            vals = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(vals, list) and len(vals) == n and all(v in (0, 1) and not isinstance(v, float)
                                                             for v in vals):
            return [bool(v) for v in vals], m.span()
    return None


def parse_labels(answer: str, n: int) -> list[bool] | None:
    """The first JSON list of n zeros/ones in the answer, else None (counted as an unjudged answer)."""
    got = find_labels(answer, n)
    return None if got is None else got[0]


def _digit(token: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "", token)


def label_probs(logprobs: list | None, n: int) -> list[float] | None:
    """P("1") at each of the n label tokens of an answer, from its token logprobs, else None.

    The label list is found in the text the tokens spell; each label token's probability of "1" is
    p(1) / (p(0) + p(1)) over its top alternatives (the token itself included), delphi's reading of logprobs.
    None when the server returned no logprobs or the list's n label tokens cannot be located.
    """
    if not logprobs:
        return None
    toks = [str(t[0]) for t in logprobs]
    found = find_labels("".join(toks), n)
    if found is None:
        return None
    labels, (a, b) = found
    probs, pos = [], 0
    for tok, entry in zip(toks, logprobs, strict=True):
        start, pos = pos, pos + len(tok)
        if pos <= a or start >= b or _digit(tok) not in ("0", "1"):
            continue
        alts = {str(x[0]): float(x[1]) for x in entry[2]}
        alts.setdefault(tok, float(entry[1]))
        p = {d: sum(math.exp(lp) for t, lp in alts.items() if _digit(t) == d and math.isfinite(lp)) for d in "01"}
        probs.append(p["1"] / (p["0"] + p["1"]) if p["0"] + p["1"] > 0 else float("nan"))
    return probs if len(probs) == n else None


@dataclass
class JudgeConfig:
    """Protocol settings written next to the scores."""

    n_explain_shown: int = 40
    per_prompt: int = 5
    parse_retries: int = 2
    seed: int = 0


def ask(backend: Any, conversations: Sequence[Messages], schemas: Sequence[dict[str, Any] | None],
        parse: Callable[[int, str], Any], reminders: Sequence[str], retries: int) -> list[tuple[Any, dict, int]]:
    """Ask every conversation; re-ask those whose answer `parse(i, answer)` cannot read (None), at most `retries`
    times, each with the unreadable answer and its reminder. Returns (parsed or None, last reply, tries) per item."""
    parsed: list[Any] = [None] * len(conversations)
    replies: list[dict] = [{}] * len(conversations)
    tries = [0] * len(conversations)
    current = list(conversations)
    pending = list(range(len(conversations)))
    for attempt in range(retries + 1):
        if not pending:
            break
        got = backend.complete_many([current[i] for i in pending], [schemas[i] for i in pending])
        again = []
        for i, reply in zip(pending, got, strict=True):
            tries[i], replies[i] = attempt + 1, reply
            value = parse(i, reply["content"])
            if value is None:
                current[i] = retry_messages(conversations[i], reply["content"], reminders[i])
                again.append(i)
            else:
                parsed[i] = value
        pending = again
    return list(zip(parsed, replies, tries, strict=True))


def _batched(idx: Sequence[int], size: int) -> list[list[int]]:
    # every example is judged: the last batch may be smaller (delphi silently drops it)
    return [list(idx[a:a + size]) for a in range(0, len(idx), size)]


def llm_explain(backend: Any, records: Records, rows: Sequence[int], token_str: Callable[[int], str],
                tokens: np.ndarray, cfg: JudgeConfig) -> tuple[list[str], list[int]]:
    """One explanation per record row from its highlighted explanation windows ('' when no answer could be read
    after the retries), and the number of requests each took."""
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
    got = ask(backend, convs, [EXPLANATION_SCHEMA] * len(convs), lambda _i, a: parse_explanation(a) or None,
              [EXPLAIN_REPLY] * len(convs), cfg.parse_retries)
    return [str(p or "") for p, _, _ in got], [t for _, _, t in got]


KINDS = ("detection", "fuzzing")
COUNTS = ("asked", "judged", "retried", "failed", "with_p")
"""Per row and kind: examples asked, judged (answer read), judged only after a retry, unjudged (unreadable after
every retry), and judged with a probability of "1" from logprobs."""


def llm_score(backend: Any, records: Records, rows: Sequence[int], explanations: Sequence[str],
              token_str: Callable[[int], str], tokens: np.ndarray, cfg: JudgeConfig) -> list[dict[str, float]]:
    """Detection and fuzzing of each row under the given explanation (same order): balanced accuracy over the
    judged examples, AUC of P("1") where logprobs came back, and the counts of COUNTS per kind.

    Examples are shuffled (seeded) and asked `per_prompt` at a time. A row without an explanation ('') is not
    asked (NaN scores, zero counts); an unreadable answer leaves its examples unjudged, counted in `failed`.
    """
    flat_tokens = tokens.reshape(-1)
    rng = np.random.default_rng(cfg.seed)
    jobs: list[tuple[int, str, list[bool], Messages]] = []
    for r, (i, expl) in enumerate(zip(rows, explanations, strict=True)):
        wins, labels = detection_items(records, i)
        order = rng.permutation(len(wins))
        items = fuzz_items(records, i, cfg.seed)
        forder = rng.permutation(len(items))
        if not expl:
            continue
        texts = [render([token_str(int(t)) for t in flat_tokens[records.windows.positions(w)]]) for w in wins]
        for b in _batched(list(order), cfg.per_prompt):
            jobs.append((r, "detection", [bool(labels[j]) for j in b], detection_messages(expl, [texts[j] for j in b])))
        ftexts = [render([token_str(int(t)) for t in flat_tokens[records.windows.positions(it.win)]], it.highlight)
                  for it in items]
        for b in _batched(list(forder), cfg.per_prompt):
            jobs.append((r, "fuzzing", [items[j].label for j in b], fuzz_messages(expl, [ftexts[j] for j in b])))
    got = ask(backend, [j[3] for j in jobs], [labels_schema(len(j[2])) for j in jobs],
              lambda k, a: parse_labels(a, len(jobs[k][2])), [labels_reply(len(j[2])) for j in jobs],
              cfg.parse_retries)
    acc: dict[tuple[int, str], dict[str, Any]] = {}
    for (r, kind, lab, _), (pred, reply, tries) in zip(jobs, got, strict=True):
        a = acc.setdefault((r, kind), {"t": [], "p": [], "tp": [], "pp": [], **dict.fromkeys(COUNTS, 0)})
        a["asked"] += len(lab)
        if pred is None:
            a["failed"] += len(lab)
            continue
        a["judged"] += len(lab)
        a["retried"] += len(lab) if tries > 1 else 0
        a["t"] += lab
        a["p"] += pred
        probs = label_probs(reply.get("logprobs"), len(lab))
        if probs is not None:
            keep = [j for j, q in enumerate(probs) if math.isfinite(q)]
            a["with_p"] += len(keep)
            a["tp"] += [lab[j] for j in keep]
            a["pp"] += [probs[j] for j in keep]
    out = []
    for r in range(len(rows)):
        row: dict[str, float] = {}
        for kind in KINDS:
            a = acc.get((r, kind), {"t": [], "p": [], "tp": [], "pp": [], **dict.fromkeys(COUNTS, 0)})
            row[kind] = balanced_accuracy(a["t"], a["p"]) if a["t"] else float("nan")
            row[f"{kind}_auc"] = auc(a["pp"], a["tp"]) if a["pp"] else float("nan")
            row.update({f"{kind}_{c}": a[c] for c in COUNTS})
        out.append(row)
    return out


def expected_requests(n_saes: int, n_latents: int, n_test: int, per_prompt: int, shuffled: bool = True) -> int:
    """Requests one layer job sends when every answer is readable at once (no retries; plus the one-off probe of
    the answer format): per latent 1 explanation + detection and fuzzing prompts of `per_prompt` examples, twice
    with the shuffled-explanation control."""
    prompts = 2 * math.ceil(n_test / per_prompt) * (2 if shuffled else 1)
    return n_saes * n_latents * (1 + prompts)
