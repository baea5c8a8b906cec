"""Offline probing tasks for SAEBench-style metrics, built from the corpus with labels a reader can check.

Every label is made by a stated rule over the text, never by a model:

- **document** (which novel a passage comes from): the passage's document. Passages are cut from the *training*
  documents, but only from contexts that the activation cache did not hold (compared token by token with the
  cached training contexts), and never from the held-out document, so no SAE trained or was evaluated on them.
- **dialogue vs narration** (a passage label): a character is *inside a quotation* when an odd number of straight or
  curly double quotes precede it within its paragraph (paragraphs are separated by a blank line; the quote marks
  count as inside). A token is inside when the last character of its span is. A passage is *dialogue* when at
  least `dialogue_min` of its text tokens are inside, *narration* when none is; others are left out.
- **proper name vs other capitalised word** (a token label, read at the word's last token): only capitalised words
  that open a sentence (the preceding non-space, non-quote character is `.`, `!` or `?` and not the dot of Mr. /
  Mrs. / Dr. / St. / Messrs., or the word opens a paragraph), so the position cannot tell the classes apart. A word
  is a *proper name* when its lower-case form never occurs in the corpus and it occurs capitalised inside a sentence
  at least `name_min_mid` times; *other* when its lower-case form occurs at least `other_min_lower` times. Titles
  (Mr, Mrs, Miss, Sir, Lady, ...), words in capitals only (chapter headings) and single letters are left out.
- **first letter** (absorption, Chanin et al. 2024): the vocabulary's alphabetic tokens (optionally one leading
  space, then ASCII letters only); the label is the first letter, case folded. Each token is read in an in-context
  prompt like SAEBench's: `\\n{ex} has the first letter: {X}` for `icl_examples` random examples, then the token.
  Activations are read at the token itself, so the template's tail after it cannot matter (causal attention).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

LETTERS = "abcdefghijklmnopqrstuvwxyz"
QUOTES = '"\u201c\u201d'
ABBREVIATIONS = ("Mr", "Mrs", "Dr", "St", "Messrs")
TITLES = ABBREVIATIONS + ("Miss", "Sir", "Lady", "Colonel", "Captain", "Lord", "Madam", "Master")
"""Titles are left out of the name task: neither names nor ordinary words."""
ICL_TEMPLATE = "{word} has the first letter:"
"""SAEBench's absorption template; the answer follows as " X"."""


# -- labels from the text -------------------------------------------------------------------------------------
def inside_quotes(text: str) -> np.ndarray:
    """Per character: inside a double quotation (quote marks included), the state reset at every blank line."""
    out = np.zeros(len(text), dtype=bool)
    inside = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n" and text.startswith("\n\n", i):
            inside = False  # an unclosed quote ends with its paragraph (the next one reopens it)
        if ch in QUOTES:
            out[i] = True
            inside = not inside
        else:
            out[i] = inside
        i += 1
    return out


_WORD = re.compile(r"[A-Za-z]+")


def _sentence_initial(text: str, start: int) -> bool:
    """Whether the word starting at `start` opens a sentence or a paragraph (see the module docstring)."""
    j = start - 1
    gap = []
    while j >= 0 and (text[j].isspace() or text[j] in QUOTES or text[j] in "'_("):
        gap.append(text[j])
        j -= 1
    if j < 0 or "\n\n" in "".join(c for c in reversed(gap) if c.isspace()):
        return True
    if text[j] not in ".!?":
        return False
    if text[j] == ".":
        m = re.search(r"([A-Za-z]+)\.$", text[max(0, j - 8):j + 1])
        if m and m.group(1) in ABBREVIATIONS:
            return False
    return True


def word_statistics(docs: Iterable[str]) -> tuple[Counter, Counter]:
    """(occurrences of each lower-case word, occurrences of each capitalised word inside a sentence)."""
    lower, mid_cap = Counter(), Counter()
    for text in docs:
        for m in _WORD.finditer(text):
            w = m.group(0)
            if w.islower():
                lower[w] += 1
            elif w[0].isupper() and not _sentence_initial(text, m.start()):
                mid_cap[w] += 1
    return lower, mid_cap


def name_label(word: str, lower: Counter, mid_cap: Counter, name_min_mid: int = 2, other_min_lower: int = 5) -> int:
    """1 proper name, 0 other capitalised word, −1 left out (rule in the module docstring)."""
    if len(word) < 2 or not word[0].isupper() or word.isupper() or word in TITLES:
        return -1
    low = lower.get(word.lower(), 0)
    if low == 0 and mid_cap.get(word, 0) >= name_min_mid:
        return 1
    if low >= other_min_lower:
        return 0
    return -1


