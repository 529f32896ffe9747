import pytest

from trainables.data import Record
from trainables.prompts import IGNORE_INDEX, collate, encode_record, encode_records, prompt_text

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _record(question="What causes gout?", answer="Uric acid crystals in a joint.", context=None):
    return Record(id="r", question=question, answer=answer, group="g", source="t", context=context)


@pytest.fixture
def chat_tokenizer(tiny_model_path):
    from trainables.models import load_tokenizer

    tok = load_tokenizer(tiny_model_path)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _answer_part(tok, example):
    ids = [
        i
        for i, lab in zip(example["input_ids"], example["labels"], strict=True)
        if lab != IGNORE_INDEX
    ]
    return tok.decode(ids)


def test_plain_template_labels_only_the_answer(tiny_tokenizer):
    tok = tiny_tokenizer
    assert not tok.chat_template
    example, truncated = encode_record(tok, _record(), max_length=256)
    assert not truncated
    n_prompt = example["labels"].count(IGNORE_INDEX)
    assert tok.decode(example["input_ids"][:n_prompt]) == "Question: What causes gout?\nAnswer:"
    assert _answer_part(tok, example) == " Uric acid crystals in a joint.<|endoftext|>"
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["labels"][-1] == tok.eos_token_id


def test_chat_template_labels_the_assistant_turn(chat_tokenizer):
    tok = chat_tokenizer
    example, _ = encode_record(tok, _record(), max_length=256)
    assert _answer_part(tok, example) == "Uric acid crystals in a joint.<|im_end|>\n"
    n_prompt = example["labels"].count(IGNORE_INDEX)
    prompt = tok.decode(example["input_ids"][:n_prompt])
    assert prompt == prompt_text(tok, "What causes gout?")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_system_prompt_goes_into_the_template(chat_tokenizer):
    text = prompt_text(chat_tokenizer, "Q?", system="Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


HISTORY = (
    {"role": "user", "content": "What causes gout?"},
    {"role": "assistant", "content": "Uric acid crystals."},
)


def test_a_conversation_is_written_as_the_templates_turns(chat_tokenizer):
    text = prompt_text(chat_tokenizer, "And its treatment?", system="Be brief.", history=HISTORY)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat causes gout?<|im_end|>\n"
        "<|im_start|>assistant\nUric acid crystals.<|im_end|>\n"
        "<|im_start|>user\nAnd its treatment?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_conversation_in_the_plain_template_is_earlier_questions_and_answers(tiny_tokenizer):
    text = prompt_text(tiny_tokenizer, "And its treatment?", history=HISTORY)
    assert text == (
        "Question: What causes gout?\nAnswer: Uric acid crystals.\n"
        "Question: And its treatment?\nAnswer:"
    )
    assert prompt_text(tiny_tokenizer, "Q?", history=()) == "Question: Q?\nAnswer:"


def test_long_answer_is_cut_never_the_question(tiny_tokenizer):
    answer = " ".join(["The joint swells and hurts."] * 200)
    example, truncated = encode_record(tiny_tokenizer, _record(answer=answer), max_length=64)
    assert truncated
    assert len(example["input_ids"]) == 64
    n_prompt = example["labels"].count(IGNORE_INDEX)
    assert "What causes gout?" in tiny_tokenizer.decode(example["input_ids"][:n_prompt])


def test_context_is_shortened_before_the_question(tiny_tokenizer):
    context = " ".join(["Serum urate was measured in a cohort of adults."] * 100)
    example, _ = encode_record(tiny_tokenizer, _record(context=context), max_length=96)
    assert example is not None and len(example["input_ids"]) <= 96
    n_prompt = example["labels"].count(IGNORE_INDEX)
    prompt = tiny_tokenizer.decode(example["input_ids"][:n_prompt])
    assert prompt.startswith("Question: What causes gout?\nContext: Serum urate")
    assert len(prompt) < len(context)
    assert n_prompt < 96 - 8  # the answer kept room


def test_question_too_long_is_dropped_and_counted(tiny_tokenizer):
    long_q = "Why " + "really " * 300 + "?"
    examples, stats = encode_records(tiny_tokenizer, [_record(question=long_q), _record()], 64)
    assert len(examples) == 1
    assert stats["too_long"] == 1


def test_collate_pads_without_loss_or_attention(tiny_tokenizer):
    a, _ = encode_record(tiny_tokenizer, _record(), 256)
    b, _ = encode_record(tiny_tokenizer, _record(answer="Crystals."), 256)
    batch = collate([a, b], pad_id=tiny_tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    n_b = len(b["input_ids"])
    assert batch["attention_mask"][1, n_b:].sum() == 0
    assert (batch["labels"][1, n_b:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n_b:] == tiny_tokenizer.pad_token_id).all()
