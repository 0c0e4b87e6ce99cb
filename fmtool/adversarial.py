"""Adversarial training in embedding space (config group `adversarial`): fgm, pgd, freelb.

Every method perturbs the output of the model's input-embedding layer by a per-example L2-bounded
delta (padding positions excluded), so it works for any Hugging Face encoder and any task head. The
training loop hands each micro-batch to the configured method as a MicroStep; the method decides
which forward/backward passes to run. `attack` is the same PGD used to measure robustness.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Protocol

import torch

from fmtool.config.schema import AdversarialConfig
from fmtool.model.build import unwrap
from fmtool.registry import Registry


@contextlib.contextmanager
def perturbed_embeddings(model: torch.nn.Module, delta: Optional[torch.Tensor]):
    """Add `delta` to the input-embedding output inside the block (no-op when delta is None)."""
    if delta is None:
        yield
        return
    handle = (
        unwrap(model)
        .get_input_embeddings()
        .register_forward_hook(lambda module, inputs, output: output + delta.to(output.dtype))
    )
    try:
        yield
    finally:
        handle.remove()


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def unit_direction(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """grad restricted to real tokens, scaled to unit L2 norm per example."""
    grad = grad.float() * mask
    return grad / _norm(grad)


def project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Scale each example's delta back onto the epsilon ball if it left it."""
    return delta * (epsilon / torch.maximum(_norm(delta), torch.tensor(epsilon, device=delta.device)))


class MicroStep(Protocol):
    """One micro-batch of an update, as the training loop exposes it to an adversarial method."""

    def zeros(self) -> torch.Tensor:
        """A zero perturbation of the embedding output's shape (float32)."""

    def token_mask(self) -> torch.Tensor:
        """[batch, length, 1]: 1 on real tokens."""

    def backward(self, delta: Optional[torch.Tensor], *, scale: float = 1.0, last: bool = True) -> torch.Tensor:
        """Forward with `delta`, backward into the parameters (weighted by `scale`); the detached loss.
        Only the `last` backward of an update synchronises gradients across ranks."""

    def delta_grad(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, d loss / d delta) without touching parameter gradients."""


Method = Callable[[MicroStep, AdversarialConfig], torch.Tensor]
METHODS: Registry[Method] = Registry("adversarial")


@METHODS.register("none")
def plain(step: MicroStep, cfg: AdversarialConfig) -> torch.Tensor:
    return step.backward(None)


@METHODS.register("fgm")
def fgm(step: MicroStep, cfg: AdversarialConfig) -> torch.Tensor:
    delta = step.zeros().requires_grad_()
    loss = step.backward(delta, last=False)
    step.backward((cfg.epsilon * unit_direction(delta.grad, step.token_mask())).detach())
    return loss


@METHODS.register("pgd")
def pgd(step: MicroStep, cfg: AdversarialConfig) -> torch.Tensor:
    delta = step.zeros().requires_grad_()
    loss = step.backward(delta, last=False)
    mask = step.token_mask()
    delta = project(cfg.step_size * unit_direction(delta.grad, mask), cfg.epsilon)
    for _ in range(cfg.steps - 1):
        _, grad = step.delta_grad(delta)
        delta = project(delta + cfg.step_size * unit_direction(grad, mask), cfg.epsilon)
    step.backward(delta)
    return loss


@METHODS.register("freelb")
def freelb(step: MicroStep, cfg: AdversarialConfig) -> torch.Tensor:
    mask = step.token_mask()
    delta = step.zeros()
    if cfg.init_magnitude > 0:
        delta = project(cfg.init_magnitude * unit_direction(torch.rand_like(delta) * 2 - 1, mask), cfg.init_magnitude)
    losses = []
    for k in range(cfg.steps):
        delta = delta.detach().requires_grad_()
        losses.append(step.backward(delta, scale=1.0 / cfg.steps, last=k == cfg.steps - 1))
        delta = project(delta + cfg.step_size * unit_direction(delta.grad, mask), cfg.epsilon)
    return torch.stack(losses).mean()


def attack(
    forward_loss: Callable[[Optional[torch.Tensor]], torch.Tensor],
    zeros: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
) -> torch.Tensor:
    """The worst-case perturbation PGD finds within the epsilon ball for a batch (for robustness scores)."""
    delta = zeros
    for _ in range(steps):
        delta = delta.detach().requires_grad_()
        (grad,) = torch.autograd.grad(forward_loss(delta), delta)
        delta = project(delta + step_size * unit_direction(grad, mask), epsilon)
    return delta.detach()
