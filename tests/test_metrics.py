"""Entity-level and classification metrics equal hand-computed figures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fmtool.dataset.examples import TokenExample
from fmtool.dataset.ner import encode_ner
from fmtool.inference import Runtime
from fmtool.model import load_tokenizer
from fmtool.task import TASKS
from fmtool.task.classification import classification_metrics
from fmtool.task.ner import ner_metrics
from tests.conftest import tiny_config


def test_entity_f1_by_hand():
    # gold: PER(0-1), LOC(3), ORG(5); predicted: PER(0-1) right, LOC(3) typed MISC, ORG(5) right, extra PER(7)
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-MISC", "O"], ["B-ORG", "O", "B-PER"]]
    m = ner_metrics(gold, pred)
    # 2 correct of 4 predicted, of 3 gold
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    per_type = m["details"]["default"]["per_type"]
    assert per_type["PER"]["precision"] == pytest.approx(1 / 2) and per_type["PER"]["recall"] == 1.0
    assert per_type["LOC"]["recall"] == 0.0 and per_type["LOC"]["support"] == 1
    # macro: mean of per-type F1 over LOC 0, MISC 0, ORG 1, PER 2/3
    assert m["macro_f1"] == pytest.approx((0 + 0 + 1 + 2 / 3) / 4)
    assert m["token_accuracy"] == pytest.approx(6 / 8)


def test_strict_mode_rejects_entities_opening_with_inside():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]
    m = ner_metrics(gold, pred)
    assert m["f1"] == 1.0  # CoNLL's lenient chunking reads I-PER I-PER as one PER
    assert m["strict_f1"] == 0.0


def test_subword_labelling_does_not_count_extra_entities():
    # a name split into several sub-tokens, every one of them predicted B-PER (label_all_tokens encoding): read per
    # word at the first sub-token, that is one PER entity; counted per sub-token it would be one per piece
    tokenizer = load_tokenizer(tiny_config("ner").model)
    example = TokenExample("s", ["he", "met", "Blackburnshire", "today"], ["O", "O", "B-PER", "O"])
    features = encode_ner(
        [example], tokenizer, {"O": 0, "B-PER": 1, "I-PER": 2}, max_length=32, stride=0, label_all_tokens=True
    )
    pieces = tokenizer("blackburnshire", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1 and features[0].labels.count(1) + features[0].labels.count(2) == len(pieces)

    class EveryPieceIsAPerson(torch.nn.Module):
        config = SimpleNamespace(id2label={0: "O", 1: "B-PER", 2: "I-PER"})

        def forward(self, input_ids, attention_mask, **unused):
            logits = torch.zeros(*input_ids.shape, 3)
            logits[..., 0] = 1.0
            logits[torch.isin(input_ids, torch.tensor(pieces)), 1] = 5.0
            return SimpleNamespace(logits=logits)

    task = TASKS.get("ner")
    predictions = task.predict(
        EveryPieceIsAPerson(), [example], features, Runtime(torch.device("cpu")), tokenizer.pad_token_id
    )
    assert predictions[0].tags == example.tags
    m = task.score([example], predictions, ["O", "B-PER", "I-PER"])
    assert m["precision"] == 1.0 and m["details"]["default"]["per_type"]["PER"]["support"] == 1


def test_classification_metrics_by_hand():
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "b", "b", "b", "a"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    f1_a = 2 * (1 / 2) * (1 / 2) / 1  # precision 1/2, recall 1/2
    f1_b = 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b + 0) / 3)
    assert m["details"]["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_primary_score_is_the_first_headline_metric_of_score():
    import random

    from fmtool.dataset.examples import TextExample, TokenExample
    from fmtool.task import TASKS
    from fmtool.task.classification import ClassPrediction
    from fmtool.task.ner import NerPrediction

    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    sentences = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    guesses = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in sentences]
    examples = [TokenExample(id=str(i), tokens=["w"] * len(s), tags=s) for i, s in enumerate(sentences)]
    predictions = [NerPrediction(tags=g, scores=[1.0] * len(g)) for g in guesses]
    ner = TASKS.get("ner")
    assert ner.primary_score(examples, predictions) == pytest.approx(
        ner.score(examples, predictions, tags)[ner.metrics[0]]
    )
    labels = ["a", "b", "c"]
    texts = [TextExample(id=str(i), text="t", label=rng.choice(labels)) for i in range(200)]
    guessed = [
        ClassPrediction(label=e.label if rng.random() < 0.6 else rng.choice(labels), probabilities={}) for e in texts
    ]
    classification = TASKS.get("classification")
    assert classification.primary_score(texts, guessed) == pytest.approx(
        classification.score(texts, guessed, labels)[classification.metrics[0]]
    )
