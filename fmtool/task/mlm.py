"""Masked-language-model pre-training: the loss, held-out loss and perplexity, and fill-mask prediction.

The vocabulary projection of a BERT-style LM head costs about as much per token as MiniLM's whole
encoder, and only the ~15% masked positions need it: the head runs on those alone (same loss as the
model's own forward, a fraction of the compute and of the [batch, length, vocabulary] logits memory).
Held-out loss is the mean cross-entropy over the masked tokens of the validation blocks, masked with
a fixed seed so every evaluation (and the starting model) is scored on the same masks; perplexity
is its exponential.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from transformers import AutoModelForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from fmtool.config.schema import TrainConfig
from fmtool.dataset.batching import inference_batches
from fmtool.dataset.examples import IGNORE_INDEX
from fmtool.dataset.mlm import EVALUATION_EPOCH, BlockFeature, Masking
from fmtool.errors import FmtoolError
from fmtool.inference import Runtime
from fmtool.model.build import Head
from fmtool.task.base import TASKS

LABELS_NOTHING = (
    "a masked-LM run labels nothing: use fmtool predict RUN_DIR 'text with [MASK]' for fills, or fine-tune it"
)


def lm_head(model) -> Optional[torch.nn.Module]:
    """The module mapping hidden states to vocabulary logits (BERT: cls, RoBERTa: lm_head), if it has one."""
    return getattr(model, "cls", None) or getattr(model, "lm_head", None)


def masked_logits(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(vocabulary logits, target ids) at the masked positions only."""
    selected = labels != IGNORE_INDEX
    head = lm_head(model)
    if head is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[selected], labels[selected]
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return head(hidden[selected]), labels[selected]


class MaskedPositionsLM(torch.nn.Module):
    """A masked LM whose forward computes the loss from the masked positions' logits alone."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> MaskedLMOutput:
        logits, targets = masked_logits(self.model, input_ids, attention_mask, labels)
        return MaskedLMOutput(loss=torch.nn.functional.cross_entropy(logits.float(), targets), logits=logits)


def held_out_loss(
    model,
    blocks: Sequence[BlockFeature],
    masking: Masking,
    runtime: Runtime,
    on_batch: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    model.eval()
    total_loss, total_tokens = 0.0, 0
    with torch.inference_mode(), runtime.autocast():
        for indices in inference_batches([len(b.input_ids) for b in blocks], runtime.batch_size):
            batch = {
                k: v.to(runtime.device)
                for k, v in masking.collate([blocks[i] for i in indices], EVALUATION_EPOCH).items()
            }
            logits, targets = masked_logits(model, **batch)
            total_loss += torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum").item()
            total_tokens += len(targets)
            on_batch(len(indices))
    loss = total_loss / max(total_tokens, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "details": {"masked_tokens": total_tokens, "blocks": len(blocks)},
    }


def fill_mask(model, tokenizer, texts: Sequence[str], runtime: Runtime, top_k: int = 5) -> list[dict[str, Any]]:
    """For each text, the top_k tokens (with probabilities) at each of its mask tokens."""
    model.eval()
    results = []
    with torch.inference_mode(), runtime.autocast():
        for text in texts:
            encoded = tokenizer(text, return_tensors="pt", truncation=True).to(runtime.device)
            probabilities = model(**encoded).logits.float()[0].softmax(-1)
            positions = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
            fills = []
            for position in positions:
                top = probabilities[position].topk(top_k)
                fills.append(
                    [
                        {"token": tokenizer.convert_ids_to_tokens(int(i)), "probability": round(float(p), 4)}
                        for p, i in zip(top.values, top.indices)
                    ]
                )
            results.append({"text": text, "masks": fills})
    return results


class MaskedLmTask:
    name = "mlm"
    metrics = ("loss", "perplexity")
    head = Head(AutoModelForMaskedLM)
    labels_each_word = False
    language_model = True
    pipeline_tag = "fill-mask"
    intended_use = (
        "a starting point for fine-tuning (fmtool train +task=ner model.name=RUN_DIR/model), and filling masked words"
    )

    def config_problems(self, cfg: TrainConfig) -> list[str]:
        return []

    def examples_from_texts(self, texts: Sequence[str], labels: Sequence[str]) -> list:
        raise FmtoolError(LABELS_NOTHING)

    def predict_texts(self, loaded, texts: Sequence[str]) -> list[dict[str, Any]]:
        return fill_mask(loaded.model, loaded.tokenizer, texts, loaded.runtime)


TASKS.register("mlm")(MaskedLmTask())
