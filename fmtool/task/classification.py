"""Single-label text classification (binary or multiclass), scored with scikit-learn.

Reports accuracy, macro-F1, a per-class precision / recall / F1 / support table and the confusion
matrix (rows: true labels, columns: predicted labels, both in the task's label order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from transformers import AutoModelForSequenceClassification

from fmtool.config.schema import TrainConfig, TrainerConfig
from fmtool.dataset.classification import TextFeature, encode_texts
from fmtool.dataset.examples import TextExample
from fmtool.inference import Runtime, run_model
from fmtool.model.build import Head
from fmtool.task.base import TASKS, ExampleScore


@dataclass
class ClassPrediction:
    label: str
    probabilities: dict[str, float]


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    labels = list(labels)
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "details": {
            "per_class": {
                label: {("f1" if k == "f1-score" else k): float(v) for k, v in report[label].items()}
                for label in labels
            },
            "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        },
    }


def _reduce(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list:
    return list(logits.softmax(-1).cpu().numpy())


def _gold_nll(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list:
    return list((-logits.log_softmax(-1).gather(-1, batch["labels"].unsqueeze(-1)).squeeze(-1)).cpu().numpy())


class ClassificationTask:
    name = "classification"
    metrics = ("accuracy", "macro_f1")
    head = Head(AutoModelForSequenceClassification, "ForSequenceClassification")
    labels_each_word = False
    language_model = False
    generates = False
    peft_task_type = "SEQ_CLS"
    pipeline_tag = "text-classification"
    intended_use = "labelling text like its training data with one of its labels"

    def config_problems(self, cfg: TrainConfig) -> list[str]:
        return []

    def examples_from_texts(self, texts: Sequence[str], labels: Sequence[str]) -> list[TextExample]:
        return [TextExample(id=str(i), text=t, label=labels[0]) for i, t in enumerate(texts)]

    def predict_texts(self, loaded, texts: Sequence[str]) -> list[dict[str, Any]]:
        predictions = loaded.predictions(self.examples_from_texts(texts, loaded.labels))
        return [{"text": t, "label": p.label, "probabilities": p.probabilities} for t, p in zip(texts, predictions)]

    def encode(self, examples, tokenizer, label2id, trainer: TrainerConfig) -> list[TextFeature]:
        return encode_texts(examples, tokenizer, label2id, max_length=trainer.max_length)

    def predict(
        self,
        model,
        examples: Sequence[TextExample],
        features: Sequence[TextFeature],
        runtime: Runtime,
        pad_id: int,
        on_batch: Callable[[int], None] = lambda n: None,
    ) -> list[ClassPrediction]:
        id2label = model.config.id2label
        outputs = run_model(model, features, runtime, pad_id, _reduce, on_batch)
        return [
            ClassPrediction(
                label=id2label[int(p.argmax())], probabilities={id2label[i]: float(v) for i, v in enumerate(p)}
            )
            for p in outputs
        ]

    def losses(
        self, model, examples: Sequence[TextExample], features: Sequence[TextFeature], runtime: Runtime, pad_id: int
    ) -> list[ExampleScore]:
        return [
            ExampleScore(loss=float(nll), units=1) for nll in run_model(model, features, runtime, pad_id, _gold_nll)
        ]

    def score(
        self, examples: Sequence[TextExample], predictions: Sequence[ClassPrediction], labels: Sequence[str]
    ) -> dict[str, Any]:
        return classification_metrics([e.label for e in examples], [p.label for p in predictions], labels)

    def primary_score(self, examples: Sequence[TextExample], predictions: Sequence[ClassPrediction]) -> float:
        return float(accuracy_score([e.label for e in examples], [p.label for p in predictions]))

    def record(self, example: TextExample, prediction: ClassPrediction) -> dict[str, Any]:
        return {
            "id": example.id,
            "text": example.text,
            "label": example.label,
            "predicted": prediction.label,
            "probabilities": prediction.probabilities,
        }


TASKS.register("classification")(ClassificationTask())
