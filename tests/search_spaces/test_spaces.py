import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from search_spaces import PARAMETERS, SearchSpaceError, available_spaces, load_space


@pytest.mark.parametrize("name", available_spaces())
def test_every_shipped_space_loads(name):
    space = load_space(name)
    dists = space.to_optuna()
    assert {"learning_rate", "lora_r"} <= set(dists)
    assert set(dists) <= set(PARAMETERS)


def test_default_space_is_the_documented_one():
    dists = load_space("lora_default").to_optuna()
    assert dists["learning_rate"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["weight_decay"] == FloatDistribution(0.0, 0.1)
    assert dists["lora_r"] == CategoricalDistribution([4, 8, 16, 32])


def test_space_by_path(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
        "lora_r: {type: int, low: 2, high: 16, log: true}\n"
        "lora_dropout: {type: uniform, low: 0.0, high: 0.3}\n"
    )
    dists = load_space(str(p)).to_optuna()
    assert dists["lora_r"].log and dists["lora_r"].low == 2


LR = "learning_rate: {type: uniform, low: 0.1, high: 1}\n"
RANK = "lora_r: {type: choice, values: [4]}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "learning_rate: {type: loguniform, low: 0, high: 1}\n" + RANK,
            r"learning_rate: a log scale needs low > 0, but got low=0",
        ),
        (
            "learning_rate: {type: uniform, low: 2, high: 1}\n" + RANK,
            r"learning_rate: `low < high` must hold, but got \(low=2.0, high=1.0\)",
        ),
        ("learning_rate: {type: uniform, low: 1, high: 1}\n" + RANK, r"`low < high` must hold"),
        (
            LR + "lora_r: {type: choice, values: []}",
            r"lora_r.values: got \[\]; list should have at least 1 item",
        ),
        (
            LR + "lora_r: {type: choice, values: [0, 8]}",
            r"lora_r: ranks must be positive integers, but got \[0, 8\]",
        ),
        (LR + "lora_r: {type: choice, values: [4.5]}", r"ranks must be positive integers"),
        (LR + "lora_r: {type: int, low: -4, high: 8}", r"ranks must be positive integers"),
        (
            LR + RANK + "batch_size: {type: choice, values: [1]}",
            r"unknown hyperparameter\(s\) \['batch_size'\]; choose from",
        ),
        (LR, r"missing \['lora_r'\]"),
        ("learning_rate: {type: gaussian, low: 0.1, high: 1}\n" + RANK, r"learning_rate"),
        ("learning_rate: [1, 2", r"not valid YAML"),
        ("- 1\n- 2", r"expected a mapping of hyperparameter -> distribution"),
    ],
)
def test_bad_spaces_say_key_value_and_rule(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SearchSpaceError, match=message) as info:
        load_space(str(p))
    assert str(p) in str(info.value)


def test_unknown_space_lists_the_shipped_ones():
    with pytest.raises(SearchSpaceError, match=r"shipped: .*lora_default"):
        load_space("no_such_space")


def _slice(value, low, high, n, log=False):
    """Which of `n` equal slices of [low, high] (log scale if `log`) holds `value`."""
    if log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    return min(int((value - low) / (high - low) * n), n - 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
def test_stratified_points_put_one_in_every_slice_of_every_range(n):
    space = load_space("lora_default")
    points = space.stratified(n, seed=5)
    assert len(points) == n
    lrs = [_slice(p["learning_rate"], 1e-5, 1e-3, n, log=True) for p in points]
    decays = [_slice(p["weight_decay"], 0.0, 0.1, n) for p in points]
    assert sorted(lrs) == sorted(decays) == list(range(n))
    # 4 ranks over n trials: each rank gets its share, n/4 of them, give or take one.
    ranks = [p["lora_r"] for p in points]
    assert {ranks.count(r) for r in (4, 8, 16, 32)} <= {n // 4, -(-n // 4)}
    dists = space.to_optuna()
    for p in points:  # Optuna takes them as they are (an enqueued value outside is re-drawn)
        assert all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in p.items())


def test_stratified_points_depend_on_the_seed_only():
    space = load_space("lora_default")
    assert space.stratified(4, seed=1) == space.stratified(4, seed=1)
    assert space.stratified(4, seed=1) != space.stratified(4, seed=2)


def test_stratified_integer_ranges_give_each_integer_once(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
        "lora_r: {type: int, low: 2, high: 9}\n"
        "lora_alpha: {type: int, low: 1, high: 4, log: true}\n"
    )
    space = load_space(str(p))
    assert sorted(q["lora_r"] for q in space.stratified(8, seed=0)) == list(range(2, 10))
    # log=True: equal slices of log(1)..log(5), so small values own more of the points.
    alphas = [q["lora_alpha"] for q in space.stratified(100, seed=0)]
    assert set(alphas) == {1, 2, 3, 4}
    assert alphas.count(1) > alphas.count(2) > alphas.count(4)
