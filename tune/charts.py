"""The sweep's charts, drawn with matplotlib: inline SVG for the pages, PNG for documents.

Every trial's line carries the SVG id `trial-<id>` (matplotlib's gid), so the page can
highlight the line of the table row under the pointer, and tests can count what was drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import create_trial  # noqa: E402

from tune.sweep_state import SweepState  # noqa: E402

__all__ = [
    "CHARTS",
    "importance",
    "importance_chart",
    "learning_curves",
    "parallel_coordinates",
    "to_png",
    "to_svg",
]

_BEST = "#d6336c"
_OTHER = "#4c6ef5"
_ERRORED = "#868e96"
_MIN_TRIALS_FOR_IMPORTANCE = 3


def learning_curves(state: SweepState) -> Figure:
    """The metric against step for every trial; the best highlighted, ASHA's rungs marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    best = state.best_trial()
    for trial in state.trials:
        if not trial.history:
            continue
        is_best = best is not None and trial.trial_id == best.trial_id
        (line,) = ax.plot(
            [e.step for e in trial.history],
            [e.value for e in trial.history],
            marker="o",
            markersize=4 if is_best else 3,
            linewidth=2.6 if is_best else 1.2,
            color=_BEST if is_best else (_ERRORED if trial.status == "errored" else _OTHER),
            alpha=1.0 if is_best else 0.55,
            linestyle=":" if trial.status == "errored" else "-",
            zorder=3 if is_best else 2,
            label=f"best: trial {trial.trial_id}" if is_best else None,
        )
        line.set_gid(f"trial-{trial.trial_id}")
    for i, step in enumerate(state.rung_steps, 1):
        ax.axvline(step, color="#adb5bd", linestyle="--", linewidth=1, zorder=1)
        ax.annotate(
            f"ASHA rung {i}",
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="#868e96",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel(state.metric)
    ax.set_xlim(0, max(state.max_steps, 1) * 1.02)
    ax.grid(alpha=0.25)
    if best is not None:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{state.metric} per evaluation, every trial", fontsize=10)
    return fig


def parallel_coordinates(state: SweepState) -> Figure:
    """One line per scored trial across its hyperparameters and its best metric value."""
    params = list(state.space)
    scored = [(t, t.best(state.mode)) for t in state.trials]
    scored = [(t, b) for t, b in scored if b is not None]
    axes = [*params, state.metric]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    if not scored:
        _empty(ax, "no trial has reported an evaluation yet")
        return fig
    columns = {p: [_position(state.space[p], t.params.get(p)) for t, _ in scored] for p in params}
    values = [b.value for _, b in scored]
    columns[state.metric] = _scale(values)
    cmap = plt.get_cmap("viridis_r" if state.mode == "min" else "viridis")
    best = state.best_trial()
    order = sorted(range(len(scored)), key=lambda i: scored[i][0] is best)  # best on top
    for i in order:
        trial, b = scored[i]
        is_best = trial is best
        (line,) = ax.plot(
            range(len(axes)),
            [columns[a][i] for a in axes],
            marker="o",
            markersize=3,
            color=_BEST if is_best else cmap(columns[state.metric][i]),
            linewidth=2.6 if is_best else 1.3,
            alpha=1.0 if is_best else 0.8,
        )
        line.set_gid(f"trial-{trial.trial_id}")
    for x, name in enumerate(axes):
        ax.axvline(x, color="#495057", linewidth=1)
        ticks = _axis_ticks(state.space.get(name), values if name == state.metric else None)
        for y, text in ticks:
            ax.annotate(text, (x, y), xytext=(3, -3), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(len(axes)), axes, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlim(-0.2, len(axes) - 0.6)
    for side in ("left", "right", "top", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"hyperparameters against each trial's best {state.metric}", fontsize=10)
    return fig


def importance(state: SweepState) -> dict[str, float] | None:
    """Optuna's importance (its default evaluator, PED-ANOVA) on a study rebuilt from the
    finished trials.

    Each finished trial counts with the best value it reached (a trial ASHA stopped early counts
    with what it reached before it was stopped). None while fewer than three trials have
    finished or nothing varies.
    """
    distributions = _distributions(state.space)
    finished = []
    for t in state.trials:
        b = t.best(state.mode)
        if t.status in ("completed", "stopped") and b is not None:
            params = {k: t.params[k] for k in distributions if k in t.params}
            if len(params) == len(distributions):
                finished.append((params, b.value))
    if len(finished) < _MIN_TRIALS_FOR_IMPORTANCE or not distributions:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if state.mode == "min" else "maximize")
    for params, value in finished:
        study.add_trial(create_trial(params=params, distributions=distributions, value=value))
    try:
        # PED-ANOVA needs no scikit-learn, unlike fANOVA.
        scores = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        )
    except (ValueError, RuntimeError):
        return None  # e.g. every trial sampled the same value
    return {k: float(v) for k, v in scores.items()}


