"""Dataclass schemas for every config group.

Every YAML file in configs/ merges into these, so a misspelt key or an unknown choice fails at
composition time with the key's full name instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Choice(str, Enum):
    """A string choice: prints as its value, so ${task.name} in a path reads 'ner'."""

    def __str__(self) -> str:
        return self.value


class TaskName(Choice):
    ner = "ner"
    classification = "classification"
    mlm = "mlm"


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

    repetitions: List[int] = field(default_factory=list)  # one canary per entry, inserted that many times; empty: none
    template: str = "my secret number is {secret}"
    digits: int = 6


@dataclass
class TaskConfig:
    name: TaskName = MISSING
    # masked-LM pre-training only (task=mlm)
    mask_probability: float = 0.15
    whole_word_masking: bool = False
    canaries: CanaryConfig = field(default_factory=CanaryConfig)


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
    dropout: Optional[float] = None
    # task=mlm from scratch: train a new WordPiece vocabulary of this size on the training corpus
    tokenizer_vocab_size: Optional[int] = None


@dataclass
class AugmentConfig:
    """Training examples edited by the audits' perturbations and counterfactual swaps (fmtool/dataset/augment.py)."""

    perturbations: List[str] = field(default_factory=list)  # empty: no augmentation
    share: float = 0.2  # of the training examples, sampled per perturbation


@dataclass
class DatasetConfig:
    name: str = MISSING
    format: DataFormat = DataFormat.conll
    data_dir: Optional[str] = None
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    token_column: int = 0
    tag_column: int = -1
    tag_scheme: TagScheme = TagScheme.auto
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    hf_path: Optional[str] = None
    hf_name: Optional[str] = None
    train_split: str = "train"
    validation_split: Optional[str] = "validation"
    test_split: Optional[str] = None
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    # task=mlm: read the training corpus lazily (needs trainer.max_steps); shuffled within a buffer of this many blocks
    streaming: bool = False
    shuffle_buffer: int = 10000
    # replace e-mails, phone numbers, card numbers, IBANs, IPs, SSNs, credentials and keys with <TYPE> before training
    redact_pii: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = 1e-4  # suits the small default model (MiniLM-L6); BERT-base-sized models prefer 2e-5 to 5e-5
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    name: SchedulerName = SchedulerName.linear
    warmup_ratio: float = 0.1
    warmup_steps: int = 0


class Accountant(Choice):
    prv = "prv"
    rdp = "rdp"
    gdp = "gdp"


@dataclass
class PrivacyConfig:
    """DP-SGD through Opacus (trainer/private.py): per-example clipping and Gaussian noise, with an accountant."""

    enabled: bool = False
    noise_multiplier: Optional[float] = None  # give this or target_epsilon
    target_epsilon: Optional[float] = None  # the noise is chosen so the whole run spends this epsilon
    max_grad_norm: float = 1.0  # each example's gradient is clipped to this L2 norm
    delta: float = 1e-5
    accountant: Accountant = Accountant.prv


@dataclass
class TrainerConfig:
    epochs: int = 3
    max_steps: Optional[int] = None
    batch_size: int = 32
    eval_batch_size: int = 128
    grad_accum_steps: int = 1
    max_batch_tokens: Optional[int] = None  # null: 2048 on CPU, no limit on GPU (see trainer/runtime.py)
    max_grad_norm: Optional[float] = 1.0
    max_length: int = 128
    window_stride: int = 32
    label_all_tokens: bool = False
    freeze: Freeze = Freeze.none
    freeze_layers: int = 0
    eval_every_steps: Optional[int] = None
    metric: str = MISSING
    greater_is_better: bool = True
    patience: Optional[int] = None
    batching: Batching = Batching.length_grouped
    precision: Precision = Precision.auto
    device: str = "auto"
    compile: bool = False
    fast_cpu_dropout: bool = True  # on CPU, dropout masks from numpy's SFC64 generator (trainer/dropout.py)
    bf16_residual: bool = True  # on CPU under bf16 autocast, LayerNorm outputs bf16 (trainer/layer_norm.py)
    skip_unseen_embedding_rows: bool = True  # word-embedding rows of ids absent from the training data stay out of the optimizer (trainer/embedding.py)
    gradient_checkpointing: bool = False
    checkpoint_every_steps: Optional[int] = None
    num_threads: Optional[int] = None
    log_every_steps: int = 50
    progress: bool = True
    save_model: bool = True
    dp: PrivacyConfig = field(default_factory=PrivacyConfig)


@dataclass
class AdversarialConfig:
    name: AdversarialName = AdversarialName.none
    epsilon: float = 0.2  # L2 radius of each example's embedding perturbation
    step_size: float = 0.08
    steps: int = 3  # ascent steps (pgd, freelb)
    init_magnitude: float = 0.0  # freelb: radius of the random starting perturbation


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
    seed: int = 42
    # replace the run a run directory already holds (its files are deleted first); false: refuse such a directory
    overwrite: bool = False


def register_schemas() -> None:
    from fmtool.audit import AUDITS  # importing the package registers every family

    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    # each configs/audit/<family>.yaml extends its family's dataclass, so `audit.<family>.<key>=value` needs no '+'
    # and a mistyped key fails with its name when the config is composed
    for name in AUDITS.names():
        store.store(group="audit_schema", name=name, node={name: AUDITS.get(name).config_type})
