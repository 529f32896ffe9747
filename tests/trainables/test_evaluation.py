import math
import subprocess
import sys
from dataclasses import replace

import pytest

from trainables.data import Record
from trainables.evaluation import (
    DECISIONS,
    Completion,
    answer_loss,
    classification_scores,
    decision_scores,
    generate_answers,
    generate_completions,
    perplexity,
    rouge,
)
from trainables.models import load_model
from trainables.prompts import IGNORE_INDEX, encode_record


def test_classification_scores_by_hand():
    labels = ["yes", "yes", "no", "maybe"]
    preds = ["yes", "no", "no", "yes"]
    scores = classification_scores(preds, labels)
    assert scores["accuracy"] == 0.5
    # F1: yes 2*1/(2+1+1)=0.5, no 2*1/(2+1+0)=2/3, maybe 0
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)


def test_rouge_and_perplexity():
    assert rouge(["the cat sat"], ["the cat sat"])["rouge1"] == pytest.approx(1.0)
    assert rouge(["dog"], ["the cat sat"])["rougeL"] == 0.0
    assert perplexity(math.log(10)) == pytest.approx(10)
    assert math.isfinite(perplexity(1e6))


def test_a_trial_process_does_not_load_rouge_scores_nltk():
    """Only export scores ROUGE; a trial process importing the trainable skips nltk."""
    code = "import sys, trainables.trainable; print('nltk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_decision_is_the_most_likely_answer(tiny_model_path, tiny_tokenizer):
    model = load_model(tiny_model_path)
    records = [
        Record(
            id=str(i),
            question=f"Does treatment {i} help?",
            answer="",
            group=str(i),
            source="t",
            context="A trial of 40 adults.",
            label=label,
        )
        for i, label in enumerate(["yes", "no", "maybe", "yes"])
    ]
    scores = decision_scores(model, tiny_tokenizer, records, max_length=128)
    expected = []
    for r in records:
        totals = []
        for d in DECISIONS:
            ex, _ = encode_record(tiny_tokenizer, replace(r, answer=d), 128)
            n = sum(1 for x in ex["labels"][1:] if x != IGNORE_INDEX)
            totals.append(answer_loss(model, [ex], 1, tiny_tokenizer.pad_token_id) * n)
        expected.append(DECISIONS[min(range(3), key=totals.__getitem__)])
    assert scores == classification_scores(expected, [r.label for r in records])


def test_completions_count_their_tokens_and_say_why_they_ended(tiny_model_path, tiny_tokenizer):
    """Greedy answers of two questions in one left-padded batch: each counts its own prompt
    (the padding not counted) and answer tokens; one cut at max_new_tokens ends by "length",
    one that meets an end-of-sequence token ends there, that token not counted or shown."""
    from trainables.prompts import prompt_text

    model = load_model(tiny_model_path)
    records = [
        Record(id="a", question="What is gout?", answer="", group="a", source="t"),
        Record(
            id="b",
            question="How is a long-lasting cough in adults treated?",
            answer="",
            group="b",
            source="t",
        ),
    ]
    cut = generate_completions(model, tiny_tokenizer, records, max_new_tokens=6)
    assert [c.text for c in cut] == generate_answers(
        model, tiny_tokenizer, records, max_new_tokens=6
    )
    for c, r in zip(cut, records, strict=True):
        prompt = tiny_tokenizer(
            prompt_text(tiny_tokenizer, r.question, None, None),
            add_special_tokens=not tiny_tokenizer.chat_template,
        )["input_ids"]
        assert c.prompt_tokens == len(prompt)
        assert (c.completion_tokens, c.stopped) == (6, False)  # a random model: never its eos
    assert cut[0].prompt_tokens != cut[1].prompt_tokens  # so one of them was padded
    # Each its own budget in one batch: as if generated alone with it.
    limited = generate_completions(model, tiny_tokenizer, records, max_new_tokens=6, limits=[2, 5])
    assert limited == [
        generate_completions(model, tiny_tokenizer, [r], max_new_tokens=n)[0]
        for r, n in zip(records, [2, 5], strict=True)
    ]
    assert [c.completion_tokens for c in limited] == [2, 5]

    # The random model's greedy answer repeats one token whatever came before. Made the
    # end-of-sequence token, kept from the first step and pushed after two of the token picked
    # instead, it ends the answer at its third token.
    prompt = prompt_text(tiny_tokenizer, records[0].question, None, None)
    enc = tiny_tokenizer(prompt, return_tensors="pt")
    config = model.generation_config
    (repeated,) = set(model.generate(**enc, max_new_tokens=4, do_sample=False)[0, -4:].tolist())
    first = model.generate(**enc, max_new_tokens=1, begin_suppress_tokens=[repeated])[0, -1]
    before = config.eos_token_id, config.begin_suppress_tokens, config.sequence_bias
    config.eos_token_id, config.begin_suppress_tokens = repeated, [repeated]
    config.sequence_bias = [[[int(first), int(first), repeated], 100.0]]
    try:
        (stopped,) = generate_completions(model, tiny_tokenizer, records[:1], max_new_tokens=6)
        ids = model.generate(**enc, max_new_tokens=6, do_sample=False)[0].tolist()
    finally:
        config.eos_token_id, config.begin_suppress_tokens, config.sequence_bias = before
    assert ids[enc["input_ids"].shape[1] :] == [first, first, repeated]
    assert (stopped.completion_tokens, stopped.stopped) == (2, True)
    assert stopped.text == tiny_tokenizer.decode([first, first]).strip() != ""


