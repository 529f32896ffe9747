"""The console every command prints through (tune/console.py)."""

import pytest

from tune.console import duration


@pytest.mark.parametrize(
    "seconds, shown", [(0.4, "0 s"), (52.6, "53 s"), (242, "4 min 2 s"), (3790, "1 h 3 min")]
)
def test_a_time_is_shown_in_words(seconds, shown):
    assert duration(seconds) == shown
