"""The configuration as commands see it. Composition registers every plug-in's schema (the audit families') and the
`${probe:...}` resolver; validation checks the whole config against the registries of tasks, data formats, audit
families and loggers, reporting every problem at once before any weights load. It sits above the plug-ins so that
fmtool/config/ (schemas and composition) imports nothing of fmtool but errors."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmtool.audit import AUDITS, family_configs
from fmtool.config.compose import config_dir, package_dir, to_typed
from fmtool.config.schema import (
    AdversarialName,
    DataFormat,
    Freeze,
    PeftMethod,
    Strategy,
    TrainConfig,
    range_problems,
)
from fmtool.dataset import probes
from fmtool.dataset.augment import CHOICES
from fmtool.dataset.formats import FORMATS, reading_problem
from fmtool.errors import FmtoolError, one_line
from fmtool.logger import check_installed
from fmtool.model.build import check_head, local_config, skeleton, usable_positions
from fmtool.model.family import is_encoder, lora_problems
from fmtool.task import TASKS
from fmtool.trainer.freeze import apply_freeze

_FILE_KEYS = ("train_file", "validation_file", "test_file")


def _dataset_problems(cfg: TrainConfig) -> list[str]:
    data, pretraining = cfg.dataset, TASKS.get(cfg.task.name).language_model
    problems = []
    source = FORMATS.get(data.format.value)
    if source.reads_files:
        if data.train_file is None:
            problems.append(f"dataset.train_file is not set for dataset '{data.name}'")
        for key in _FILE_KEYS:
            name = getattr(data, key)
            if name is None:
                continue
            path = data.file_path(key)
            if data.data_dir is None and not path.is_absolute() and not path.is_file():
                problems.append(
                    f"dataset.data_dir is not set for dataset '{data.name}'; pass dataset.data_dir=/path/to/{data.name}"
                )
                break
            if path.is_dir():
                problems.append(f"dataset.{key}: {path} is a directory; give the data file in it")
            elif not path.is_file():
                problems.append(f"dataset.{key}: {path} not found")
    unreadable = reading_problem(data.format.value, documents=pretraining)
    if unreadable:
        problems.append(unreadable)
    if data.streaming and not pretraining:
        problems.append("dataset.streaming=true is for task=mlm corpora; fine-tuning data is read into memory")
    if data.augment.perturbations:
        unknown = [p for p in data.augment.perturbations if p not in CHOICES]
        if unknown:
            problems.append(f"dataset.augment.perturbations: unknown '{unknown[0]}'; choose from: {', '.join(CHOICES)}")
        if pretraining:
            problems.append("dataset.augment is for NER and classification training data")
    if data.redact_pii and pretraining:
        problems.append(
            "dataset.redact_pii=true is for NER and classification data; pre-training corpora are not redacted"
        )
    if data.streaming and not cfg.trainer.max_steps:
        problems.append("dataset.streaming=true needs trainer.max_steps: a streamed corpus has no known length")
    if data.format == DataFormat.hf and not data.hf_path:
        problems.append("dataset.hf_path must name a Hugging Face dataset when dataset.format=hf")
    elif data.format == DataFormat.hf_disk and not data.data_dir:
        problems.append("dataset.data_dir must be a datasets.save_to_disk folder when dataset.format=hf_disk")
    return problems


def _trainer_problems(cfg: TrainConfig) -> list[str]:
    trainer = cfg.trainer
    problems = []
    if trainer.max_batch_tokens is not None and trainer.max_batch_tokens < trainer.max_length:
        problems.append(
            f"trainer.max_batch_tokens={trainer.max_batch_tokens} must be at least "
            f"trainer.max_length={trainer.max_length} (one full row), or null"
        )
    if trainer.epochs < 1 and not trainer.max_steps:
        problems.append(f"trainer.epochs={trainer.epochs} must be at least 1 (or set trainer.max_steps)")
    if trainer.freeze == Freeze.bottom_k and trainer.freeze_layers < 1:
        problems.append("trainer.freeze=bottom_k needs trainer.freeze_layers >= 1")
    if trainer.strategy == Strategy.fsdp and trainer.checkpoint_every_steps is not None:
        problems.append(
            "trainer.strategy=fsdp cannot be combined with trainer.checkpoint_every_steps: a checkpoint holds one "
            "rank's state, and a sharded run's is spread over all ranks"
        )
    task = TASKS.get(cfg.task.name)
    problems += task.config_problems(cfg)
    metrics = task.metrics
    if trainer.metric not in metrics:
        problems.append(
            f"trainer.metric='{trainer.metric}' is not a {cfg.task.name} metric; choose one of: {', '.join(metrics)}"
        )
    return problems


def _optimizer_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    if cfg.model.name is None and not cfg.model.random_init:
        problems.append("model.name is null: give a hub id or local directory, or set model.random_init=true")
    for key in ("name", "tokenizer"):
        source = getattr(cfg.model, key)
        if source is not None and _is_local_path(source) and not Path(source).expanduser().exists():
            problems.append(f"model.{key}: {source} not found (a local directory; a hub id looks like org/name)")
    return problems


def _is_local_path(source: str) -> bool:
    """A hub id is name or org/name; anything with more parts, or rooted, is a path on this machine."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or Path(source).is_dir()