def importance_chart(scores: dict[str, float] | None, metric: str) -> Figure:
    fig, ax = plt.subplots(figsize=(7.5, 2.6), layout="constrained")
    if not scores:
        _empty(ax, f"importance needs at least {_MIN_TRIALS_FOR_IMPORTANCE} finished trials")
        return fig
    names = list(scores)[::-1]
    bars = ax.barh(names, [scores[n] for n in names], color=_OTHER)
    for bar, name in zip(bars, names, strict=True):
        bar.set_gid(f"importance-{name}")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"importance for {metric} (Optuna PED-ANOVA, normalized)")
    ax.grid(axis="x", alpha=0.25)
    ax.set_title("hyperparameter importance", fontsize=10)
    return fig


# name in files and pages -> how to draw it
CHARTS = {
    "learning-curves": learning_curves,
    "parallel-coordinates": parallel_coordinates,
    "importance": lambda state: importance_chart(importance(state), state.metric),
}


def to_svg(fig: Figure) -> str:
    """The figure as an inline <svg> element (no XML prolog, no fixed pixel size)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def to_png(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", dpi=150)
    plt.close(fig)


# -- helpers ---------------------------------------------------------------------------------


def _distributions(space: dict) -> dict:
    out = {}
    for name, d in space.items():
        kind = d.get("type")
        if kind == "choice":
            out[name] = CategoricalDistribution(d["values"])
        elif kind == "int":
            out[name] = IntDistribution(int(d["low"]), int(d["high"]), log=d.get("log", False))
        elif kind in ("uniform", "loguniform"):
            out[name] = FloatDistribution(d["low"], d["high"], log=kind == "loguniform")
    return out


def _position(spec: dict, value) -> float:
    """A hyperparameter value placed on its axis, 0 (low) to 1 (high)."""
    if value is None:
        return math.nan
    if spec.get("type") == "choice":
        choices = spec["values"]
        return choices.index(value) / max(len(choices) - 1, 1) if value in choices else math.nan
    low, high = float(spec["low"]), float(spec["high"])
    if spec.get("type") == "loguniform" or spec.get("log"):
        low, high, value = math.log10(low), math.log10(high), math.log10(float(value))
    return (float(value) - low) / (high - low) if high > low else 0.5


def _scale(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    return [(v - low) / (high - low) if high > low else 0.5 for v in values]


def _axis_ticks(spec: dict | None, values: list[float] | None) -> list[tuple[float, str]]:
    """(position, label) pairs along one axis: each choice, or the two ends of a range."""
    if values is not None:
        return [(0, f"{min(values):.4g}"), (1, f"{max(values):.4g}")]
    if spec.get("type") == "choice":
        return [(_position(spec, v), str(v)) for v in spec["values"]]
    return [(0, f"{spec['low']:.3g}"), (1, f"{spec['high']:.3g}")]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#868e96", transform=ax.transAxes)
    ax.set_axis_off()
