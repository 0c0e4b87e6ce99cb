"""Word attributions: which input words drove a fine-tuned model's prediction, and by how much.

What is explained is the log-probability of the model's own prediction: the predicted label (classification),
or for each predicted entity the mean log-probability of its words' predicted tags (NER; each word is read at
its first sub-token, as the task predicts). A logit alone shifts freely across labels; the log-probability is what
the decision depends on. Attributions are computed on the input word embeddings and summed over each word's
sub-tokens:

- `integrated_gradients`: as Captum's LayerIntegratedGradients computes them (its Gauss-Legendre points, the
  embedding layer's output replaced by the path) from an all-[PAD] baseline ([CLS] and [SEP] kept), with the
  convergence delta (how far the attributions' sum is from the change in output; small is faithful to the
  integral). Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks". Captum takes one scalar per
  input row, so a sentence with k predicted entities would cost k forward passes per point of the path; here one
  forward pass serves them all and only the backward pass is per entity (tests check the result against Captum's).
- `gradient_x_input`: gradient times input embedding in one backward pass; cheaper, noisier.

Positive attribution supports the prediction, negative argues against it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from seqeval.metrics.sequence_labeling import get_entities

from fmtool.dataset.batching import inference_batches
from fmtool.dataset.examples import Example
from fmtool.dataset.examples import words as example_words
from fmtool.errors import FmtoolError

if TYPE_CHECKING:
    import torch

METHODS = ("integrated_gradients", "gradient_x_input")
# torch is imported where it is used: the CLI reads METHODS for its help without loading torch


@dataclass(frozen=True)
class Target:
    """One prediction to explain: the words it is read from, the label, and (NER) the entity's word span."""

    example_id: str
    words: tuple[str, ...]
    label: str
    label_id: int
    span: Optional[tuple[int, int]] = None  # first and last word of an entity (inclusive); None: the whole input

    @property
    def span_words(self) -> range:
        return range(0) if self.span is None else range(self.span[0], self.span[1] + 1)


@dataclass(frozen=True)
class Explanation:
    target: Target
    probability: float  # of the explained prediction (NER: geometric mean over the entity's words)
    attributions: tuple[float, ...]  # one per word; 0 for a word cut off by max_length
    delta: Optional[float] = None  # integrated gradients' convergence delta

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.target.example_id,
            "label": self.target.label,
            "probability": round(self.probability, 4),
        }
        if self.target.span is not None:
            first, last = self.target.span
            record["entity"] = {
                "text": " ".join(self.target.words[first : last + 1]),
                "first_word": first,
                "last_word": last,
            }
        record["words"] = [
            {"word": w, "attribution": round(a, 5)} for w, a in zip(self.target.words, self.attributions)
        ]
        if self.delta is not None:
            record["convergence_delta"] = round(self.delta, 5)
        return record

    def ranked(self, *, outside_span: bool = False) -> list[int]:
        """Word positions by attribution, most supporting first; with outside_span, the entity's own words left out."""
        skip = set(self.target.span_words) if outside_span else set()
        return sorted((i for i in range(len(self.target.words)) if i not in skip), key=lambda i: -self.attributions[i])


def targets_for(
    examples: Sequence[Example], predictions: Sequence, per_word: bool, label2id: dict[str, int]
) -> list[Target]:
    """What to explain for each example: its predicted label, or (per_word: a tagger's predictions) each entity it
    was predicted to contain."""
    targets = []
    for example, prediction in zip(examples, predictions):
        words = tuple(example_words(example))
        if not words:
            continue
        if not per_word:
            targets.append(Target(example.id, words, prediction.label, label2id[prediction.label]))
            continue
        for kind, first, last in get_entities(list(prediction.tags)):
            targets.append(Target(example.id, words, kind, -1, (first, last)))
    return targets