def _privacy_problems(cfg: TrainConfig) -> list[str]:
    """DP-SGD's accounting holds for its own loop only: options that change the loop are refused, by name."""
    dp, trainer = cfg.trainer.dp, cfg.trainer
    if not dp.enabled:
        return []
    problems = []
    if (dp.noise_multiplier is None) == (dp.target_epsilon is None):
        problems.append("trainer.dp: give exactly one of trainer.dp.noise_multiplier and trainer.dp.target_epsilon")
    conflicts = {
        f"task={cfg.task.name}": TASKS.get(cfg.task.name).language_model,
        f"adversarial={cfg.adversarial.name.value}": cfg.adversarial.name != AdversarialName.none,
        "trainer.compile": trainer.compile,
        "trainer.gradient_checkpointing": trainer.gradient_checkpointing,
        "trainer.checkpoint_every_steps": trainer.checkpoint_every_steps is not None,
        "trainer.strategy=fsdp": trainer.strategy == Strategy.fsdp,
        "trainer.max_steps": trainer.max_steps is not None,
        f"trainer.grad_accum_steps={trainer.grad_accum_steps}": trainer.grad_accum_steps != 1,
        "trainer.eval_every_steps": trainer.eval_every_steps is not None,
    }
    refused = [name for name, present in conflicts.items() if present]
    if refused:
        problems.append(
            f"trainer.dp.enabled=true cannot be combined with {', '.join(refused)} (DP-SGD runs its own "
            "epoch-based loop)"
        )
    return problems


def _peft_problems(cfg: TrainConfig) -> list[str]:
    """LoRA trains adapters and the head: options that would train or freeze other weights are refused, by name."""
    trainer = cfg.trainer
    if trainer.peft != PeftMethod.lora:
        return []
    problems = []
    task = TASKS.get(cfg.task.name)
    if task.peft_task_type is None:
        problems.append(f"trainer.peft=lora: peft has no task type for task={cfg.task.name}")
    if trainer.freeze != Freeze.none:
        problems.append(
            f"trainer.freeze={trainer.freeze.value} cannot be combined with trainer.peft=lora (LoRA freezes)"
        )
    if trainer.dp.enabled:
        problems.append(
            "trainer.dp.enabled=true cannot be combined with trainer.peft=lora yet: Opacus's per-example gradients of "
            "peft's adapter layers are not verified here"
        )
    return problems


def _model_problems(cfg: TrainConfig) -> list[str]:
    """What the model's own config says of the settings, read once when it is on this machine (a local directory,
    or random init; a hub model's are found when it is built, before training): positions for trainer.max_length, a
    family the task's head class cannot build, model.bidirectional on an encoder, and on the model's skeleton (meta
    device, no weights) LoRA's targets and rank and a freeze that leaves nothing to train."""
    config = local_config(cfg.model)
    if config is None:
        return []
    task, trainer, problems = TASKS.get(cfg.task.name), cfg.trainer, []
    positions = usable_positions(config.model_type, getattr(config, "max_position_embeddings", None))
    if positions is not None and trainer.max_length > positions:
        problems.append(
            f"trainer.max_length={trainer.max_length} is longer than the model's {positions} position embeddings"
        )
    try:
        check_head(task.head, config, "model.name" if cfg.model.name else "model.model_type")
    except FmtoolError as error:
        return [*problems, str(error)]
    if cfg.model.bidirectional and not task.language_model and is_encoder(config):
        problems.append(
            f"model.bidirectional=true is for decoders; model_type={config.model_type} is an encoder, which already "
            "reads both ways"
        )
    lora = trainer.peft == PeftMethod.lora and task.peft_task_type is not None
    if not lora and trainer.freeze == Freeze.none:
        return problems
    model = skeleton(config, task.head)
    if lora:
        return problems + lora_problems(model, trainer.lora.target_modules, trainer.lora.r)
    try:
        trainable = apply_freeze(model, trainer.freeze, trainer.freeze_layers)
    except FmtoolError as error:
        return [*problems, str(error)]
    if trainable == 0:
        problems.append(
            f"trainer.freeze={trainer.freeze.value} leaves no weight of {type(model).__name__} to train (its output "
            "layer is its input embeddings, tied)"
        )
    return problems