# -- passages from text no SAE saw ----------------------------------------------------------------------------
@dataclass
class PassageSet:
    """Passages [n, T] (position 0 = BOS) with their labels; token labels as (passage, position) examples."""

    ids: Tensor
    doc: np.ndarray
    doc_names: list[str]
    start_token: np.ndarray
    """Index of the passage's first text token in its document's token list (provenance)."""
    inside: np.ndarray
    """[n, T] token inside a quotation (BOS: False)."""
    texts: list[str]
    token_passage: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    token_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    token_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    token_word: list[str] = field(default_factory=list)

    @property
    def quote_frac(self) -> np.ndarray:
        """Share of each passage's text tokens inside a quotation."""
        return self.inside[:, 1:].mean(1)

    def dialogue_labels(self, dialogue_min: float = 0.6) -> np.ndarray:
        """1 dialogue (≥ dialogue_min of the tokens inside quotes), 0 narration (none), −1 left out."""
        q = self.quote_frac
        return np.where(q >= dialogue_min, 1, np.where(q == 0.0, 0, -1))


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` and each token's character span."""
    try:
        enc = tokenizer([text], add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"][0]), [tuple(o) for o in enc["offset_mapping"][0]]
    except TypeError:  # a tokenizer without offsets (the byte tokenizer of random-init test models)
        ids = list(tokenizer([text], add_special_tokens=False)["input_ids"][0])
        ends = np.minimum(np.cumsum([len(tokenizer.decode([i])) for i in ids]), len(text))
        starts = np.r_[0, ends[:-1]]
        return ids, [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def unseen_passages(tokenizer: Any, docs: dict[str, str], seen: Tensor, context_size: int, passage_tokens: int,
                    per_doc: int, seed: int = 0, vocab_size: int | None = None, lower: Counter | None = None,
                    mid_cap: Counter | None = None, name_min_mid: int = 2,
                    other_min_lower: int = 5) -> tuple[PassageSet, dict[str, Any]]:
    """`per_doc` passages per document from contexts the cache did not hold, with their labels; and a record.

    Documents are cut exactly as `wsae_utils.text.document_contexts` cuts them (context_size − 1 tokens after BOS);
    a context whose tokens equal a row of `seen` (the cached training contexts, BOS first) is skipped, the others
    give one passage each: BOS + their first `passage_tokens − 1` tokens. `lower` / `mid_cap` (word_statistics
    over the whole corpus) label the sentence-initial capitalised words.
    """
    from .text import _special_ids

    if passage_tokens < 2 or passage_tokens > context_size:
        raise ValueError(f"passage_tokens = {passage_tokens}: must be in 2..context_size ({context_size})")
    bos, eos = _special_ids(tokenizer)
    body = context_size - 1
    seen_rows = {bytes(r[1:].numpy().astype(np.int64).tobytes()) for r in seen}
    rng = np.random.default_rng(seed)
    lower, mid_cap = (lower, mid_cap) if lower is not None else word_statistics(docs.values())
    ids_out, doc_out, start_out, inside_out, texts = [], [], [], [], []
    tok_p, tok_pos, tok_lab, tok_word = [], [], [], []
    record: dict[str, Any] = {}
    for d, (name, text) in enumerate(docs.items()):
        ids, offsets = _encode(tokenizer, text)
        ids_all = ids + [eos]
        n_ctx = len(ids_all) // body
        wrapped = np.asarray(ids_all, np.int64) % vocab_size if vocab_size else np.asarray(ids_all, np.int64)
        free = [j for j in range(n_ctx) if wrapped[j * body:(j + 1) * body].tobytes() not in seen_rows]
        take = np.sort(rng.choice(len(free), size=min(per_doc, len(free)), replace=False)) if free else []
        record[name] = {"contexts": n_ctx, "cached (skipped)": n_ctx - len(free), "unseen": len(free),
                        "passages": len(take)}
        quoted = inside_quotes(text)
        for j in (free[t] for t in take):
            s = j * body
            tok = wrapped[s:s + passage_tokens - 1]
            spans = [offsets[i] if i < len(offsets) else (len(text), len(text)) for i in range(s, s + len(tok))]
            ins = [False] + [bool(quoted[max(e - 1, 0)]) if e > 0 else False for _, e in spans]
            p = len(ids_out)
            ids_out.append(np.concatenate([[bos], tok]))
            doc_out.append(d)
            start_out.append(s)
            inside_out.append(ins)
            texts.append(text[spans[0][0]:spans[-1][1]])
            # token-level examples: sentence-initial capitalised words, read at their last token inside the passage
            lo, hi = spans[0][0], spans[-1][1]
            for m in _WORD.finditer(text, lo, hi):
                w = m.group(0)
                if not w[0].isupper() or (m.start() > 0 and text[m.start() - 1].isalpha()):
                    continue
                if m.end() < len(text) and text[m.end()].isalpha():
                    continue
                if not _sentence_initial(text, m.start()):
                    continue
                lab = name_label(w, lower, mid_cap, name_min_mid, other_min_lower)
                if lab < 0:
                    continue
                last = next((i for i, (a, e) in enumerate(spans) if a <= m.end() - 1 < e), None)
                if last is None:
                    continue
                tok_p.append(p)
                tok_pos.append(last + 1)  # +1: BOS at position 0
                tok_lab.append(lab)
                tok_word.append(w)
    if not ids_out:
        raise ValueError("no unseen context to cut passages from (every context of every document is cached)")
    ps = PassageSet(torch.as_tensor(np.stack(ids_out), dtype=torch.long), np.asarray(doc_out, np.int64),
                    list(docs), np.asarray(start_out, np.int64), np.asarray(inside_out, bool), texts,
                    np.asarray(tok_p, np.int64), np.asarray(tok_pos, np.int64), np.asarray(tok_lab, np.int64),
                    tok_word)
    return ps, record


def split_train_test(strata: np.ndarray, test_frac: float, seed: int = 0) -> np.ndarray:
    """Boolean test mask: within each stratum a seeded `test_frac` share (at least one when the stratum has two)."""
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac = {test_frac}: must be in (0, 1)")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(strata), dtype=bool)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        n = int(round(len(idx) * test_frac))
        n = max(1, n) if len(idx) >= 2 else 0
        test[rng.choice(idx, size=n, replace=False)] = True
    return test


# -- first-letter vocabulary and prompts ----------------------------------------------------------------------
def alpha_vocab(tokenizer: Any) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(token ids, token strings, first-letter index 0..25) of the alphabetic tokens of the vocabulary.

    SAEBench's `get_alpha_tokens`: an optional single leading space, then letters only (ASCII here).
    """
    if hasattr(tokenizer, "get_vocab"):
        pairs = [(int(i), tokenizer.convert_tokens_to_string([t])) for t, i in tokenizer.get_vocab().items()]
    else:  # the byte tokenizer of random-init test models: 256 one-byte tokens
        pairs = [(i, tokenizer.decode([i])) for i in range(1, 257)]
    ids, strs, letters = [], [], []
    for i, s in sorted(pairs):
        w = s[1:] if s.startswith(" ") else s
        if w and all("a" <= c.lower() <= "z" for c in w):
            ids.append(i)
            strs.append(s)
            letters.append(LETTERS.index(w[0].lower()))
    return np.asarray(ids, np.int64), strs, np.asarray(letters, np.int64)


def icl_prefix(tokenizer: Any, examples: list[str], template: str = ICL_TEMPLATE) -> list[int]:
    """Token ids of SAEBench's in-context prefix: BOS, then "\\n{ex} has the first letter: {X}" per example, "\\n".

    The probed token is appended as an id (not re-tokenised with its neighbours).
    """
    from .text import _special_ids

    bos, _ = _special_ids(tokenizer)
    lines = [template.format(word=ex) + " " + ex.strip()[0].upper() for ex in examples]
    text = "\n" + "\n".join(lines) + "\n"
    return [bos] + list(tokenizer([text], add_special_tokens=False)["input_ids"][0])


# -- activations ----------------------------------------------------------------------------------------------
def _forward_kwargs(base: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """The cache keyword of this transformers version's forward (`cache` in newer 5.x, else past_key_values)."""
    import inspect

    params = inspect.signature(base.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


@torch.no_grad()
def prefix_word_activations(lm: Any, prefix: list[int], words: Tensor, layers: list[int],
                            batch: int = 256) -> dict[int, Tensor]:
    """Residual stream [n_words, d] (fp32) at each word appended to one shared prefix, per layer.

    The prefix runs once and its key/value cache is repeated over a batch of words, each one token: exactly the
    activations of `prefix + [word]` run alone (checked in the tests), at one token's cost per word.
    """
    import copy

    from transformers import DynamicCache

    from .model import _block_out, check_layers

    check_layers(lm, layers)
    base = lm.model.base_model
    dev = lm.model.device
    deepest = max(layers)
    got: dict[int, Tensor] = {}

    class _Stop(Exception):
        pass

    def make_hook(l: int):
        def hook(_m: Any, _i: Any, out: Any) -> None:
            got[l] = _block_out(out)[:, -1].float()
            if l == deepest:
                raise _Stop

        return hook

    handles = [lm.blocks[l].register_forward_hook(make_hook(l)) for l in set(layers)]
    try:
        cache = DynamicCache(config=lm.model.config)
        try:
            base(input_ids=torch.tensor([prefix], device=dev), use_cache=True, **_forward_kwargs(base, cache))
        except _Stop:
            pass
        out: dict[int, list[Tensor]] = {l: [] for l in layers}
        for s in range(0, len(words), batch):
            w = words[s:s + batch].to(dev)[:, None]
            c = copy.deepcopy(cache)
            c.batch_repeat_interleave(w.shape[0])
            try:
                base(input_ids=w, use_cache=True, **_forward_kwargs(base, c))
            except _Stop:
                pass
            for l in layers:
                out[l].append(got[l].cpu())
    finally:
        for h in handles:
            h.remove()
    return {l: torch.cat(v) for l, v in out.items()}
