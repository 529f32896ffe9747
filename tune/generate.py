"""`medtune generate MODEL_DIR ["question"]`: answer with an exported model.

The question is prompted exactly as in training (the tokenizer's chat template or the plain
template, with the training system prompt from `medtune_prompt.json`), and its answer is
printed as it is generated. Without a question it reads questions from the terminal until an
empty line or end of input, answering each in turn; from a file or a pipe it reads them all
(to an empty line or the end) and answers them 8 at a time, in order.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.markup import escape

from trainables.data import Record
from trainables.evaluation import Completion, generate_completions
from trainables.models import load_model, load_tokenizer
from trainables.prompts import prompt_text
from tune.errors import UserError
from tune.export_layout import PROMPT_FILE, check_export

__all__ = ["Ask", "ExportedModel", "grown", "run_generate"]

BATCH = 8  # questions from a file answered together


class Ask(NamedTuple):
    """One question for `ExportedModel.complete_many`."""

    question: str
    system: str | None = None  # None: the training system prompt
    max_new_tokens: int = 128
    history: tuple[dict, ...] = ()  # earlier messages: {"role": "user"/"assistant", "content"}
    stop: tuple[str, ...] = ()  # strings that end the answer, cut before them (OpenAI's `stop`)


class ExportedModel:
    """A medtune export loaded for inference."""

    def __init__(self, model_dir: Path):
        model_dir = Path(model_dir)
        check_export(model_dir)
        meta = model_dir / PROMPT_FILE
        self.name = model_dir.name
        self.prompt = json.loads(meta.read_text())
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = load_model(str(model_dir)).eval()

    def answer(self, question: str, *, system: str | None = None, max_new_tokens: int = 128) -> str:
        return self.complete(question, system=system, max_new_tokens=max_new_tokens).text

    def complete(
        self,
        question: str,
        *,
        system: str | None = None,
        max_new_tokens: int = 128,
        history: tuple[dict, ...] = (),
    ) -> Completion:
        """The greedy answer with its token counts and why it ended."""
        return self.complete_many([Ask(question, system, max_new_tokens, history)])[0]

    @property
    def context_length(self) -> int | None:
        """The most positions the model reads (prompt and answer), where its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def too_long(self, ask: Ask) -> str | None:
        """Why `ask` does not fit the positions the model reads (its prompt and answer
        together), or None when it fits or the model's config names no limit."""
        limit = self.context_length
        if limit is None or (tokens := self.prompt_tokens(ask)) + ask.max_new_tokens <= limit:
            return None
        return (
            f"its prompt is {tokens} tokens and the answer may take {ask.max_new_tokens}; "
            f"{self.name} reads at most {limit}"
        )

    def prompt_tokens(self, ask: Ask) -> int:
        """How many tokens `ask`'s prompt is, as `complete_many` builds it."""
        text = prompt_text(
            self.tokenizer,
            ask.question,
            system=ask.system or self.prompt.get("system_prompt"),
            history=ask.history,
        )
        add_special = not self.tokenizer.chat_template  # as generate_completions encodes it
        return len(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def complete_many(
        self,
        asks: list[Ask],
        *,
        on_step: Callable[[int, list[Completion]], None] | None = None,
        dropped: Callable[[int], bool] | None = None,
    ) -> list[Completion]:
        """Greedy answers to several questions in one batch (one pass over the weights per
        generated token for all of them), each as `complete` gives it alone. `on_step` and
        `dropped`: as `generate_completions` takes them, to follow the answers as they grow
        and to end those no longer wanted."""
        records = [
            Record(
                id=str(i), question=a.question, answer="", group="", source="user", system=a.system
            )
            for i, a in enumerate(asks)
        ]
        limits = [a.max_new_tokens for a in asks]
        return generate_completions(
            self.model,
            self.tokenizer,
            records,
            max_new_tokens=max(limits),
            batch_size=len(records),
            system_prompt=self.prompt.get("system_prompt"),
            limits=limits,
            histories=[a.history for a in asks],
            on_step=on_step,
            dropped=dropped,
            stops=[a.stop for a in asks],
        )


def grown(before: str, now: str) -> str:
    """What an answer's text `now` adds to what was shown of it, `before` ("" when nothing, or
    when `now` does not extend it: `generate_completions` keeps a growing answer's text to
    what later tokens leave as it is, so that is only a guard)."""
    return now[len(before) :] if now.startswith(before) else ""


def run_generate(args, console: Console) -> int:
    model = ExportedModel(args.model_dir)
    if args.question:
        ask = Ask(args.question, args.system, args.max_new_tokens)
        _check_fits(model, [ask])
        _print_answer(model, ask, console)
        return 0
    console.print(f"[bold]{escape(model.name)}[/]: ask a question (empty line or Ctrl-D to stop).")
    console.print("[dim]Demo model output, not medical advice.[/]")
    if not sys.stdin.isatty():
        # Questions from a file or a pipe: answered BATCH at a time, in order (a batch of 8
        # takes about a quarter of the time of 8 in turn on a CPU: benchmarks/serve_batch.py).
        questions = list(itertools.takewhile(bool, (line.strip() for line in sys.stdin)))
        asks = [Ask(q, args.system, args.max_new_tokens) for q in questions]
        _check_fits(model, asks)  # all of them before any answer: one line, nothing printed
        for start in range(0, len(asks), BATCH):
            for done in model.complete_many(asks[start : start + BATCH]):
                console.print(done.text, markup=False)
        return 0
    for line in iter(lambda: _ask(console), ""):
        question = line.strip()
        if not question:
            break
        try:
            _check_fits(model, [Ask(question, args.system, args.max_new_tokens)])
        except UserError as e:  # at the prompt: say so and ask again
            console.print(f"[red]{escape(str(e))}[/]")
            continue
        _print_answer(model, Ask(question, args.system, args.max_new_tokens), console)
    return 0


def _print_answer(model: ExportedModel, ask: Ask, console: Console) -> None:
    """Print the answer as it is generated, a piece of text for each token that adds one."""
    shown = ""

    def on_step(_start: int, partials: list[Completion]) -> None:
        nonlocal shown
        if piece := grown(shown, partials[0].text):
            console.print(piece, end="", markup=False)
            shown += piece

    done = model.complete_many([ask], on_step=on_step)[0]
    console.print(grown(shown, done.text), markup=False)


def _check_fits(model: ExportedModel, asks: list[Ask]) -> None:
    """Raise UserError naming the first question too long for the model."""
    for n, ask in enumerate(asks, 1):
        if why := model.too_long(ask):
            which = f"question {n}" if len(asks) > 1 else "the question"
            raise UserError(
                f"{which}: {why}; shorten it, or lower --max-new-tokens (now {ask.max_new_tokens})"
            )


def _ask(console: Console) -> str:
    try:
        return console.input("[bold]question>[/] ")
    except EOFError:
        return ""