def _task_problems(cfg: TrainConfig) -> list[str]:
    problems, pretraining = [], TASKS.get(cfg.task.name).language_model
    problems += _peft_problems(cfg)
    if cfg.model.bidirectional and pretraining:
        problems.append(
            f"model.bidirectional=true is for fine-tuning; a {cfg.task.name} language model reads left to right"
        )
    canaries = cfg.task.canaries
    if canaries.repetitions:
        if not pretraining or cfg.dataset.streaming:
            problems.append(
                "task.canaries are planted in an in-memory pre-training corpus: task=mlm without dataset.streaming"
            )
        if canaries.template.count("{secret}") != 1 or "{" in canaries.template.replace("{secret}", ""):
            problems.append(
                f"task.canaries.template='{canaries.template}' must contain {{secret}} exactly once and no other braces"
            )
    if cfg.model.tokenizer_vocab_size is not None:
        if not pretraining or not cfg.model.random_init:
            problems.append(
                "model.tokenizer_vocab_size learns a new vocabulary: only for task=mlm with model.random_init=true"
            )
    return problems


# config.json keys of transformers' architectures that count something (at least 1) or are a probability
_COUNT_KEYS = ("vocab_size", "max_position_embeddings", "type_vocab_size")
_COUNT_PARTS = ("_size", "_layers", "_heads", "num_")


def _override_problems(cfg: TrainConfig) -> list[str]:
    """model.config_overrides are the architecture's own keys: sizes and counts must be at least 1, dropout
    probabilities in [0, 1)."""
    problems = []
    for key, value in cfg.model.config_overrides.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if ("dropout" in key or key.endswith("_prob")) and not 0 <= value < 1:
            problems.append(f"model.config_overrides.{key}={value} is outside [0, 1)")
        elif (key in _COUNT_KEYS or any(part in key for part in _COUNT_PARTS)) and value < 1:
            problems.append(f"model.config_overrides.{key}={value} is outside [1, inf)")
    return problems


def _audit_problems(cfg: TrainConfig) -> list[str]:
    try:
        family_configs(cfg.audit)
    except FmtoolError as error:
        return [str(error).removeprefix("config: ")]
    return []


def _logger_problems(cfg: TrainConfig) -> list[str]:
    problem = check_installed(cfg.logger)
    return [problem] if problem else []


def validate(cfg: TrainConfig) -> TrainConfig:
    """Return cfg unchanged, or raise one FmtoolError listing every problem found."""
    if cfg.task.name not in TASKS:
        raise FmtoolError(f"config: task.name: {TASKS.unknown_message(cfg.task.name)}")
    problems = (
        range_problems(cfg)
        + _override_problems(cfg)
        + _dataset_problems(cfg)
        + _trainer_problems(cfg)
        + _optimizer_problems(cfg)
        + _task_problems(cfg)
        + _model_problems(cfg)
        + _privacy_problems(cfg)
        + _audit_problems(cfg)
        + _logger_problems(cfg)
    )
    if problems:
        raise FmtoolError("config: " + "; ".join(problems))
    return cfg


def setup() -> None:
    """Register the schemas and resolvers that configs/ refers to (idempotent)."""
    if not OmegaConf.has_resolver("pkg_dir"):
        # configs/ point at files shipped inside installed packages (the default model, demo data)
        OmegaConf.register_new_resolver("pkg_dir", package_dir)
    if not OmegaConf.has_resolver("probe"):
        OmegaConf.register_new_resolver("probe", probes.resolve)
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    # each configs/audit/<family>.yaml extends its family's dataclass, so `audit.<family>.<key>=value` needs no '+'
    # and a mistyped key fails with its name when the config is composed
    for name in AUDITS.names():
        store.store(group="audit_schema", name=name, node={name: AUDITS.get(name).config_type})


def compose_train_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose configs/<config_name>.yaml with command-line style overrides, without starting a run."""
    setup()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise FmtoolError(f"config: {one_line(error)}") from None


def load_train_config(overrides: Sequence[str] = ()) -> TrainConfig:
    """The validated TrainConfig that `fmtool train` would run with these overrides."""
    return validate(to_typed(compose_train_config(overrides)))
