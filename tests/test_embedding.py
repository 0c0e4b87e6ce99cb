"""Training only the embedding rows of ids in the training data: same lookups, same trained model, plain nn.Embedding
after."""

from __future__ import annotations

import torch

from fmtool.runs import RunDir
from fmtool.task import TASKS
from fmtool.trainer.embedding import SeenRowsEmbedding, merge_seen_rows, train_seen_rows_only
from tests.conftest import train_tiny
from tests.helpers import SHORT, model_weights


def _embedding() -> torch.nn.Embedding:
    torch.manual_seed(0)
    return torch.nn.Embedding(50, 8, padding_idx=0)


def test_lookups_match_the_full_table_for_seen_and_unseen_ids():
    full = _embedding()
    split = SeenRowsEmbedding(full, seen_ids=[0, 3, 7, 11, 49])
    ids = torch.tensor([[3, 7, 0, 0], [49, 5, 12, 11]])  # 5 and 12 never seen
    assert torch.equal(split(ids), full(ids))
    assert torch.equal(split.merged().weight, full.weight)
    assert split.seen.shape == (5, 8) and [p.requires_grad for p in (split.seen, split.unseen)] == [True, False]


def test_only_seen_rows_train_and_the_padding_row_gets_no_gradient():
    full = _embedding()
    split = SeenRowsEmbedding(full, seen_ids=[0, 3, 7])
    optimizer = torch.optim.SGD(split.parameters(), lr=0.5)
    split(torch.tensor([[3, 7, 0]])).sum().backward()
    optimizer.step()
    merged = split.merged().weight
    changed = (merged != full.weight).any(dim=1).nonzero().flatten().tolist()
    assert changed == [3, 7]


def test_training_with_seen_rows_gives_the_model_full_training_gives(tmp_path):
    # weight decay off: it is the one thing AdamW does to a row whose gradient is always zero
    same = [*SHORT, "model.dropout=0.0", "trainer.max_steps=4", "trainer.precision=fp32", "optimizer.weight_decay=0"]
    train_tiny(tmp_path / "full", "ner", *same, "trainer.skip_unseen_embedding_rows=false")
    train_tiny(tmp_path / "seen", "ner", *same, "trainer.skip_unseen_embedding_rows=true")
    train_tiny(tmp_path / "fixed", "ner", *same, "trainer.freeze=embeddings")
    full, seen, fixed = (model_weights(RunDir.open(tmp_path / name)) for name in ("full", "seen", "fixed"))
    assert full.keys() == seen.keys()
    word = next(k for k in full if k.endswith("word_embeddings.weight"))
    assert not torch.allclose(full[word], fixed[word], atol=1e-4)  # the embeddings did train
    assert all(torch.allclose(full[k], seen[k], atol=1e-6) for k in full)


def test_swap_applies_to_trainable_embeddings_only_and_merges_back():
    from fmtool.model import build_model, load_tokenizer
    from tests.conftest import tiny_config

    cfg = tiny_config("classification")
    model = build_model(
        cfg.model, TASKS.get(cfg.task.name).head, ["neg", "pos"], vocab_size=len(load_tokenizer(cfg.model))
    )
    keys = list(model.state_dict())
    assert train_seen_rows_only(model, [0, 1, 2])
    assert isinstance(model.get_input_embeddings(), SeenRowsEmbedding)
    merge_seen_rows(model)
    assert type(model.get_input_embeddings()) is torch.nn.Embedding and list(model.state_dict()) == keys
    model.get_input_embeddings().requires_grad_(False)
    assert not train_seen_rows_only(model, [0, 1, 2])
