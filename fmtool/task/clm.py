"""Causal-language-model pre-training (GPT-2, Llama, Qwen2...): next-token loss over packed documents, held-out loss
and perplexity, and text continuation.

Documents are packed into blocks of trainer.max_length tokens with the end-of-text token after each one, so the
model learns where a document ends (transformers' run_clm puts no token between documents). The held-out loss is
the summed next-token cross-entropy over every real token of the validation blocks, divided by their number, and
perplexity its exponential: one figure per token, whatever the batch shapes.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional, Sequence

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from fmtool.config.schema import TaskConfig, TrainConfig
from fmtool.dataset.batching import inference_batches
from fmtool.dataset.examples import IGNORE_INDEX
from fmtool.dataset.mlm import BlockFeature, Packing
from fmtool.errors import FmtoolError
from fmtool.inference import Runtime
from fmtool.model.build import Head, usable_positions
from fmtool.task.base import TASKS, ExampleScore

log = logging.getLogger(__name__)


def causal_batch(features: Sequence[BlockFeature], pad_id: int) -> dict[str, torch.Tensor]:
    """Blocks padded on the right; the labels are the inputs (the model shifts them), padding left out of the loss."""
    width = max(len(f.input_ids) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        ids = torch.tensor(feature.input_ids, dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        labels[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def token_losses(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log p(token | the tokens before it) for every position after the first, IGNORE_INDEX positions as 0."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return losses.view(targets.shape)


def span_token_log_probabilities(
    model, tokenizer, texts: Sequence[str], spans: Sequence[tuple[int, int]], batch_size: int, max_tokens: int = 0
) -> list[list[float]]:
    """For each text, log P(token | every token before it) of each token inside its character span: exact for a
    causal LM. Each text is read after an end-of-text token, as a document starts in training, and cut to its first
    max_tokens tokens (0: whole). The one token-log-probability scorer of the causal-LM audits (canary, stereotype,
    membership)."""
    rows, inside = [], []
    for index, (text, (start, end)) in enumerate(zip(texts, spans)):
        encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        if max_tokens:
            ids, offsets = ids[:max_tokens], offsets[:max_tokens]
        inside.append([i + 1 for i, (a, b) in enumerate(offsets) if start <= a < b <= end])
        rows.append(BlockFeature(index, [tokenizer.eos_token_id, *ids], []))
    scores: list[list[float]] = []
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for first in range(0, len(rows), batch_size):
            batch = causal_batch(rows[first : first + batch_size], tokenizer.pad_token_id)
            # losses[row, p - 1] is -log P(token p | the tokens before it)
            losses = token_losses(model, **{k: v.to(device) for k, v in batch.items()}).cpu()
            for row, positions in enumerate(inside[first : first + batch_size]):
                scores.append([-losses[row, p - 1].item() for p in positions])
    return scores


def span_log_likelihoods(
    model, tokenizer, texts: Sequence[str], spans: Sequence[tuple[int, int]], batch_size: int
) -> list[tuple[float, int]]:
    """For each text, (the sum of its span's token log-probabilities, the number of those tokens)."""
    return [
        (sum(tokens), len(tokens))
        for tokens in span_token_log_probabilities(model, tokenizer, texts, spans, batch_size)
    ]


def filler_log_likelihoods(model, tokenizer, template: str, fillers: Sequence[str], batch_size: int) -> list[float]:
    """For each filler of `template`'s {secret}: the sum over its tokens of log P(token | every token before it), the
    Secret Sharer's log-perplexity, exact for a causal LM."""
    start = len(template.split("{secret}")[0])
    texts = [template.format(secret=filler) for filler in fillers]
    spans = [(start, start + len(filler)) for filler in fillers]
    return [total for total, _ in span_log_likelihoods(model, tokenizer, texts, spans, batch_size)]


def sentence_log_likelihoods(model, tokenizer, texts: Sequence[str], batch_size: int) -> list[tuple[float, int]]:
    """(total log-likelihood, tokens) of each whole text, as lm-evaluation-harness scores CrowS-Pairs."""
    return span_log_likelihoods(model, tokenizer, texts, [(0, len(t)) for t in texts], batch_size)


def document_scores(model, tokenizer, texts: Sequence[str], batch_size: int, max_tokens: int) -> list[ExampleScore]:
    """Each document's mean negative log-likelihood over its first max_tokens tokens, with each token's."""
    spans = [(0, len(text)) for text in texts]
    scores = []
    for tokens in span_token_log_probabilities(model, tokenizer, texts, spans, batch_size, max_tokens):
        losses = tuple(-value for value in tokens)
        scores.append(ExampleScore(loss=sum(losses) / max(len(losses), 1), units=len(losses), unit_losses=losses))
    return scores


class CausalLanguageModelling:
    """Next-token prediction over packed documents."""

    def __init__(self, packing: Packing, pad_id: int) -> None:
        self.packing, self.pad_id = packing, pad_id

    def collate(self, features: Sequence[BlockFeature], epoch: int) -> dict[str, torch.Tensor]:
        return causal_batch(features, self.pad_id)

    def loss_units(self, labels: torch.Tensor) -> torch.Tensor:
        """The predicted positions: every labelled one after a row's first (the model shifts the labels)."""
        return labels[:, 1:].ne(IGNORE_INDEX).sum()

    def trained(self, model) -> torch.nn.Module:
        return model

    def held_out(
        self, model, blocks: Sequence[BlockFeature], runtime: Runtime, on_batch: Callable[[int], None] = lambda n: None
    ) -> dict[str, Any]:
        model.eval()
        total_loss, total_tokens = 0.0, 0
        with torch.inference_mode(), runtime.autocast():
            for indices in inference_batches([len(b.input_ids) for b in blocks], runtime.batch_size):
                batch = {
                    k: v.to(runtime.device) for k, v in causal_batch([blocks[i] for i in indices], self.pad_id).items()
                }
                total_loss += token_losses(model, **batch).sum().item()
                total_tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                on_batch(len(indices))
        loss = total_loss / max(total_tokens, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "details": {"predicted_tokens": total_tokens, "blocks": len(blocks)},
        }


# Below this a sampling temperature divides the logits past float range (1e-40 gives inf, then NaN probabilities):
# such a temperature asks for the likeliest token, which greedy decoding gives exactly.
MIN_SAMPLING_TEMPERATURE = 1e-2
# what a generation_config.json holds that is not a decoding choice
_NOT_DECODING = {
    "transformers_version",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "_from_model_config",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
}


def decoding(model, tokenizer, task: TaskConfig) -> GenerationConfig:
    """fmtool's decoding settings, whole: a received model's generation_config.json (a repetition penalty, banned
    n-grams) would otherwise change the documented greedy continuation; what it held is logged as ignored."""
    ignored = {k: v for k, v in model.generation_config.to_diff_dict().items() if k not in _NOT_DECODING}
    if ignored:
        log.warning(
            "ignored the model's generation_config.json: %s (task.max_new_tokens, temperature and top_p decide)",
            ", ".join(f"{k}={v}" for k, v in sorted(ignored.items())),
        )
    if 0 < task.temperature < MIN_SAMPLING_TEMPERATURE:
        log.warning("temperature %g is below %g: greedy continuation", task.temperature, MIN_SAMPLING_TEMPERATURE)
    sampled = task.temperature >= MIN_SAMPLING_TEMPERATURE
    return GenerationConfig(
        max_new_tokens=task.max_new_tokens,
        do_sample=sampled,
        **({"temperature": task.temperature, "top_p": task.top_p} if sampled else {}),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def prompt_room(model, max_new_tokens: int) -> Optional[int]:
    """How many prompt tokens fit beside max_new_tokens in the model's context (None: no known limit)."""
    # GPT-2 names it n_positions; its config answers to max_position_embeddings too
    context = usable_positions(model.config.model_type, getattr(model.config, "max_position_embeddings", None))
    if context is None:
        return None
    if max_new_tokens >= context:
        raise FmtoolError(
            f"task.max_new_tokens={max_new_tokens} (predict's --max-new-tokens) leaves no room for the prompt in the "
            f"model's context of {context} tokens; choose at most {context - 1}"
        )
    return context - max_new_tokens


def continue_texts(model, tokenizer, texts: Sequence[str], runtime: Runtime, task: TaskConfig) -> list[dict[str, Any]]:
    """Each text continued by up to task.max_new_tokens tokens: greedy at temperature 0, else sampled with top_p. A
    prompt longer than the context leaves room for the continuation keeps its last tokens, and says how many it
    dropped."""
    model.eval()
    room = prompt_room(model, task.max_new_tokens)
    settings, model.generation_config = decoding(model, tokenizer, task), GenerationConfig()
    results = []
    with torch.inference_mode(), runtime.autocast():
        for text in texts:
            encoded = tokenizer(text, return_tensors="pt")
            dropped = max(0, encoded["input_ids"].shape[1] - room) if room is not None else 0
            if dropped:
                log.warning("a prompt of %d tokens kept its last %d", encoded["input_ids"].shape[1], room)
                encoded = {key: value[:, dropped:] for key, value in encoded.items()}
            encoded = {key: value.to(runtime.device) for key, value in encoded.items()}
            output = model.generate(**encoded, generation_config=settings)
            new = output[0, encoded["input_ids"].shape[1] :]
            result = {"text": text, "continuation": tokenizer.decode(new, skip_special_tokens=True)}
            results.append({**result, "prompt_tokens_dropped": dropped} if dropped else result)
    return results


class CausalLmTask:
    name = "clm"
    metrics = ("loss", "perplexity")
    head = Head(AutoModelForCausalLM)
    labels_each_word = False
    language_model = True
    generates = True
    peft_task_type = "CAUSAL_LM"
    pipeline_tag = "text-generation"
    intended_use = (
        "continuing text like its training corpus, and as a starting point for fine-tuning "
        "(fmtool train +task=classification model.name=RUN_DIR/model)"
    )

    def config_problems(self, cfg: TrainConfig) -> list[str]:
        return []

    def examples_from_texts(self, texts: Sequence[str], labels: Sequence[str]) -> list:
        raise FmtoolError("a causal-LM run labels nothing: fmtool predict RUN_DIR 'a prompt' continues text")

    def predict_texts(self, loaded, texts: Sequence[str]) -> list[dict[str, Any]]:
        return continue_texts(loaded.model, loaded.tokenizer, texts, loaded.runtime, loaded.cfg.task)

    def document_scores(
        self, model, tokenizer, texts: Sequence[str], batch_size: int, max_tokens: int
    ) -> list[ExampleScore]:
        return document_scores(model, tokenizer, texts, batch_size, max_tokens)

    def filler_log_likelihoods(
        self, model, tokenizer, template: str, fillers: Sequence[str], batch_size: int
    ) -> list[float]:
        return filler_log_likelihoods(model, tokenizer, template, fillers, batch_size)

    def objective(self, task: TaskConfig, seed: int, tokenizer) -> CausalLanguageModelling:
        if tokenizer.eos_token_id is None:
            raise FmtoolError("model.tokenizer: a causal LM needs an end-of-text token to separate documents")
        return CausalLanguageModelling(Packing.causal(tokenizer), tokenizer.pad_token_id)


TASKS.register("clm")(CausalLmTask())
