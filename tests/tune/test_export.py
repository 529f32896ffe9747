"""Export artifacts, atomicity, and running the exported model with `medtune generate`."""

import hashlib
import json
import os
import subprocess

import pytest
from rich.console import Console

from tests.conftest import answering_brackets
from tests.tune.conftest import MEDTUNE
from tune.errors import UserError

pytestmark = pytest.mark.slow


def _tree(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_manifest_lists_every_file_with_its_sha256(sweep):
    out, _ = sweep
    export = out / "export"
    lines = (export / "checksums.sha256").read_text().splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in lines)
    files = _tree(export)
    files.pop("checksums.sha256")
    assert listed == files


def test_failed_export_leaves_the_destination_as_it_was(sweep, monkeypatch):
    import tune.export as export_module

    out, _ = sweep
    before = _tree(out / "export")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(export_module, "write_model_card", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        export_module.export_best(out, Console(quiet=True))
    assert _tree(out / "export") == before
    assert not [p for p in out.iterdir() if p.name.startswith(".export")]


def test_export_to_a_file_is_refused(sweep, tmp_path):
    from tune.export import export_best

    out, _ = sweep
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    with pytest.raises(UserError, match=r"export destination .*a-file is a file"):
        export_best(out, Console(quiet=True), out=target)
    assert target.read_text() == "not a folder"


def _medtune(*args, stdin=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [MEDTUNE, *args], input=stdin, env=env, capture_output=True, text=True, timeout=300
    )


def test_generate_answers_one_question(sweep):
    out, _ = sweep
    proc = _medtune("generate", str(out / "export"), "What is asthma?", "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_generate_prints_the_answer_as_it_is_generated(sweep):
    """One question's answer is written piece by piece as its tokens come (the pieces
    `complete_many(on_step=)` sees grow), not once it is whole."""
    import io

    from tune.cli import _parser
    from tune.console import make_console
    from tune.generate import Ask, ExportedModel, run_generate

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.writes = []

        def write(self, text):
            self.writes.append(text)
            return super().write(text)

    out, _ = sweep
    grown = []
    ExportedModel(out / "export").complete_many(
        [Ask("What is asthma?", max_new_tokens=8)],
        on_step=lambda _, partials: grown.append(partials[0].text),
    )
    pieces = [text for before, text in zip([""] + grown, grown, strict=False) if text != before]
    assert len(pieces) > 1  # else the test would not tell a stream from one write
    file = Writes()
    console = make_console()
    console.file = file
    argv = ["generate", str(out / "export"), "What is asthma?", "--max-new-tokens", "8"]
    args = _parser().parse_args(argv)  # the command line's own arguments
    assert run_generate(args, console) == 0
    written = [w for w in file.writes if w]
    assert ["".join(written[: n + 1]) for n in range(len(pieces))] == pieces
    assert file.getvalue() == pieces[-1] + "\n"


def test_generate_reads_questions_until_an_empty_line(sweep):
    out, _ = sweep
    proc = _medtune(
        "generate",
        str(out / "export"),
        "--max-new-tokens",
        "4",
        stdin="What is gout?\nWhat is acne?\n\nnot asked\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "ask a question" in proc.stdout
    # Answered together, in order, each as alone; nothing after the empty line.
    from tune.generate import ExportedModel

    model = ExportedModel(out / "export")
    alone = [model.answer(q, max_new_tokens=4) for q in ("What is gout?", "What is acne?")]
    assert proc.stdout.splitlines()[2:] == alone


def test_generate_prints_the_answer_as_it_is_even_when_it_looks_like_markup(sweep, tmp_path):
    """Model output is text, not rich markup: "[/]" once raised rich's MarkupError, and an
    answer such as "[b]" vanished."""
    out, _ = sweep
    model_dir = answering_brackets(out / "export", tmp_path / "export[brackets]")
    from tune.generate import ExportedModel

    answer = ExportedModel(model_dir).answer("What is gout?", max_new_tokens=9)
    assert answer == "[/][/][/]"

    proc = _medtune("generate", str(model_dir), "What is gout?", "--max-new-tokens", "9")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == answer + "\n"

    piped = _medtune("generate", str(model_dir), "--max-new-tokens", "9", stdin="Why?\nHow?\n")
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert lines[0].startswith("export[brackets]: ask a question")
    assert lines[2:] == [answer, answer]


def test_generate_refuses_a_question_longer_than_the_model_reads(sweep):
    """One line, exit 2, no answer: the model's positions hold the prompt and the answer."""
    from tune.generate import Ask, ExportedModel

    out, _ = sweep
    model = ExportedModel(out / "export")
    long = "Why? " * 360
    tokens = model.prompt_tokens(Ask(long))
    assert tokens + 128 < model.context_length < tokens + 1000
    proc = _medtune("generate", str(out / "export"), long, "--max-new-tokens", "1000")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"medtune: error: the question: its prompt is {tokens} tokens and the answer may take "
        f"1000; export reads at most {model.context_length}; shorten it, or lower "
        "--max-new-tokens (now 1000)\n"
    )
    piped = _medtune(
        "generate",
        str(out / "export"),
        "--max-new-tokens",
        "1000",
        stdin=f"What is gout?\n{long}\n",
    )
    assert piped.returncode == 2 and piped.stderr.startswith("medtune: error: question 2: its ")
    assert len(piped.stdout.splitlines()) == 2  # the greeting only: no question was answered


def test_generate_asks_with_the_system_prompt_given(sweep):
    """--system replaces the training system prompt: seen in the prompt's length, which the
    refusal of a too-long question states (the random model answers alike either way)."""
    from tune.generate import Ask, ExportedModel

    out, _ = sweep
    model = ExportedModel(out / "export")
    question, system = "What is gout?", "Answer as a careful physician would, in plain words."
    with_system = model.prompt_tokens(Ask(question, system))
    assert with_system > model.prompt_tokens(Ask(question))
    budget = model.context_length - with_system + 1  # fits without the system prompt only
    proc = _medtune(
        "generate",
        str(out / "export"),
        question,
        "--system",
        system,
        "--max-new-tokens",
        str(budget),
    )
    assert proc.returncode == 2, proc.stderr
    assert f"its prompt is {with_system} tokens and the answer may take {budget}" in proc.stderr


def test_generate_refuses_a_folder_that_is_no_export(sweep):
    out, _ = sweep
    proc = _medtune("generate", str(out), "What is asthma?")
    assert proc.returncode == 2
    assert proc.stderr.startswith("medtune: error: ") and "not a medtune export" in proc.stderr


def test_export_of_a_trial_chosen_by_hand(sweep, tmp_path):
    out, _ = sweep
    summary = json.loads((out / "sweep_summary.json").read_text())
    best = summary["best"]["trial_id"]
    other = next(
        t for t in summary["trials"] if t["trial_id"] != best and t["best_eval_loss"] is not None
    )
    before = _tree(out / "export")
    dest = tmp_path / "by-hand"
    proc = _medtune("export", str(out), "--trial", other["trial_id"], "--out", str(dest))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Chosen: trial {other['trial_id']} " in proc.stdout
    metrics = json.loads((dest / "metrics.json").read_text())
    # The base model's half of the scoring is the sweep's own export's, kept, not redone.
    assert "The base model's test scores: kept from an export at " in proc.stdout
    assert "Scored the base model" not in proc.stdout and "Scored the tuned model" in proc.stdout
    first = json.loads((out / "export" / "metrics.json").read_text())
    assert metrics["base"] == first["base"]
    assert [s["base"] for s in metrics["samples"]] == [s["base"] for s in first["samples"]]
    chosen = metrics["best_trial"]
    assert metrics["chosen_by"] == "--trial" and metrics["confirmation"] is None
    assert chosen["trial_id"] == other["trial_id"]
    assert chosen["eval_loss"] == pytest.approx(other["best_eval_loss"])  # its best evaluation
    assert chosen["checkpoint"].startswith(f"trial_{other['trial_id']}/")
    adapter = "adapter_model.safetensors"
    assert (dest / "adapter" / adapter).read_bytes() == (
        out / chosen["checkpoint"] / adapter
    ).read_bytes()
    assert (
        f"Chosen by hand (`medtune export --trial {other['trial_id']}`)"
        in (dest / "README.md").read_text()
    )
    assert _tree(out / "export") == before  # the sweep's own export is left as it was


def test_export_of_a_trial_the_sweep_does_not_have_is_refused(sweep, tmp_path):
    out, _ = sweep
    summary = json.loads((out / "sweep_summary.json").read_text())
    proc = _medtune("export", str(out), "--trial", "nope1234", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("medtune: error: --trial nope1234: no such trial in ")
    assert all(t["trial_id"] in line for t in summary["trials"])
    assert not (tmp_path / "x").exists()
