"""Dataclass schemas for every config group.

Every YAML file in configs/ merges into these, so a misspelt key or an unknown choice fails at
composition time with the key's full name instead of being silently ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass(frozen=True)
class Range:
    """The values a numeric option may take; a float must also be finite."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        low = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{_number(self.low)}"
        high = "inf)" if self.high is None else f"{_number(self.high)}{')' if self.high_open else ']'}"
        return f"{low}, {high}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def ranged(
    default: Any = None,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    factory: Any = None,
) -> Any:
    """A dataclass field whose value (or each value of a list) must lie in the range; None means unset."""
    metadata = {"range": Range(low, high, low_open, high_open)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def range_problems(node: Any, prefix: str = "") -> list[str]:
    """'key=value is outside [low, high]' for every ranged field of a config dataclass tree that is out of range."""
    problems = []
    for spec in fields(node):
        value, key = getattr(node, spec.name), f"{prefix}{spec.name}"
        if is_dataclass(value):
            problems += range_problems(value, f"{key}.")
            continue
        bounds = spec.metadata.get("range")
        if bounds is None or value is None:
            continue
        if not all(bounds.holds(v) for v in (value if isinstance(value, (list, tuple)) else [value])):
            if isinstance(value, (list, tuple)):
                problems.append(f"{key}={list(value)}: each value must lie in {bounds}")
            else:
                problems.append(
                    f"{key}={value} is outside {bounds}{' (or null)' if 'Optional' in str(spec.type) else ''}"
                )
    return problems


class Choice(str, Enum):
    """A string choice: prints as its value, so ${task.name} in a path reads 'ner'."""

    def __str__(self) -> str:
        return self.value


class DataFormat(Choice):
    conll = "conll"
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    clinc_json = "clinc_json"
    text = "text"
    hf = "hf"
    hf_disk = "hf_disk"


class TagScheme(Choice):
    auto = "auto"
    iob1 = "iob1"
    iob2 = "iob2"
    bioes = "bioes"


class OptimizerName(Choice):
    adamw = "adamw"
    sgd = "sgd"


class SchedulerName(Choice):
    linear = "linear"
    cosine = "cosine"
    constant = "constant"


class Precision(Choice):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Freeze(Choice):
    none = "none"
    embeddings = "embeddings"
    bottom_k = "bottom_k"
    all_but_head = "all_but_head"


class AdversarialName(Choice):
    none = "none"
    fgm = "fgm"
    pgd = "pgd"
    freelb = "freelb"


class Batching(Choice):
    length_grouped = "length_grouped"
    random = "random"


@dataclass
class CanaryConfig:
    """Secrets planted in a pre-training corpus to measure memorisation (fmtool/dataset/canaries.py)."""

    repetitions: List[int] = ranged(low=1, factory=list)  # one canary per entry, inserted that many times; empty: none
    template: str = "my secret number is {secret}"
    digits: int = ranged(6, low=1, high=12)


@dataclass
class TaskConfig:
    # a task plug-in's registry name (fmtool/task/<name>.py), chosen with +task=<name>
    name: str = MISSING
    # masked-LM pre-training only (task=mlm)
    mask_probability: float = ranged(0.15, low=0, high=1, low_open=True, high_open=True)
    whole_word_masking: bool = False
    canaries: CanaryConfig = field(default_factory=CanaryConfig)
    # causal-LM text continuation (fmtool predict on a task=clm run): greedy when temperature is 0
    max_new_tokens: int = ranged(32, low=1)
    temperature: float = ranged(0.0, low=0)
    top_p: float = ranged(1.0, low=0, high=1, low_open=True)


@dataclass
class ModelConfig:
    # A hub id or a local directory; null with random_init builds the architecture from config_overrides.
    name: Optional[str] = None
    tokenizer: Optional[str] = None
    revision: Optional[str] = None
    trust_remote_code: bool = False
    # load weights stored with pickle (pytorch_model.bin, *.pt), which can run code; false: safetensors only
    allow_pickle: bool = False
    random_init: bool = False
    model_type: str = "bert"
    config_overrides: Dict[str, Any] = field(default_factory=dict)
    dropout: Optional[float] = ranged(None, low=0, high=1, high_open=True)
    # decoders (GPT-2, Llama, Qwen2...) fine-tuned to tag words: attend to both sides, not only to the left
    bidirectional: bool = False
    # task=mlm from scratch: train a new WordPiece vocabulary of this size on the training corpus
    tokenizer_vocab_size: Optional[int] = ranged(None, low=100)


@dataclass
class AugmentConfig:
    """Training examples edited by the audits' perturbations and counterfactual swaps (fmtool/dataset/augment.py)."""

    perturbations: List[str] = field(default_factory=list)  # empty: no augmentation
    share: float = ranged(0.2, low=0, high=1, low_open=True)  # of the training examples, sampled per perturbation


@dataclass
class DatasetConfig:
    name: str = MISSING
    format: DataFormat = DataFormat.conll
    data_dir: Optional[str] = None
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    token_column: int = ranged(0, low=0)
    tag_column: int = ranged(-1)  # negative: counted from the last column
    tag_scheme: TagScheme = TagScheme.auto
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    # file label -> model label, for evaluating or auditing a model whose label names the file does not use
    label_map: Dict[str, str] = field(default_factory=dict)
    hf_path: Optional[str] = None
    hf_name: Optional[str] = None
    train_split: str = "train"
    validation_split: Optional[str] = "validation"
    test_split: Optional[str] = None
    max_train_examples: Optional[int] = ranged(None, low=1)
    max_eval_examples: Optional[int] = ranged(None, low=1)
    # task=mlm: read the training corpus lazily (needs trainer.max_steps); shuffled within a buffer of this many blocks
    streaming: bool = False
    shuffle_buffer: int = ranged(10000, low=1)
    # replace e-mails, phone numbers, card numbers, IBANs, IPs, SSNs, credentials and keys with <TYPE> before training
    redact_pii: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def file_path(self, key: str) -> Path:
        """Where the file of `key` (train_file, validation_file, test_file) is: under data_dir when it is set."""
        name = getattr(self, key)
        return Path(name) if self.data_dir is None else Path(self.data_dir) / name


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = ranged(
        1e-4, low=0, low_open=True
    )  # suits the small default model (MiniLM-L6); BERT-base-sized models prefer 2e-5 to 5e-5
    weight_decay: float = ranged(0.01, low=0)
    betas: List[float] = ranged(low=0, high=1, high_open=True, factory=lambda: [0.9, 0.999])
    eps: float = ranged(1e-8, low=0, low_open=True)
    momentum: float = ranged(0.9, low=0, high=1, high_open=True)
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    name: SchedulerName = SchedulerName.linear
    warmup_ratio: float = ranged(0.1, low=0, high=1, high_open=True)
    warmup_steps: int = ranged(0, low=0)


class Accountant(Choice):
    prv = "prv"
    rdp = "rdp"
    gdp = "gdp"


@dataclass
class PrivacyConfig:
    """DP-SGD through Opacus (trainer/private.py): per-example clipping and Gaussian noise, with an accountant."""

    enabled: bool = False
    noise_multiplier: Optional[float] = ranged(None, low=0, low_open=True)  # give this or target_epsilon
    target_epsilon: Optional[float] = ranged(
        None, low=0, low_open=True
    )  # the noise is chosen so the whole run spends this epsilon
    max_grad_norm: float = ranged(1.0, low=0, low_open=True)  # each example's gradient is clipped to this L2 norm
    delta: float = ranged(1e-5, low=0, high=1, low_open=True, high_open=True)
    accountant: Accountant = Accountant.prv


class Strategy(Choice):
    """How several processes (torchrun) hold the model: whole on every rank, or sharded (trainer/distributed.py)."""

    ddp = "ddp"
    fsdp = "fsdp"


class PeftMethod(Choice):
    none = "none"
    lora = "lora"


@dataclass
class LoraSettings:
    """LoRA's adapters (fmtool/trainer/lora.py, through peft)."""

    r: int = ranged(8, low=1)
    alpha: float = ranged(16.0, low=0, low_open=True)
    dropout: float = ranged(0.05, low=0, high=1, high_open=True)
    # null: peft's default for the family (GPT-2: c_attn; Llama, Qwen2, Mistral: q_proj and v_proj; BERT: query, value)
    target_modules: Optional[List[str]] = None


@dataclass
class TrainerConfig:
    epochs: int = ranged(3, low=0)  # 0 only with max_steps
    max_steps: Optional[int] = ranged(None, low=1)
    batch_size: int = ranged(32, low=1)
    eval_batch_size: int = ranged(128, low=1)
    grad_accum_steps: int = ranged(1, low=1)
    max_batch_tokens: Optional[int] = ranged(None, low=8)  # null: 2048 on CPU, no limit on GPU (see trainer/runtime.py)
    max_grad_norm: Optional[float] = ranged(1.0, low=0, low_open=True)  # null: no clipping
    max_length: int = ranged(128, low=8, high=8192)
    window_stride: int = ranged(32, low=0)
    label_all_tokens: bool = False
    freeze: Freeze = Freeze.none
    freeze_layers: int = ranged(0, low=0)
    # parameter-efficient fine-tuning: lora trains low-rank adapters and the task head, the rest stays frozen
    peft: PeftMethod = PeftMethod.none
    lora: LoraSettings = field(default_factory=LoraSettings)
    eval_every_steps: Optional[int] = ranged(None, low=1)
    metric: str = MISSING
    greater_is_better: bool = True
    patience: Optional[int] = ranged(None, low=1)
    batching: Batching = Batching.length_grouped
    precision: Precision = Precision.auto
    device: str = "auto"
    compile: bool = False
    fast_cpu_dropout: bool = True  # on CPU, dropout masks from numpy's SFC64 generator (trainer/dropout.py)
    bf16_residual: bool = True  # on CPU under bf16 autocast, LayerNorm outputs bf16 (trainer/layer_norm.py)
    # word-embedding rows of ids absent from the training data stay out of the optimizer (trainer/embedding.py)
    skip_unseen_embedding_rows: bool = True
    gradient_checkpointing: bool = False
    checkpoint_every_steps: Optional[int] = ranged(None, low=1)
    strategy: Strategy = Strategy.ddp
    num_threads: Optional[int] = ranged(None, low=1)
    # at most this many updates between training-loss records; a short run logs at least 20 (trainer/loop.py)
    log_every_steps: int = ranged(50, low=1)
    progress: bool = True
    save_model: bool = True
    dp: PrivacyConfig = field(default_factory=PrivacyConfig)


@dataclass
class AdversarialConfig:
    name: AdversarialName = AdversarialName.none
    epsilon: float = ranged(0.2, low=0, low_open=True)  # L2 radius of each example's embedding perturbation
    step_size: float = ranged(0.08, low=0, low_open=True)
    steps: int = ranged(3, low=1)  # ascent steps (pgd, freelb)
    init_magnitude: float = ranged(0.0, low=0)  # freelb: radius of the random starting perturbation


@dataclass
class PathsConfig:
    runs_dir: str = "runs"


class LoggerName(Choice):
    none = "none"
    tensorboard = "tensorboard"
    mlflow = "mlflow"


@dataclass
class LoggerConfig:
    """Experiment tracking beside metrics.jsonl (fmtool/logger.py)."""

    name: LoggerName = LoggerName.none
    experiment: str = "fmtool"  # MLflow experiment; a sweep's jobs become runs of it
    tracking_uri: Optional[str] = None  # MLflow; null: a file store in ./mlruns


@dataclass
class AttributionConfig:
    """Where each finding comes from (fmtool/attribution.py; fmtool audit --attribute): the audits on the run and on
    probe twins of its foundation model, compared item by item."""

    enabled: bool = False
    seeds: int = ranged(1, low=1, high=10)  # per arm: the run and seeds-1 twins; as many probe twins
    # Δ within ±margin of 0 (its whole interval) is no change: P's failure is then inherited
    margin: float = ranged(0.05, low=0, high=1)


# New sections go before the last one: a run directory's config.yaml cut short lacks it (fmtool/runs.py)
@dataclass
class TrainConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # audit family name -> its settings; each family's own dataclass types them (fmtool/audit/<name>.py)
    audit: Dict[str, Any] = field(default_factory=dict)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    seed: int = ranged(42, low=0, high=2**32 - 1)  # numpy's seeds are unsigned 32-bit
    # replace the run a run directory already holds (its files are deleted first); false: refuse such a directory
    overwrite: bool = False
