"""SFC64 dropout: torch's dropout distribution and scaling, seeded from torch, used in training on CPU."""

from __future__ import annotations

import torch

from fmtool.trainer.dropout import SFC64Dropout, keep_mask, use_sfc64_dropout
from tests.conftest import tiny_config


def test_masks_keep_one_minus_p_and_scale_the_kept_values():
    dropout = SFC64Dropout(0.25).train()
    inputs = torch.ones(1000, 1000, requires_grad=True)
    outputs = dropout(inputs)
    kept = outputs != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.002
    assert torch.allclose(outputs[kept], torch.full_like(outputs[kept], 1 / 0.75))
    outputs.sum().backward()
    assert torch.equal(inputs.grad, outputs.detach())
    assert torch.equal(dropout.eval()(inputs), inputs)


def test_masks_follow_torch_seed_and_differ_between_calls():
    torch.manual_seed(3)
    first, second = keep_mask(torch.Size([64, 64]), 0.1), keep_mask(torch.Size([64, 64]), 0.1)
    torch.manual_seed(3)
    assert torch.equal(keep_mask(torch.Size([64, 64]), 0.1), first)
    assert not torch.equal(first, second)


def test_training_on_cpu_replaces_every_dropout_module():
    from fmtool.model import build_model, load_tokenizer
    from fmtool.trainer.setup import prepare_model

    cfg = tiny_config("classification")
    model = build_model(cfg.model, cfg.task.name, ["neg", "pos"], vocab_size=len(load_tokenizer(cfg.model)))
    before = sum(type(m) is torch.nn.Dropout for m in model.modules())
    prepare_model(model, cfg)
    assert before > 0 and sum(isinstance(m, SFC64Dropout) for m in model.modules()) == before
    assert use_sfc64_dropout(model) == 0
