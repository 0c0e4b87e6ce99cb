"""BF16OutputLayerNorm: bf16 out under CPU bf16 autocast, normalised in fp32 with fp32 weights; torch's LayerNorm
otherwise."""

from __future__ import annotations

import copy

import torch

from fmtool.task import TASKS
from fmtool.trainer.layer_norm import BF16OutputLayerNorm, use_bf16_layer_norm
from tests.conftest import tiny_config


def _layer_norms():
    reference = torch.nn.LayerNorm(64)
    torch.nn.init.normal_(reference.weight)
    torch.nn.init.normal_(reference.bias)
    changed = copy.deepcopy(reference)
    assert use_bf16_layer_norm(changed) == 1 and type(changed) is BF16OutputLayerNorm
    return reference, changed


def test_outputs_bf16_under_cpu_autocast_with_fp32_weights_and_gradients():
    reference, changed = _layer_norms()
    inputs = torch.randn(8, 64) * 3 + 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, output = reference(inputs), changed(inputs)
    assert expected.dtype == torch.float32 and output.dtype == torch.bfloat16
    torch.testing.assert_close(output.float(), expected, atol=0.05, rtol=0.02)
    expected.sum().backward()
    output.float().sum().backward()
    assert changed.weight.grad.dtype == torch.float32
    torch.testing.assert_close(changed.weight.grad, reference.weight.grad, atol=0.1, rtol=0.02)


def test_is_torch_layer_norm_outside_bf16_autocast():
    reference, changed = _layer_norms()
    inputs = torch.randn(8, 64)
    assert torch.equal(changed(inputs), reference(inputs))
    with torch.autocast("cpu", dtype=torch.float16):
        assert torch.equal(changed(inputs), reference(inputs))
    assert list(changed.state_dict()) == list(reference.state_dict())


def test_training_on_cpu_in_bf16_swaps_every_layer_norm_and_keeps_the_hidden_states():
    from fmtool.model import build_model, load_tokenizer
    from fmtool.trainer.setup import prepare_model

    cfg = tiny_config("classification", "trainer.precision=bf16", "trainer.device=cpu")
    model = build_model(
        cfg.model, TASKS.get(cfg.task.name).head, ["neg", "pos"], vocab_size=len(load_tokenizer(cfg.model))
    ).eval()
    batch = {"input_ids": torch.randint(5, 100, (4, 16)), "attention_mask": torch.ones(4, 16, dtype=torch.long)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(**batch, output_hidden_states=True).hidden_states[-1].float()
    count = sum(type(m) is torch.nn.LayerNorm for m in model.modules())
    prepare_model(model, cfg)
    assert count > 0 and sum(type(m) is BF16OutputLayerNorm for m in model.modules()) == count
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
    assert hidden.dtype == torch.bfloat16
    # the last LayerNorm's output: unit scale, so these tolerances are bf16 rounding, not slack
    torch.testing.assert_close(hidden.float(), expected, atol=0.05, rtol=0.02)


def test_fp32_training_keeps_torch_layer_norm():
    from fmtool.model import build_model, load_tokenizer
    from fmtool.trainer.setup import prepare_model

    cfg = tiny_config("classification", "trainer.precision=fp32")
    model = build_model(
        cfg.model, TASKS.get(cfg.task.name).head, ["neg", "pos"], vocab_size=len(load_tokenizer(cfg.model))
    )
    prepare_model(model, cfg)
    assert not any(type(m) is BF16OutputLayerNorm for m in model.modules())
