"""Text corpora for the language-model experiment: reading, tokenisation into contexts, the held-out split.

The text twin of `images.py`. A corpus is a list of named documents; one or more of them are held out and never
reach calibration or training. Each document is tokenised on its own and cut into contexts of
`context_size − 1` tokens with a BOS token in front (position 0), so every context carries exactly one document
label. Training contexts are drawn from **every** training document (proportional to its length, at least one
each, seeded), then shuffled; held-out contexts keep document order.
"""

from __future__ import annotations

import gzip
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wsae_utils.paths import resolve_data_path


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path} does not exist: run `make data` (embedded corpus) or fix the corpus path")


def read_austen(data_dir: str | Path = "resources/data/janeaustenr") -> dict[str, str]:
    """Jane Austen's six novels from janeaustenr's R lazy-load database, as {novel: text}."""
    import rdata

    data_dir = resolve_data_path(data_dir)
    rdx, rdb = data_dir / "Rdata.rdx", data_dir / "Rdata.rdb"
    for p in (rdx, rdb):
        if not p.exists():
            raise _missing(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns "Unknown file type: assumed RDS" for every record
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdx.read_bytes())))
        raw = rdb.read_bytes()
        novels = {}
        for name, (off, length) in index["variables"].items():
            rec = raw[int(off):int(off) + int(length)]
            (n,) = struct.unpack(">I", rec[:4])  # record = big-endian length + zlib stream
            data = zlib.decompress(rec[4:])
            if len(data) != n:
                raise ValueError(f"{rdb}: record {name} has {len(data)} bytes, header says {n}")
            lines = rdata.conversion.convert(rdata.parser.parse_data(data))
            novels[str(name)] = "\n".join(str(x) for x in lines)
    return novels


def load_corpus(corpus: str, eval_doc: str = "persuasion", data_dir: str = "resources/data/janeaustenr",
                eval_frac: float = 0.1) -> tuple[dict[str, str], dict[str, str]]:
    """(train documents, held-out documents), each {name: text}.

    `corpus`: "austen" (held-out novel `eval_doc`); a .txt file or a folder of .txt files (the last `eval_frac`
    of the files, at least one, is held out; a single file holds out its tail); "hf:<dataset>[:<config>]"
    (column "text", train and test/validation splits).
    """
    if corpus == "austen":
        novels = read_austen(data_dir)
        if eval_doc not in novels:
            raise ValueError(f"eval_doc = {eval_doc!r}: must be one of {sorted(novels)}")
        train = {n: t for n, t in novels.items() if n != eval_doc}
        held = {eval_doc: novels[eval_doc]}
    elif corpus.startswith("hf:"):
        from datasets import load_dataset

        name, _, cfg = corpus[3:].partition(":")
        ds = load_dataset(name, cfg or None)
        texts = [t for t in ds["train"]["text"] if t.strip()]
        split = next((s for s in ("test", "validation") if s in ds), None)
        if split is not None:
            held_texts = [t for t in ds[split]["text"] if t.strip()]
        else:  # train-only datasets (e.g. pile-10k): hold out the last documents
            n_eval = max(1, round(len(texts) * eval_frac))
            texts, held_texts = texts[:-n_eval], texts[-n_eval:]
        train = {f"train{i:06d}": t for i, t in enumerate(texts)}
        held = {f"{split or 'heldout'}{i:06d}": t for i, t in enumerate(held_texts)}
    else:
        path = Path(corpus)
        if not path.exists():
            raise _missing(path)
        files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
        docs = {f.stem: t for f in files if (t := f.read_text(errors="replace")).strip()}
        if len(docs) == 1:  # one file: hold out its tail
            (name, text), = docs.items()
            cut = int(len(text) * (1 - eval_frac))
            train, held = {f"{name}[head]": text[:cut]}, {f"{name}[tail]": text[cut:]}
        else:
            names = list(docs)
            n_eval = max(1, round(len(names) * eval_frac))
            train = {n: docs[n] for n in names[:-n_eval]}
            held = {n: docs[n] for n in names[-n_eval:]}
    if not "".join(train.values()).strip() or not "".join(held.values()).strip():
        raise ValueError(f"corpus {corpus!r} is empty (no text for training or for the held-out split)")
    return train, held


def _special_ids(tokenizer: Any) -> tuple[int, int]:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    return int(bos), int(eos)


