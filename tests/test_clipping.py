import copy

import pytest
import torch

from fmtool.trainer.clipping import clipped_step


def _model_with_gradients(scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    model(torch.randn(8, 16)).pow(2).sum().mul(scale).backward()
    return model


def _optimizer(model: torch.nn.Module, kind: str) -> torch.optim.Optimizer:
    if kind == "fused_adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    return torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)


@pytest.mark.parametrize("kind", ["fused_adamw", "sgd"])
@pytest.mark.parametrize("scale", [100.0, 1e-3])  # norm far above the limit (clipped) and far below (untouched)
def test_clipped_step_equals_clip_grad_norm_then_step(kind, scale):
    ours, reference = _model_with_gradients(scale), _model_with_gradients(scale)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    norm = clipped_step(_optimizer(ours, kind), scaler, max_grad_norm=1.0)
    reference_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    _optimizer(reference, kind).step()
    assert norm.item() == pytest.approx(reference_norm.item(), rel=1e-5)
    assert (norm.item() > 1.0) == (scale > 1.0)
    for mine, theirs in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_clipping_changes_the_update():
    clipped, unclipped = _model_with_gradients(100.0), _model_with_gradients(100.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    clipped_step(torch.optim.SGD(clipped.parameters(), lr=1e-2), scaler, max_grad_norm=1.0)
    assert clipped_step(torch.optim.SGD(unclipped.parameters(), lr=1e-2), scaler, max_grad_norm=None) is None
    assert not torch.allclose(clipped[0].weight, unclipped[0].weight)


def test_the_clip_factor_does_not_outlive_the_step():
    model = _model_with_gradients(100.0)
    optimizer = _optimizer(model, "fused_adamw")
    clipped_step(optimizer, torch.amp.GradScaler("cpu", enabled=False), max_grad_norm=1.0)
    assert not hasattr(optimizer, "grad_scale")
    gradients = [p.grad.clone() for p in model.parameters()]
    unclipped = copy.deepcopy(model)
    for copied, gradient in zip(unclipped.parameters(), gradients):
        copied.grad = gradient.clone()
    reference = _optimizer(unclipped, "fused_adamw")
    reference.load_state_dict(optimizer.state_dict())
    optimizer.step()  # a later step without clipping sees the gradients as they are
    reference.step()
    for mine, theirs, gradient in zip(model.parameters(), unclipped.parameters(), gradients):
        torch.testing.assert_close(mine, theirs)
        torch.testing.assert_close(mine.grad, gradient)
