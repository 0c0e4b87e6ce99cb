"""Twins: fresh models fine-tuned like a run on other examples, without a run directory. Audits get one through
AuditContext.finetune (the membership reference model, the backdoor scan's trusted reference, shadow models), so
no audit imports a recipe."""

from __future__ import annotations

from typing import Optional, Sequence

from omegaconf import OmegaConf

from fmtool.config.compose import to_typed, with_dotlist
from fmtool.config.schema import TrainConfig
from fmtool.configure import validate
from fmtool.dataset.examples import Example
from fmtool.model import build_model, load_tokenizer
from fmtool.model.build import special_token_ids
from fmtool.model.load import LoadPolicy
from fmtool.task import TASKS
from fmtool.trainer.lora import merged
from fmtool.trainer.setup import fit_features, prepare_model, set_seed, with_adapters


def with_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """`cfg` with Hydra-style dotlist overrides (key=value) applied and validated."""
    return validate(to_typed(with_dotlist(OmegaConf.structured(cfg), overrides, "config")))


def _fresh(cfg: TrainConfig, labels: Sequence[str], policy: Optional[LoadPolicy]):
    """(the model `cfg` starts from, with a new task head for `labels`; its tokenizer), seeded as a run is."""
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model, policy)
    model = build_model(
        cfg.model,
        TASKS.get(cfg.task.name).head,
        list(labels),
        vocab_size=len(tokenizer),
        inherited=[],
        token_ids=special_token_ids(tokenizer),
        policy=policy,
    )
    return model, tokenizer


def starting_model(cfg: TrainConfig, labels: Sequence[str], *, policy: Optional[LoadPolicy] = None):
    """The model a run of `cfg` starts from, before any training (AuditContext.starting_model: the backdoor scan
    compares the audited weights with it), loaded under `policy` (an audit's: its command's flags)."""
    return _fresh(cfg, labels, policy)[0].eval()


def finetune_model(
    cfg: TrainConfig,
    labels: Sequence[str],
    examples: Sequence[Example],
    overrides: Sequence[str] = (),
    *,
    policy: Optional[LoadPolicy] = None,
):
    """A fresh model fine-tuned on `examples` as `cfg` (plus overrides) says, without validation or run directory.

    Audits get this as AuditContext.finetune, to train twins and shadow models without importing the pipeline.
    """
    cfg = with_overrides(cfg, overrides)
    task = TASKS.get(cfg.task.name)
    model, tokenizer = _fresh(cfg, labels, policy)
    model = with_adapters(model, cfg, task.peft_task_type)
    runtime, _ = prepare_model(model, cfg)
    features = task.encode(list(examples), tokenizer, {label: i for i, label in enumerate(labels)}, cfg.trainer)
    fit_features(model, tokenizer, runtime, features, cfg, evaluate=None)
    return merged(model).eval()