def document_contexts(tokenizer: Any, text: str, context_size: int, vocab_size: int | None = None) -> Tensor:
    """[n, context_size] ids of one document: its tokens (+ EOS) cut into context_size − 1 pieces, BOS first."""
    if context_size < 2:
        raise ValueError(f"context_size = {context_size}: must be >= 2 (BOS + at least one token)")
    bos, eos = _special_ids(tokenizer)
    ids = list(tokenizer([text], add_special_tokens=False)["input_ids"][0]) + [eos]
    n = len(ids) // (context_size - 1)
    body = torch.tensor(ids[: n * (context_size - 1)], dtype=torch.long).view(n, context_size - 1)
    out = torch.cat([torch.full((n, 1), bos, dtype=torch.long), body], 1)
    # A tokenizer from another model (random-init tests) may exceed the vocab: wrap the ids around.
    return out % vocab_size if vocab_size else out


@dataclass
class TokenSet:
    """Contexts [n, context_size] (position 0 = BOS), the document of each context and the documents' names."""

    ids: Tensor
    doc: Tensor
    doc_names: list[str]
    doc_contexts: dict[str, int] = field(default_factory=dict)
    """Contexts available per document (before any budget)."""

    def counts(self) -> dict[str, int]:
        """Contexts taken per document."""
        c = torch.bincount(self.doc, minlength=len(self.doc_names)).tolist()
        return {n: int(v) for n, v in zip(self.doc_names, c, strict=True)}


def _allocate(sizes: list[int], n: int) -> list[int]:
    """Split n contexts over documents proportionally to their sizes, at least one each (largest remainder)."""
    total = sum(sizes)
    if n >= total:
        return list(sizes)
    if n < len(sizes):
        raise ValueError(f"a budget of {n} contexts cannot cover all {len(sizes)} training documents")
    base = [1] * len(sizes)
    rest = n - len(sizes)
    share = [rest * (s - 1) / max(1, total - len(sizes)) for s in sizes]
    alloc = [b + int(q) for b, q in zip(base, share, strict=True)]
    left = n - sum(alloc)
    order = sorted(range(len(sizes)), key=lambda i: -(share[i] - int(share[i])))
    for i in order:
        if left == 0:
            break
        if alloc[i] < sizes[i]:
            alloc[i] += 1
            left -= 1
    return [min(a, s) for a, s in zip(alloc, sizes, strict=True)]


def training_contexts(tokenizer: Any, docs: dict[str, str], context_size: int, n_contexts: int, seed: int,
                      vocab_size: int | None = None) -> TokenSet:
    """`n_contexts` training contexts from every document (proportional, ≥ 1 each), seeded and shuffled.

    n_contexts = 0 takes every context of every document.
    """
    names = list(docs)
    per_doc = [document_contexts(tokenizer, docs[n], context_size, vocab_size) for n in names]
    sizes = [p.shape[0] for p in per_doc]
    if sum(sizes) == 0:
        raise ValueError(f"the training documents have too few tokens for one context of {context_size}")
    keep = [(i, p) for i, p in enumerate(per_doc) if p.shape[0] > 0]
    alloc = _allocate([p.shape[0] for _, p in keep], n_contexts if n_contexts > 0 else sum(sizes))
    g = torch.Generator().manual_seed(seed)
    ids, doc = [], []
    for (i, p), a in zip(keep, alloc, strict=True):
        pick = torch.randperm(p.shape[0], generator=g)[:a].sort().values
        ids.append(p[pick])
        doc.append(torch.full((a,), i, dtype=torch.long))
    ids_t, doc_t = torch.cat(ids), torch.cat(doc)
    perm = torch.randperm(ids_t.shape[0], generator=g)
    return TokenSet(ids_t[perm], doc_t[perm], names, dict(zip(names, sizes, strict=True)))


def heldout_contexts(tokenizer: Any, docs: dict[str, str], context_size: int, max_contexts: int = 0,
                     vocab_size: int | None = None) -> TokenSet:
    """Held-out contexts in document order; `max_contexts` > 0 keeps the first ones (0 = all)."""
    names = list(docs)
    per_doc = [document_contexts(tokenizer, docs[n], context_size, vocab_size) for n in names]
    ids = torch.cat(per_doc)
    doc = torch.cat([torch.full((p.shape[0],), i, dtype=torch.long) for i, p in enumerate(per_doc)])
    if ids.shape[0] == 0:
        raise ValueError(f"the held-out documents have too few tokens for one context of {context_size}")
    if max_contexts > 0:
        ids, doc = ids[:max_contexts], doc[:max_contexts]
    return TokenSet(ids, doc, names, {n: p.shape[0] for n, p in zip(names, per_doc, strict=True)})