def test_answers_are_followed_token_by_token_and_end_when_dropped(tiny_model_path, tiny_tokenizer):
    """`on_step` sees every generated token's answers so far, each a prefix of the final
    text; a batch stops once every row met its limit (5 steps here, not max_new_tokens); a
    dropped row ends at its next token, and a batch of dropped rows stops."""
    model = load_model(tiny_model_path)
    records = [
        Record(id=str(i), question=q, answer="", group=str(i), source="t")
        for i, q in enumerate(["What is gout?", "How is a long-lasting cough in adults treated?"])
    ]
    steps = []
    done = generate_completions(
        model,
        tiny_tokenizer,
        records,
        max_new_tokens=9,
        limits=[2, 5],
        on_step=lambda start, partials: steps.append((start, partials)),
    )
    assert done == generate_completions(
        model, tiny_tokenizer, records, max_new_tokens=9, limits=[2, 5]
    )
    assert [start for start, _ in steps] == [0] * 5
    assert [[p.completion_tokens for p in ps] for _, ps in steps] == [
        [1, 1],
        [2, 2],
        [2, 3],
        [2, 4],
        [2, 5],
    ]
    assert steps[-1][1] == done
    for _, partials in steps:
        for partial, final in zip(partials, done, strict=True):
            assert final.text.startswith(partial.text)
    assert steps[1][1][0] == done[0]  # final once it met its limit
    assert [p.final(n) for p, n in zip(steps[1][1], [2, 5], strict=True)] == [True, False]

    gone = generate_completions(
        model, tiny_tokenizer, records, max_new_tokens=9, dropped=lambda i: i == 1
    )
    assert [c.completion_tokens for c in gone] == [9, 1]
    steps.clear()
    generate_completions(
        model,
        tiny_tokenizer,
        records,
        max_new_tokens=9,
        on_step=lambda start, partials: steps.append(partials),
        dropped=lambda i: True,
    )
    assert len(steps) == 1


def test_an_unfinished_answer_shows_only_what_later_tokens_keep():
    from trainables.evaluation import _settled

    assert _settled(" Asthma is a\ufffd", tidies=False) == "Asthma is a"
    assert _settled("Asthma is \n", tidies=False) == "Asthma is"
    # A tokenizer that tidies spaces turns "do n't" into "don't": the last word waits.
    assert _settled("I do n", tidies=True) == "I do"
    assert _settled("Asthma", tidies=True) == ""


def test_an_answer_ends_at_a_stop_string_and_never_shows_its_start(tiny_model_path, tmp_path):
    """OpenAI's `stop`: the answer is cut before the first stop string, ends there (fewer
    tokens than its budget, `stopped`), and while it grows no piece of text shows the start
    of a stop string that a later token would take back."""
    from tests.conftest import answering_brackets
    from trainables.models import load_tokenizer

    path = answering_brackets(tiny_model_path, tmp_path / "brackets")
    model, tokenizer = load_model(str(path)), load_tokenizer(str(path))
    records = [
        Record(id=str(i), question=q, answer="", group=str(i), source="t")
        for i, q in enumerate(["What is gout?", "How is a long-lasting cough in adults treated?"])
    ]
    free = generate_completions(model, tokenizer, records, max_new_tokens=12)
    assert free[0].text == "[/]" * 4
    steps = []
    cut = generate_completions(
        model,
        tokenizer,
        records,
        max_new_tokens=12,
        stops=[["/][/", "never in any answer"], []],
        on_step=lambda _, partials: steps.append(partials),
    )
    # "[/][/" ends at the fifth token: the answer is what came before it.
    assert cut[0] == Completion("[", free[0].prompt_tokens, 5, stopped=True)
    assert cut[1] == free[1]  # a row without stop strings is as it was
    for partials in steps:  # "[/" (which a later "][/" made a stop) was never shown
        assert partials[0].text in ("", "[")
        assert cut[1].text.startswith(partials[1].text)
    assert steps[-1] == cut


def test_a_growing_answer_holds_back_what_may_start_a_stop_string():
    from trainables.evaluation import _before_stops

    assert _before_stops("Gout is a joint dis", ("disease", "\n\n")) == "Gout is a joint "
    assert _before_stops("Gout.\n", ("disease", "\n\n")) == "Gout."
    assert _before_stops("Gout", ("disease",)) == "Gout"
