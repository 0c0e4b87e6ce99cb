"""A word-embedding table split by the training data: rows of token ids it contains train, the rest stay fixed.

A fine-tuning step's word-embedding gradient is dense (30,522 x 384 for MiniLM) though a batch touches a few
hundred rows, and zero-filling it, clipping it and AdamW-updating it was a tenth of a CPU step. A row whose
id never occurs in the training data has a zero gradient at every step, so AdamW never moves it (its
moments stay zero) but for weight decay, which at fine-tuning learning rates shrinks it by about 1e-4
over an epoch. Keeping such rows out of the trainable table (54% of MiniLM's rows on CoNLL-2003) gives
the same model for less work. The split lives only during training: merged() gives back an nn.Embedding
with the usual state-dict key, for evaluation, saving and audits.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F


class SeenRowsEmbedding(torch.nn.Module):
    def __init__(self, embedding: torch.nn.Embedding, seen_ids: Iterable[int]) -> None:
        super().__init__()
        vocab = embedding.num_embeddings
        is_seen = torch.zeros(vocab, dtype=torch.bool)
        is_seen[torch.tensor(list(set(seen_ids)), dtype=torch.long)] = True
        # id -> its row in whichever table holds it
        row = torch.empty(vocab, dtype=torch.long)
        row[is_seen] = torch.arange(int(is_seen.sum()))
        row[~is_seen] = torch.arange(int((~is_seen).sum()))
        self.register_buffer("is_seen", is_seen, persistent=False)
        self.register_buffer("row", row, persistent=False)
        weight = embedding.weight.detach()
        self.seen = torch.nn.Parameter(weight[is_seen].clone())
        # a parameter without gradient rather than a buffer: DistributedDataParallel re-broadcasts buffers every forward
        self.unseen = torch.nn.Parameter(weight[~is_seen].clone(), requires_grad=False)
        self.padding_row = (
            None
            if embedding.padding_idx is None or not is_seen[embedding.padding_idx]
            else int(row[embedding.padding_idx])
        )
        self.embedding_dim, self.num_embeddings, self.padding_idx = (
            embedding.embedding_dim,
            vocab,
            embedding.padding_idx,
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows, seen = self.row[input_ids], self.is_seen[input_ids]
        trained = F.embedding(rows.where(seen, 0), self.seen, self.padding_row)
        return torch.where(
            seen.unsqueeze(-1), trained, F.embedding(rows.where(~seen, 0), self.unseen).to(trained.dtype)
        )

    def merged(self) -> torch.nn.Embedding:
        embedding = torch.nn.Embedding(
            self.num_embeddings, self.embedding_dim, self.padding_idx, device=self.seen.device, dtype=self.seen.dtype
        )
        with torch.no_grad():
            embedding.weight[self.is_seen] = self.seen
            embedding.weight[~self.is_seen] = self.unseen
        return embedding


def train_seen_rows_only(model: torch.nn.Module, seen_ids: Iterable[int]) -> bool:
    """Swap the model's input embedding for a SeenRowsEmbedding when it is a trainable nn.Embedding; True if swapped."""
    embedding = model.get_input_embeddings()
    if type(embedding) is not torch.nn.Embedding or not embedding.weight.requires_grad:
        return False
    model.set_input_embeddings(SeenRowsEmbedding(embedding, seen_ids))
    return True


def merge_seen_rows(model: torch.nn.Module) -> None:
    embedding = model.get_input_embeddings()
    if isinstance(embedding, SeenRowsEmbedding):
        model.set_input_embeddings(embedding.merged())
