"""How a sweep shares its base with the trials."""

import pytest

from trainables.precision import resolve_precision
from tune.config import load_config
from tune.sweep import shared_weights_format


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.precision=bf16"], "bf16"),  # every trial computes in bf16
        (["train.precision=fp32"], "fp32"),
        # A GPU trial moves the base onto its GPU: not measured there yet, so as loaded.
        (["train.precision=bf16", "resources.gpus_per_trial=1"], "fp32"),
        # auto on a cluster: each node picks its own format, the driver cannot know it.
        (["ray.address=ray://head:10001"], "fp32"),
    ],
)
def test_the_base_is_shared_in_the_format_every_trial_computes_in(overrides, expected):
    assert shared_weights_format(load_config(None, overrides)) == expected


def test_auto_on_this_machine_shares_the_format_its_trials_pick():
    cfg = load_config(None, ["train.precision=auto"])
    assert shared_weights_format(cfg) == resolve_precision("auto", cuda=False)
