"""Tokenized splits: every record encoded once, with its counts, and cached on disk.

    split = encode_split_cached(tokenizer, records, max_length=256, cache_dir=root / "tokens")
    split.examples      # what `encode_records` gives: input_ids + labels (answer only)
    split.from_cache    # True when no tokenizer ran

One pass gives both what training needs (examples cut at `max_length`) and what the data
report shows (full lengths, truncation, context cuts, drops): a record is encoded once without
a limit, and only a record whose context must be shortened is encoded a second time.

The cache file of a split is keyed by a hash of everything that changes its tokens: the
records (content and order), the tokenizer (its full serialization, chat template and special
tokens), `max_length`, the system prompt, and the source of this module and of
`trainables.prompts` (the prompt format). It is written to a temporary file and renamed, so a
crash never leaves half a file; an unreadable one is a miss and is written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainables import prompts
from trainables.data import Record, fingerprint
from trainables.prompts import IGNORE_INDEX, MIN_ANSWER_TOKENS, encode_record

__all__ = ["EncodedSplit", "encode_split", "encode_split_cached", "token_cache_key"]

_FORMAT = 1  # bump when the file layout changes


@dataclass
class EncodedSplit:
    """One split's examples at `max_length` and what encoding it found.

    `lengths` are prompt + answer tokens of every record before any cut; `truncated` counts
    examples whose answer was cut, `context_cut` those whose context was shortened to fit,
    `too_long` records dropped because the question leaves no room for an answer.
    """

    examples: list[dict]
    lengths: list[int]
    truncated: int = 0
    context_cut: int = 0
    too_long: int = 0
    from_cache: bool = False
    cache_file: str | None = field(default=None, compare=False)
    fingerprint: str | None = field(default=None, compare=False)  # of the records encoded


def encode_split(
    tokenizer, records: list[Record], max_length: int, system_prompt: str | None = None
) -> EncodedSplit:
    """Encode a split exactly as `encode_records` would, counting what the report shows."""
    out = EncodedSplit(examples=[], lengths=[])
    for r in records:
        # Encoded with no limit: the whole prompt and answer the example is cut from.
        full, _ = encode_record(tokenizer, r, 1 << 30, system_prompt)
        prompt = sum(label == IGNORE_INDEX for label in full["labels"])
        answer = len(full["input_ids"]) - prompt
        out.lengths.append(prompt + answer)
        if prompt + answer <= max_length:
            out.examples.append(full)
            continue
        # encode_record's rule: the prompt must leave room for some of the answer.
        room = max_length - min(MIN_ANSWER_TOKENS, answer)
        if prompt > room and r.context:
            # The context is shortened first; only the real encoding tells what remains.
            example, cut = encode_record(tokenizer, r, max_length, system_prompt)
        elif prompt > room:
            example, cut = None, False
        else:
            # The prompt fits whole, so encode_record would keep it and cut the answer: the
            # same as cutting the full encoding at max_length.
            example = {k: v[:max_length] for k, v in full.items()}
            cut = True
        if example is None:
            out.too_long += 1
            continue
        out.context_cut += prompt > room
        out.truncated += cut
        out.examples.append(example)
    return out


def encode_split_cached(
    tokenizer,
    records: list[Record],
    *,
    max_length: int,
    system_prompt: str | None = None,
    cache_dir: Path | None,
) -> EncodedSplit:
    """`encode_split`, read from `cache_dir` when the same tokens were made before.

    `cache_dir=None` encodes without the cache.
    """
    if cache_dir is None:
        return encode_split(tokenizer, records, max_length, system_prompt)
    records_fingerprint = fingerprint(records)
    key = token_cache_key(tokenizer, records, max_length, system_prompt, records_fingerprint)
    path = Path(cache_dir) / f"{key}.npz"
    split = _read(path)
    if split is None:
        split = encode_split(tokenizer, records, max_length, system_prompt)
        _write(path, split)
    split.cache_file, split.fingerprint = str(path), records_fingerprint
    return split


def token_cache_key(
    tokenizer,
    records: list[Record],
    max_length: int,
    system_prompt: str | None,
    records_fingerprint: str | None = None,
) -> str:
    """sha256 over everything that changes the tokens of `records` (whose `fingerprint` may
    be given when already known)."""
    code = hashlib.sha256()
    for module in (prompts.__file__, __file__):
        code.update(Path(module).read_bytes())
    parts = {
        "format": _FORMAT,
        "code": code.hexdigest(),
        "records": records_fingerprint or fingerprint(records),
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "system_prompt": system_prompt,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# -- helpers ---------------------------------------------------------------------------------


def _tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The fast tokenizer's whole definition: vocabulary, merges, normalizer, templates.
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    specials = {
        "class": type(tokenizer).__name__,
        "chat_template": tokenizer.chat_template,
        "special_tokens": tokenizer.special_tokens_map,
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
    }
    h.update(json.dumps(specials, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _write(path: Path, split: EncodedSplit) -> None:
    """Flat arrays (ids, offsets, prompt lengths) in one .npz, renamed into place."""
    ids = [t for ex in split.examples for t in ex["input_ids"]]
    offsets = np.cumsum([0] + [len(ex["input_ids"]) for ex in split.examples])
    prompt_lengths = [sum(x == IGNORE_INDEX for x in ex["labels"]) for ex in split.examples]
    counts = {"truncated": split.truncated, "context_cut": split.context_cut}
    counts["too_long"] = split.too_long
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                input_ids=np.asarray(ids, dtype=np.int64),
                offsets=offsets.astype(np.int64),
                prompt_lengths=np.asarray(prompt_lengths, dtype=np.int64),
                lengths=np.asarray(split.lengths, dtype=np.int64),
                counts=np.frombuffer(json.dumps(counts).encode(), dtype=np.uint8),
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> EncodedSplit | None:
    try:
        with np.load(path) as f:
            ids = f["input_ids"].tolist()
            offsets = f["offsets"].tolist()
            prompt_lengths = f["prompt_lengths"].tolist()
            lengths = f["lengths"].tolist()
            counts = json.loads(f["counts"].tobytes())
    # Absent, cut short, or written by another layout: a miss, written again.
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
        return None
    examples = []
    for start, end, prompt in zip(offsets[:-1], offsets[1:], prompt_lengths, strict=True):
        seq = ids[start:end]
        examples.append({"input_ids": seq, "labels": [IGNORE_INDEX] * prompt + seq[prompt:]})
    return EncodedSplit(examples=examples, lengths=lengths, from_cache=True, **counts)
