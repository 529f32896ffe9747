"""The medtune service: config, CLI (`medtune ...`), sweep orchestration and export.

Ray's own module is imported as `from ray import tune as ray_tune` throughout, so the two
`tune`s never blur.
"""

from tune.config import ConfigError, SweepConfig, load_config

__all__ = ["ConfigError", "SweepConfig", "load_config"]