class Explainer:
    """Attributions and target probabilities for one model, which labels each word (per_word) or each text."""

    def __init__(self, model, tokenizer, runtime, *, per_word: bool, max_length: int) -> None:
        self.model, self.tokenizer, self.runtime, self.per_word, self.max_length = (
            model,
            tokenizer,
            runtime,
            per_word,
            max_length,
        )
        self.label2id = {label: int(i) for label, i in model.config.label2id.items()}

    def explain(
        self, targets: Sequence[Target], *, method: str = "integrated_gradients", steps: int = 32
    ) -> list[Explanation]:
        if method not in METHODS:
            raise FmtoolError(f"explain: unknown method '{method}'; choose from: {', '.join(METHODS)}")
        if steps < 1:
            raise FmtoolError(f"explain: steps={steps} must be at least 1")
        points = _path_points(method, steps)
        out: list[Optional[Explanation]] = [None] * len(targets)
        self.model.eval()
        for chunk in self._sentence_chunks(targets, max(1, self.runtime.batch_size // len(points[0]))):
            explanations = self._explain_sentences(
                [[targets[i] for i in sentence] for sentence in chunk], points, method
            )
            for index, explanation in zip((i for sentence in chunk for i in sentence), explanations):
                out[index] = explanation
        return out  # type: ignore[return-value]

    def probabilities(self, targets: Sequence[Target], word_lists: Sequence[Sequence[str]]) -> list[float]:
        """Probability of each target's prediction when the model reads `word_lists[i]` instead of its words."""
        import torch

        # token lengths, not word counts: [UNK] replaces whole words, so only the tokenizer knows how short a copy got,
        # and batching by words was slower on CoNLL-2003 despite this extra tokenization
        lengths = [
            len(ids)
            for ids in self.tokenizer(
                [list(w) for w in word_lists], is_split_into_words=True, truncation=True, max_length=self.max_length
            )["input_ids"]
        ]
        out = [0.0] * len(targets)
        self.model.eval()
        with torch.inference_mode(), self.runtime.autocast():
            for rows in inference_batches(lengths, self.runtime.batch_size):
                encoded = self._encode([targets[i] for i in rows], [word_lists[i] for i in rows])
                scores = self._scores(encoded["input_ids"], encoded["attention_mask"], encoded["select"][:, None])
                for row, probability in zip(rows, scores[:, 0].float().exp().tolist()):
                    out[row] = probability
        return out

    def _sentence_chunks(self, targets: Sequence[Target], per_forward: int) -> list[list[list[int]]]:
        """Target indices grouped by sentence, then sentences with as many targets and similar lengths batched."""
        sentences: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for index, target in enumerate(targets):
            sentences.setdefault((target.example_id, target.words), []).append(index)
        lengths = {
            key: len(ids)
            for key, ids in zip(
                sentences,
                self.tokenizer(
                    [list(words) for _, words in sentences],
                    is_split_into_words=True,
                    truncation=True,
                    max_length=self.max_length,
                )["input_ids"],
            )
        }
        ordered = sorted(sentences, key=lambda key: (len(sentences[key]), lengths[key]))
        chunks: list[list[list[int]]] = []
        for key in ordered:
            if chunks and len(chunks[-1]) < per_forward and len(chunks[-1][0]) == len(sentences[key]):
                chunks[-1].append(sentences[key])
            else:
                chunks.append([sentences[key]])
        return chunks

    def _explain_sentences(
        self, sentences: Sequence[Sequence[Target]], points: tuple[list[float], list[float]], method: str
    ) -> list[Explanation]:
        """Attributions for sentences that each carry the same number of targets: one forward pass per point of the
        path serves all of a sentence's targets, then one backward pass per target."""
        import torch

        alphas, weights = points
        flat = [t for sentence in sentences for t in sentence]
        n_sentences, per_sentence, n_points = len(sentences), len(sentences[0]), len(alphas)
        encoded = self._encode(flat, [t.words for t in flat])
        ids = encoded["input_ids"][::per_sentence]
        mask = encoded["attention_mask"][::per_sentence]
        select = encoded["select"].view(n_sentences, per_sentence, *encoded["select"].shape[1:])
        layer = self.model.get_input_embeddings()
        device = ids.device
        with torch.no_grad():
            inputs = layer(ids).float()
            if method == "integrated_gradients":
                special = torch.isin(ids, torch.tensor(self.tokenizer.all_special_ids, device=device))
                baseline_ids = torch.where(special, ids, torch.full_like(ids, self.tokenizer.pad_token_id))
                baselines = layer(baseline_ids).float()
            else:
                baseline_ids, baselines = None, torch.zeros_like(inputs)
        alpha = torch.tensor(alphas, device=device).view(1, n_points, 1, 1)
        path = (baselines[:, None] + alpha * (inputs - baselines)[:, None]).flatten(0, 1).requires_grad_(True)
        # the embedding layer's output replaced by the path, as Captum's layer attributions do, so position and
        # token-type embeddings are added as usual
        hook = layer.register_forward_hook(lambda module, args, output: path.to(output.dtype))
        try:
            with torch.enable_grad(), self.runtime.autocast():
                scores = self._scores(
                    ids.repeat_interleave(n_points, 0),
                    mask.repeat_interleave(n_points, 0),
                    select.repeat_interleave(n_points, 0),
                )
        finally:
            hook.remove()
        weight = torch.tensor(weights, device=device).view(1, n_points, 1, 1)
        per_token = []
        for k in range(per_sentence):
            (gradient,) = torch.autograd.grad(scores[:, k].sum(), path, retain_graph=k < per_sentence - 1)
            integral = (gradient.float().view(n_sentences, n_points, *path.shape[1:]) * weight).sum(1)
            per_token.append((integral * (inputs - baselines)).sum(-1).detach().cpu())
        per_token_t = torch.stack(per_token, 1)  # [sentence, target, token]
        with torch.no_grad(), self.runtime.autocast():
            at_input = self._scores(ids, mask, select).float().cpu()
            at_baseline = None if baseline_ids is None else self._scores(baseline_ids, mask, select).float().cpu()
        # convergence delta as Captum defines it: the attributions' sum against the change in output along the path
        deltas = None if at_baseline is None else (per_token_t.sum(-1) - (at_input - at_baseline)).abs().tolist()
        explanations = []
        for s, sentence in enumerate(sentences):
            word_ids = encoded.word_ids(s * per_sentence)
            for k, target in enumerate(sentence):
                explanations.append(
                    Explanation(
                        target,
                        float(at_input[s, k].exp()),
                        self._per_word(per_token_t[s, k], word_ids, len(target.words)),
                        None if deltas is None else deltas[s][k],
                    )
                )
        return explanations

    def _encode(self, targets: Sequence[Target], word_lists: Sequence[Sequence[str]]):
        import torch

        encoded = self.tokenizer(
            [list(w) for w in word_lists],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        n_labels = len(self.label2id)
        if not self.per_word:
            select = torch.zeros(len(targets), n_labels)
            for row, target in enumerate(targets):
                select[row, target.label_id] = 1.0
        else:
            select = torch.zeros(len(targets), encoded["input_ids"].shape[1], n_labels)
            for row, target in enumerate(targets):
                starts = _word_starts(encoded.word_ids(row))
                for offset, word in enumerate(target.span_words):
                    tag = f"{'B' if offset == 0 else 'I'}-{target.label}"
                    if word in starts and tag in self.label2id:
                        select[row, starts[word], self.label2id[tag]] = 1.0
        encoded["select"] = select
        return encoded.to(self.runtime.device)

    def _scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """[row, target]: log-probability of each target's label (classification) or mean over the entity's words of
        their tags' (NER); `select` marks, per row and target, the labels (and positions) read."""
        import torch

        log_p = torch.log_softmax(self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), dim=-1)
        if log_p.dim() == 2:
            return torch.einsum("rc,rkc->rk", log_p, select)
        return torch.einsum("rlc,rklc->rk", log_p, select) / select.sum((2, 3)).clamp(min=1.0)

    @staticmethod
    def _per_word(per_token: torch.Tensor, word_ids: list[Optional[int]], n_words: int) -> tuple[float, ...]:
        words = [0.0] * n_words
        for position, word in enumerate(word_ids):
            if word is not None:
                words[word] += float(per_token[position])
        return tuple(words)


def _path_points(method: str, steps: int) -> tuple[list[float], list[float]]:
    """Where along the path from baseline to input the gradient is taken, and each point's weight in the integral:
    Captum's Gauss-Legendre rule (LayerIntegratedGradients' default), or the input alone for gradient x input."""
    if method == "gradient_x_input":
        return [1.0], [1.0]
    from captum.attr._utils.approximation_methods import approximation_parameters

    weights, alphas = approximation_parameters("gausslegendre")
    return list(alphas(steps)), list(weights(steps))


def _word_starts(word_ids: list[Optional[int]]) -> dict[int, int]:
    starts: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in starts:
            starts[word] = position
    return starts


def explainer_for(loaded) -> Explainer:
    """An Explainer for a LoadedRun (fmtool/predict.py)."""
    if loaded.task.language_model:
        raise FmtoolError(
            f"explain: a {loaded.task.name} run is a language model and predicts no labels to explain; fine-tune it "
            "for NER or classification"
        )
    return Explainer(
        loaded.model,
        loaded.tokenizer,
        loaded.runtime,
        per_word=loaded.task.labels_each_word,
        max_length=loaded.cfg.trainer.max_length,
    )


def _shade(attribution: float, scale: float) -> float:
    return 0.0 if scale <= 0 else max(-1.0, min(1.0, attribution / scale))


def to_rich(explanation: Explanation):
    """The words on a background that is green where they support the prediction and red where they oppose it."""
    from rich.text import Text

    scale = max((abs(a) for a in explanation.attributions), default=0.0)
    target = explanation.target
    what = (
        target.label
        if target.span is None
        else f"{target.label} {' '.join(target.words[target.span[0] : target.span[1] + 1])!r}"
    )
    text = Text(f"{what} ({explanation.probability:.2f}): ", style="bold")
    for index, (word, attribution) in enumerate(zip(target.words, explanation.attributions)):
        level = _shade(attribution, scale)
        colour = (
            f"rgb({255 - int(155 * level)},255,{255 - int(155 * level)})"
            if level >= 0
            else f"rgb(255,{255 + int(155 * level)},{255 + int(155 * level)})"
        )
        style = f"black on {colour}" + (" underline" if index in target.span_words else "")
        text.append(word, style=style)
        text.append(" ")
    return text


def to_html(explanations: Sequence[Explanation]) -> str:
    """An HTML fragment (no scripts, no external styles) the report embeds: one line per explanation."""
    lines = []
    for explanation in explanations:
        target = explanation.target
        scale = max((abs(a) for a in explanation.attributions), default=0.0)
        spans = []
        for index, (word, attribution) in enumerate(zip(target.words, explanation.attributions)):
            level = _shade(attribution, scale)
            colour = f"rgba(22,163,74,{level:.2f})" if level >= 0 else f"rgba(220,38,38,{-level:.2f})"
            border = "border-bottom:2px solid #111;" if index in target.span_words else ""
            spans.append(
                (
                    f'<span title="{attribution:+.4f}" style="background:{colour};{border}padding:0 '
                    f'2px">{html.escape(word)}</span>'
                )
            )
        label = html.escape(target.label)
        lines.append(f'<p class="attribution"><b>{label}</b> ({explanation.probability:.2f}) {" ".join(spans)}</p>')
    return "\n".join(lines)
