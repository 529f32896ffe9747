import math
import subprocess
import sys
from dataclasses import replace

import pytest

from trainables.data import Record
from trainables.evaluation import (
    DECISIONS,
    answer_loss,
    classification_scores,
    decision_scores,
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
