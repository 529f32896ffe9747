"""Search spaces shipped with medtune, and the loader that validates them.

    space = load_space("lora_default")          # a name in this folder, or a YAML path
    distributions = space.to_optuna()           # {name: optuna.distributions.*}

A space file maps each hyperparameter to one distribution:

    learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-3}
    weight_decay:  {type: uniform, low: 0.0, high: 0.1}
    lora_r:        {type: choice, values: [4, 8, 16, 32]}
"""

from search_spaces.space import (
    PARAMETERS,
    SearchSpace,
    SearchSpaceError,
    available_spaces,
    load_space,
)

__all__ = ["PARAMETERS", "SearchSpace", "SearchSpaceError", "available_spaces", "load_space"]
