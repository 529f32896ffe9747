"""Scores that training, the sweep and export share: answer-token loss, generation, ROUGE."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from trainables.data import Record
from trainables.loss import answer_logits, answer_token_loss
from trainables.prompts import IGNORE_INDEX, collate, prompt_text

__all__ = [
    "DECISIONS",
    "answer_loss",
    "classification_scores",
    "decision_accuracy",
    "decision_scores",
    "encode_decisions",
    "Completion",
    "generate_answers",
    "generate_completions",
    "perplexity",
    "rouge",
]


@torch.no_grad()
def answer_loss(
    model,
    examples: list[dict],
    batch_size: int,
    pad_id: int,
    on_batch: Callable[[], None] | None = None,
) -> float:
    """Mean negative log-likelihood per answer token over all examples (token-weighted).

    `on_batch` is called as each batch begins (the trial's stall watchdog)."""
    was_training = model.training
    model.eval()
    # Similar lengths in a batch waste less compute on padding.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        if on_batch is not None:
            on_batch()
        batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # labels shift by one
        if n == 0:
            continue
        total += float(answer_token_loss(model, batch, reduction="sum"))
        count += n
    model.train(was_training)
    return total / count if count else float("nan")


def perplexity(loss: float) -> float:
    # Clamp: an untrained model's loss can overflow exp(); 50 nats is already meaningless.
    return math.exp(min(loss, 50.0))


@dataclass
class Completion:
    """One greedy answer and what it took, in tokens."""

    text: str
    prompt_tokens: int
    completion_tokens: int  # the answer's tokens, the end-of-sequence token not counted
    stopped: bool  # it ended at an end-of-sequence token or a stop string, not max_new_tokens

    def final(self, max_new_tokens: int) -> bool:
        """Whether this answer (one of `generate_completions`' `on_step` partials) is whole:
        it stopped, or it has all of its `max_new_tokens`."""
        return self.stopped or self.completion_tokens >= max_new_tokens


def generate_answers(
    model,
    tokenizer,
    records: list[Record],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    system_prompt: str | None = None,
) -> list[str]:
    """Greedy answers, batched with left padding, prompted as in training."""
    completions = generate_completions(
        model,
        tokenizer,
        records,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system_prompt=system_prompt,
    )
    return [c.text for c in completions]


@torch.no_grad()
def generate_completions(
    model,
    tokenizer,
    records: list[Record],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    system_prompt: str | None = None,
    limits: list[int] | None = None,
    histories: list[Sequence[dict]] | None = None,
    on_step: Callable[[int, list[Completion]], None] | None = None,
    dropped: Callable[[int], bool] | None = None,
    stops: list[Sequence[str]] | None = None,
) -> list[Completion]:
    """`generate_answers` with each answer's token counts and why it ended.

    `limits`: each record's own max_new_tokens (at most `max_new_tokens`), as if generated
    alone with it; a batch stops once every answer has met its end-of-sequence token or its
    limit. `histories`: each record's earlier conversation (`prompt_text`'s `history`).
    `on_step(start, partials)`: called after every generated token with the answers of the
    batch that begins at record `start` so far (`Completion.text` holds only what later tokens
    cannot change; an answer is final once it has stopped or met its limit). `dropped(i)`:
    whether record `i`'s answer is no longer wanted (its client left); it ends at the next
    token, and a batch whose answers are all ended stops. `stops`: each record's stop
    strings (OpenAI's `stop`): its answer ends once one appears and is cut before it, as
    `stopped`; a growing answer never shows the start of one."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    completions: list[Completion] = []
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            texts = [
                prompt_text(
                    tokenizer,
                    r.question,
                    r.context,
                    r.system or system_prompt,
                    history=histories[start + i] if histories else (),
                )
                for i, r in enumerate(chunk)
            ]
            enc = tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                add_special_tokens=not tokenizer.chat_template,
            ).to(device)
            caps = [
                min(limits[start + i], max_new_tokens) if limits else max_new_tokens
                for i in range(len(chunk))
            ]
            prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
            row_stops = [tuple(stops[start + i]) if stops else () for i in range(len(chunk))]
            follow = _Answers(tokenizer, eos, caps, prompt_tokens, row_stops)
            rows_done = _RowsDone(follow, enc["input_ids"].shape[1], start, dropped)
            out = model.generate(
                **enc,
                max_new_tokens=max(caps),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([rows_done]),
                streamer=None if on_step is None else _Steps(follow, start, on_step),
            )
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            completions += [follow.completion(i, ids, final=True) for i, ids in enumerate(new)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return completions


class _Answers:
    """A batch's answers read from its generated token ids: each cut at its first
    end-of-sequence token, stop string or limit, and decoded."""

    def __init__(
        self,
        tokenizer,
        eos: set[int],
        limits: list[int],
        prompt_tokens: list[int],
        stops: list[tuple[str, ...]],
    ):
        self.tokenizer = tokenizer
        self.eos = eos
        self.limits = limits
        self.prompt_tokens = prompt_tokens
        self.stops = stops
        # Tokenizers that tidy spaces ("do n't" -> "don't") change text before later tokens.
        self.tidies = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))

    def answer(self, row: int, ids: list[int]) -> tuple[list[int], str, bool]:
        """Row `row`'s answer tokens in `ids` (its generated tokens so far), their text, and
        whether an end-of-sequence token ended it (a row that ended is padded after it)."""
        ids = ids[: self.limits[row]]
        end = next((i for i, t in enumerate(ids) if t in self.eos), None)
        answer = ids if end is None else ids[:end]
        return answer, self.tokenizer.decode(answer, skip_special_tokens=True), end is not None

    def stop_at(self, row: int, text: str) -> int | None:
        """Where the first of row `row`'s stop strings begins in `text`, if one is there."""
        found = [i for i in (text.find(s) for s in self.stops[row]) if i >= 0]
        return min(found) if found else None

    def completion(self, row: int, ids: list[int], *, final: bool) -> Completion:
        """Row `row`'s answer in `ids`. Unless `final` or ended, its text is only the part that
        later tokens cannot change."""
        answer, text, eos = self.answer(row, ids)
        if (cut := self.stop_at(row, text)) is not None:
            return Completion(text[:cut].strip(), self.prompt_tokens[row], len(answer), True)
        if final or eos or len(answer) == self.limits[row]:
            text = text.strip()
        else:
            text = _settled(_before_stops(text, self.stops[row]), self.tidies)
        return Completion(text, self.prompt_tokens[row], len(answer), eos)


def _before_stops(text: str, stops: tuple[str, ...]) -> str:
    """`text` without an ending that could be the start of a stop string."""
    cut = 0
    for stop in stops:
        cut = max([cut] + [k for k in range(1, len(stop)) if text.endswith(stop[:k])])
    return text[: len(text) - cut]


def _settled(text: str, tidies: bool) -> str:
    """The part of an unfinished answer that later tokens leave as it is: without the
    whitespace around it or a character still missing its bytes (U+FFFD), and, for a
    tokenizer that tidies spaces, without its last word."""
    text = text.lstrip().rstrip("\ufffd").rstrip()
    if tidies:
        text = text[: max(text.rfind(" "), text.rfind("\n"), 0)].rstrip()
    return text


class _Steps(BaseStreamer):
    """The `generate` streamer behind `on_step`: collects each row's tokens as they come."""

    def __init__(self, answers: _Answers, start: int, on_step: Callable):
        self.answers, self.start, self.on_step = answers, start, on_step
        self.rows: list[list[int]] | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.rows is None:  # the first put is the prompt
            self.rows = [[] for _ in range(value.shape[0])]
            return
        for row, token in zip(self.rows, value.view(-1).tolist(), strict=True):
            row.append(token)
        self.on_step(
            self.start,
            [self.answers.completion(i, ids, final=False) for i, ids in enumerate(self.rows)],
        )

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """Each row ends at its own limit, or as soon as its answer holds a stop string or is
    dropped (either makes the length it reached its limit)."""

    def __init__(self, answers: _Answers, prompt_length: int, start: int, dropped):
        self.answers = answers
        self.prompt_length = prompt_length
        self.start = start
        self.dropped = dropped

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        length = input_ids.shape[1] - self.prompt_length
        limits = self.answers.limits
        for i in range(len(limits)):
            if length >= limits[i]:
                continue
            if self.dropped is not None and self.dropped(self.start + i):
                limits[i] = length
            elif self.answers.stops[i]:
                _, text, eos = self.answers.answer(i, input_ids[i, self.prompt_length :].tolist())
                if not eos and self.answers.stop_at(i, text) is not None:
                    limits[i] = length
        return torch.tensor([length >= n for n in limits], device=input_ids.device)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1, as `evaluate.load("rouge")` computes it (same rouge-score core)."""
    # Imported here: rouge-score brings nltk (275 modules, 14.4 MiB of private memory), which
    # every trial process would load for a score only export computes.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        for key, score in scorer.score(ref, pred).items():
            sums[key] += score.fmeasure
    n = max(1, len(predictions))
    return {k: v / n for k, v in sums.items()}


DECISIONS = ("yes", "no", "maybe")


def decision_scores(
    model,
    tokenizer,
    records: list[Record],
    *,
    max_length: int,
    system_prompt: str | None = None,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, float]:
    """PubMedQA-style yes/no/maybe: accuracy and macro-F1 over `records` (with `label`).

    The decision is read by likelihood, not by parsing a generation: each of the three answers
    is scored as the completion of the training prompt (summed log-probability of its answer
    tokens, the closing token included) and the most likely one is the prediction. The base
    model is read the same way, so the two scores compare; so is a trial's `eval_accuracy`.
    """
    encoded = encode_decisions(
        tokenizer, records, max_length=max_length, system_prompt=system_prompt
    )
    return decision_accuracy(model, encoded, tokenizer.pad_token_id, on_batch=on_batch)


def encode_decisions(
    tokenizer, records: list[Record], *, max_length: int, system_prompt: str | None = None
) -> list[dict]:
    """Each labelled record's three answers as completions of its prompt, and its label index.

    Done once in the driver, so a trial scores decisions without a tokenizer. A record whose
    question leaves no room for an answer at `max_length` is left out, as in training.
    """
    from dataclasses import replace

    from trainables.prompts import encode_record

    out = []
    for r in records:
        if r.label not in DECISIONS:
            continue
        options = [
            encode_record(tokenizer, replace(r, answer=d), max_length, system_prompt)[0]
            for d in DECISIONS
        ]
        if all(o is not None for o in options):
            out.append({"options": options, "label": DECISIONS.index(r.label)})
    return out


@torch.no_grad()
def decision_accuracy(
    model,
    encoded: list[dict],
    pad_id: int,
    batch_size: int = len(DECISIONS),
    on_batch: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Accuracy and macro-F1 of the most likely answer of each `encode_decisions` item.

    `batch_size` counts sequences; the three options of an item stay in one batch. `on_batch`
    is called as each batch begins.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_batch = max(1, batch_size // len(DECISIONS))
    predictions = []
    for start in range(0, len(encoded), per_batch):
        if on_batch is not None:
            on_batch()
        items = encoded[start : start + per_batch]
        options = [o for item in items for o in item["options"]]
        batch = {k: v.to(device) for k, v in collate(options, pad_id).items()}
        logits, targets = answer_logits(model, batch)
        token_logp = -F.cross_entropy(logits.float(), targets, reduction="none")
        # Which option each scored token belongs to (answer_logits keeps row-major order).
        rows = (batch["labels"][:, 1:] != IGNORE_INDEX).nonzero()[:, 0]
        scores = torch.zeros(len(options), device=device).index_add_(0, rows, token_logp)
        scores = scores.view(len(items), len(DECISIONS))
        predictions.extend(DECISIONS[int(i)] for i in scores.argmax(-1))
    model.train(was_training)
    return classification_scores(predictions, [DECISIONS[item["label"]] for item in encoded])


def classification_scores(predictions: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the three decisions (a class never seen scores F1 0)."""
    n = max(1, len(labels))
    accuracy = sum(p == t for p, t in zip(predictions, labels, strict=True)) / n
    f1s = []
    for c in DECISIONS:
        tp = sum(p == c and t == c for p, t in zip(predictions, labels, strict=True))
        fp = sum(p == c and t != c for p, t in zip(predictions, labels, strict=True))
        fn = sum(p != c and t == c for p, t in zip(predictions, labels, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}
