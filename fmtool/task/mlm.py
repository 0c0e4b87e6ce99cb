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

from fmtool.config.schema import TaskConfig, TrainConfig
from fmtool.dataset.batching import inference_batches
from fmtool.dataset.examples import IGNORE_INDEX, labelled_positions
from fmtool.dataset.mlm import EVALUATION_EPOCH, BlockFeature, Masking, Packing
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


def filler_log_likelihoods(model, tokenizer, template: str, fillers: Sequence[str], batch_size: int) -> list[float]:
    """For each filler of `template`'s {secret}: the pseudo-log-likelihood of its tokens, the sum over them of
    log P(token | the filled template with that token masked)."""
    rows, owners, positions, targets = [], [], [], []
    # after [CLS] and the template's words before the secret
    start = 1 + len(tokenizer(template.split("{secret}")[0].strip(), add_special_tokens=False)["input_ids"])
    for index, secret in enumerate(fillers):
        ids = tokenizer(template.format(secret=secret))["input_ids"]
        secret_ids = tokenizer(secret, add_special_tokens=False)["input_ids"]
        for offset in range(len(secret_ids)):
            masked = list(ids)
            masked[start + offset] = tokenizer.mask_token_id
            rows.append(masked)
            owners.append(index)
            positions.append(start + offset)
            targets.append(ids[start + offset])
    totals = [0.0] * len(fillers)
    model.eval()
    for first in range(0, len(rows), batch_size):
        width = max(len(r) for r in rows[first : first + batch_size])
        batch = torch.tensor(
            [r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows[first : first + batch_size]],
            device=model.device,
        )
        mask = batch.ne(tokenizer.pad_token_id).long()
        logits = model(input_ids=batch, attention_mask=mask).logits.float()
        picked = (
            torch.arange(len(batch), device=batch.device),
            torch.tensor(positions[first : first + batch_size], device=batch.device),
        )
        log_p = logits[picked].log_softmax(-1)[
            torch.arange(len(batch)), torch.tensor(targets[first : first + batch_size], device=batch.device)
        ]
        for owner, value in zip(owners[first : first + batch_size], log_p.tolist()):
            totals[owner] += value
    return totals


class MaskedLmTask:
    name = "mlm"
    metrics = ("loss", "perplexity")
    head = Head(AutoModelForMaskedLM)
    labels_each_word = False
    language_model = True
    generates = False
    peft_task_type = None
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

    def document_scores(self, model, tokenizer, texts: Sequence[str], batch_size: int, max_tokens: int) -> None:
        return None  # a masked LM's pseudo-likelihood is no likelihood: the attacks' scores would not be comparable

    def filler_log_likelihoods(
        self, model, tokenizer, template: str, fillers: Sequence[str], batch_size: int
    ) -> list[float]:
        return filler_log_likelihoods(model, tokenizer, template, fillers, batch_size)

    def objective(self, task: TaskConfig, seed: int, tokenizer) -> "MaskedLanguageModelling":
        return MaskedLanguageModelling(Packing.masked(tokenizer), Masking.for_run(task, seed, tokenizer))


class MaskedLanguageModelling:
    """BERT's objective: masked afresh each epoch, the loss on the masked positions only."""

    def __init__(self, packing: Packing, masking: Masking) -> None:
        self.packing, self.masking = packing, masking

    def collate(self, features: Sequence[BlockFeature], epoch: int) -> dict[str, torch.Tensor]:
        return self.masking.collate(features, epoch)

    def loss_units(self, labels: torch.Tensor) -> torch.Tensor:
        return labelled_positions(labels)

    def trained(self, model) -> torch.nn.Module:
        return MaskedPositionsLM(model)

    def held_out(
        self, model, blocks: Sequence[BlockFeature], runtime: Runtime, on_batch: Callable[[int], None] = lambda n: None
    ) -> dict[str, Any]:
        """The held-out loss of the masked LM, or of the one the loop trains (its MaskedPositionsLM)."""
        plain = model.model if isinstance(model, MaskedPositionsLM) else model
        return held_out_loss(plain, blocks, self.masking, runtime, on_batch)


TASKS.register("mlm")(MaskedLmTask())
