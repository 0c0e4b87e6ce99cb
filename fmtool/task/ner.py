"""Named-entity recognition: token classification scored at entity level with seqeval.

Metrics follow CoNLL evaluation (seqeval default mode: an entity counts when its type and span match,
IOB1-style lenient chunking) and are also given in strict IOB2 mode. Micro and macro averages and
per-type precision / recall / F1 / support are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from seqeval.metrics import accuracy_score, classification_report, f1_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification

from fmtool.config.schema import TrainConfig, TrainerConfig
from fmtool.dataset.examples import TokenExample, split_words
from fmtool.dataset.ner import TokenFeature, encode_ner
from fmtool.inference import Runtime, run_model
from fmtool.model.build import Head
from fmtool.task.base import TASKS, ExampleScore


@dataclass
class NerPrediction:
    tags: list[str]
    scores: list[float]


def entity_report(
    y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]], *, strict: bool = False
) -> dict[str, Any]:
    """seqeval's report as {'micro': {...}, 'macro': {...}, 'per_type': {TYPE: {...}}}."""
    extra = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(
        list(map(list, y_true)), list(map(list, y_pred)), output_dict=True, zero_division=0, **extra
    )
    rename = {"f1-score": "f1"}
    clean = {name: {rename.get(k, k): float(v) for k, v in row.items()} for name, row in report.items()}
    averages = {"micro avg": "micro", "macro avg": "macro", "weighted avg": "weighted"}
    return {
        **{
            short: clean.get(long, {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0.0})
            for long, short in averages.items()
        },
        "per_type": {name: row for name, row in clean.items() if name not in averages},
    }


def ner_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    default = entity_report(y_true, y_pred)
    strict = entity_report(y_true, y_pred, strict=True)
    return {
        "f1": default["micro"]["f1"],
        "precision": default["micro"]["precision"],
        "recall": default["micro"]["recall"],
        "macro_f1": default["macro"]["f1"],
        "strict_f1": strict["micro"]["f1"],
        "token_accuracy": float(accuracy_score(list(map(list, y_true)), list(map(list, y_pred)))),
        "details": {"default": default, "strict": strict},
    }


def _reduce(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list:
    probabilities, predicted = logits.softmax(-1).max(-1)
    return list(zip(predicted.cpu().numpy(), probabilities.cpu().numpy()))


def _gold_nll(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list:
    """Per token position, -log p(gold tag); positions without a label give 0."""
    labels = batch["labels"]
    nll = -logits.log_softmax(-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return list(nll.masked_fill(labels.lt(0), 0.0).cpu().numpy())


def entities_from_tags(
    text: str, spans: Sequence[tuple[str, int, int]], tags: Sequence[str], scores: Sequence[float]
) -> list[dict[str, Any]]:
    """The entities of predicted IOB2 `tags` over the words at `spans`, with character offsets into `text` and the
    mean score of their words."""
    entities = []
    for kind, first, last in get_entities(list(tags)):
        start, end = spans[first][1], spans[last][2]
        entities.append(
            {
                "type": kind,
                "text": text[start:end],
                "start": start,
                "end": end,
                "score": round(sum(scores[first : last + 1]) / (last - first + 1), 4),
            }
        )
    return entities


class NerTask:
    name = "ner"
    metrics = ("f1", "precision", "recall", "macro_f1", "strict_f1", "token_accuracy")
    head = Head(AutoModelForTokenClassification, "ForTokenClassification")
    labels_each_word = True
    language_model = False
    generates = False
    peft_task_type = "TOKEN_CLS"
    pipeline_tag = "token-classification"
    intended_use = "tagging named entities in text like its training data (same language, domain and entity types)"

    def config_problems(self, cfg: TrainConfig) -> list[str]:
        trainer = cfg.trainer
        if trainer.window_stride >= trainer.max_length // 2:
            return [
                f"trainer.window_stride={trainer.window_stride} must be below half of "
                f"trainer.max_length={trainer.max_length}"
            ]
        return []

    def examples_from_texts(self, texts: Sequence[str], labels: Sequence[str]) -> list[TokenExample]:
        words = [[w for w, _, _ in split_words(t)] for t in texts]
        return [TokenExample(id=str(i), tokens=w, tags=["O"] * len(w)) for i, w in enumerate(words)]

    def predict_texts(self, loaded, texts: Sequence[str]) -> list[dict[str, Any]]:
        predictions = loaded.predictions(self.examples_from_texts(texts, loaded.labels))
        return [
            {"text": t, "entities": entities_from_tags(t, split_words(t), p.tags, p.scores)}
            for t, p in zip(texts, predictions)
        ]

    def encode(self, examples, tokenizer, label2id, trainer: TrainerConfig) -> list[TokenFeature]:
        return encode_ner(
            examples,
            tokenizer,
            label2id,
            max_length=trainer.max_length,
            stride=trainer.window_stride,
            label_all_tokens=trainer.label_all_tokens,
        )

    def predict(
        self,
        model,
        examples: Sequence[TokenExample],
        features: Sequence[TokenFeature],
        runtime: Runtime,
        pad_id: int,
        on_batch: Callable[[int], None] = lambda n: None,
    ) -> list[NerPrediction]:
        id2label = model.config.id2label
        outputs = run_model(model, features, runtime, pad_id, _reduce, on_batch)
        predictions = [NerPrediction(tags=["O"] * len(e.tokens), scores=[0.0] * len(e.tokens)) for e in examples]
        for feature, (tokens, probabilities) in zip(features, outputs):
            prediction = predictions[feature.example_index]
            for word, position in feature.owned:
                prediction.tags[word] = id2label[int(tokens[position])]
                prediction.scores[word] = float(probabilities[position])
        return predictions

    def losses(
        self, model, examples: Sequence[TokenExample], features: Sequence[TokenFeature], runtime: Runtime, pad_id: int
    ) -> list[ExampleScore]:
        """Mean -log p(gold tag) over each sentence's words, read where each word is predicted (its owning window)."""
        outputs = run_model(model, features, runtime, pad_id, _gold_nll)
        words: list[list[float]] = [[] for _ in examples]
        for feature, nll in zip(features, outputs):
            for _, position in feature.owned:
                words[feature.example_index].append(float(nll[position]))
        return [
            ExampleScore(loss=sum(nlls) / max(len(nlls), 1), units=len(nlls), unit_losses=tuple(nlls)) for nlls in words
        ]

    def score(
        self, examples: Sequence[TokenExample], predictions: Sequence[NerPrediction], labels: Sequence[str]
    ) -> dict[str, Any]:
        return ner_metrics([e.tags for e in examples], [p.tags for p in predictions])

    def primary_score(self, examples: Sequence[TokenExample], predictions: Sequence[NerPrediction]) -> float:
        return float(f1_score([list(e.tags) for e in examples], [list(p.tags) for p in predictions], zero_division=0))

    def record(self, example: TokenExample, prediction: NerPrediction) -> dict[str, Any]:
        return {"id": example.id, "tokens": example.tokens, "tags": example.tags, "predicted": prediction.tags}


TASKS.register("ner")(NerTask())
