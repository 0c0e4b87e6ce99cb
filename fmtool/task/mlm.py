"""Masked-language-model pre-training: held-out loss and perplexity, and fill-mask prediction.

Held-out loss is the mean cross-entropy over the masked tokens of the validation blocks, masked with
a fixed seed so every evaluation (and the starting model) is scored on the same masks; perplexity
is its exponential.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from fmtool.dataset.batching import inference_batches
from fmtool.dataset.mlm import EVALUATION_EPOCH, BlockFeature, Masking
from fmtool.dataset.ner import IGNORE_INDEX
from fmtool.inference import Runtime
from fmtool.task.base import TASKS


def held_out_loss(model, blocks: Sequence[BlockFeature], masking: Masking, runtime: Runtime, on_batch: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    model.eval()
    total_loss, total_tokens = 0.0, 0
    with torch.inference_mode(), runtime.autocast():
        for indices in inference_batches([len(b.input_ids) for b in blocks], runtime.batch_size):
            batch = {k: v.to(runtime.device) for k, v in masking.collate([blocks[i] for i in indices], EVALUATION_EPOCH).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            labels = batch["labels"]
            total_loss += torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=IGNORE_INDEX, reduction="sum").item()
            total_tokens += int(labels.ne(IGNORE_INDEX).sum())
            on_batch(len(indices))
    loss = total_loss / max(total_tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "details": {"masked_tokens": total_tokens, "blocks": len(blocks)}}


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
                fills.append([{"token": tokenizer.convert_ids_to_tokens(int(i)), "probability": round(float(p), 4)} for p, i in zip(top.values, top.indices)])
            results.append({"text": text, "masks": fills})
    return results


class MaskedLmTask:
    name = "mlm"
    metrics = ("loss", "perplexity")


TASKS.register("mlm")(MaskedLmTask())
