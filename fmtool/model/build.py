"""Tokenizer and model construction.

model.name is anything transformers' Auto classes accept: a hub id (downloaded and cached by
transformers) or a local directory such as a previous run's model/. random_init builds the
architecture from a config instead, which is how the tests get a tiny BERT without any download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import torch
from transformers import (
    AutoConfig,
    PreTrainedModel,
)

from fmtool.config.schema import ModelConfig
from fmtool.errors import FmtoolError
from fmtool.model import load
from fmtool.model.family import architecture_of, builds, is_encoder_decoder
from fmtool.model.load import LoadPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    """What a task puts on the backbone: the transformers Auto class that builds the model, and the suffix of the
    architecture name of a checkpoint fine-tuned with such a head (None: a language-model head, without labels)."""

    auto_model: type
    suffix: Optional[str] = None

    @property
    def labelled(self) -> bool:
        return self.suffix is not None

    def trained_in(self, architectures: Sequence[str]) -> bool:
        return self.labelled and any(name.endswith(self.suffix) for name in architectures)


_DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "classifier_dropout",
    # GPT-2's names
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)
_VOCABULARY = (
    "{key}: the tokenizer ({tokens} tokens, from '{tokenizer}') does not fit the model '{model}' ({rows} embedding "
    "rows); {fix}"
)
# what a training config can do about it, and what the user of a received model directory can
_TRAINING_FIX = (
    "is the tokenizer missing from that directory? set model.tokenizer to the one the model was trained with"
)
RECEIVED_FIX = (
    "is the tokenizer missing from that directory? save the one the model was trained with beside it "
    "(tokenizer.save_pretrained)"
)
_NO_SOURCE = "model.name is null and model.tokenizer is null: set model.tokenizer to a tokenizer directory or hub id"
# position ids start after the padding index in these architectures
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")


def training_policy(cfg: ModelConfig) -> LoadPolicy:
    return LoadPolicy.of_training(cfg.trust_remote_code, cfg.allow_pickle)


def check_sources(cfg: ModelConfig) -> None:
    """Refuse, before anything is written, local model.name / model.tokenizer directories the config's policy
    forbids."""
    for source in {cfg.name, cfg.tokenizer} - {None}:
        load.check_source(source, training_policy(cfg))


def load_tokenizer(cfg: ModelConfig, policy: Optional[LoadPolicy] = None):
    """The tokenizer of model.tokenizer or model.name, loaded under `policy` (default: the training config's own)."""
    source = cfg.tokenizer or cfg.name
    if source is None:
        raise FmtoolError(_NO_SOURCE)
    key = "model.tokenizer" if cfg.tokenizer else "model.name"
    return load.load_tokenizer(source, policy or training_policy(cfg), key=key, revision=cfg.revision)


def check_vocabulary(
    tokens: int, model, *, tokenizer_source: str, model_source: str, key: str = "model.name", fix: str = _TRAINING_FIX
) -> None:
    """A tokenizer of `tokens` ids must index the model's embedding table and fill most of it.

    A model directory without tokenizer files still loads a tokenizer (a few special tokens): every word
    would then be [UNK] and training would run on nothing. Tables padded to a round size are fine.
    """
    rows = model.get_input_embeddings().num_embeddings
    if tokens > rows or tokens < rows // 2:
        raise FmtoolError(
            _VOCABULARY.format(
                key=key, tokens=tokens, tokenizer=tokenizer_source, model=model_source, rows=rows, fix=fix
            )
        )


def train_tokenizer(base, documents: Iterable[str], vocab_size: int):
    """A new vocabulary learnt on `documents` with base's normalisation, pre-tokenisation and special tokens."""
    return base.train_new_from_iterator(documents, vocab_size=vocab_size)


def _load_config(cfg: ModelConfig, policy: Optional[LoadPolicy] = None):
    if cfg.name is None:
        # the overrides go in at construction: some configs derive fields from them (Qwen2's layer_types)
        return AutoConfig.for_model(cfg.model_type, **cfg.config_overrides)
    return load.load_config(cfg.name, policy or training_policy(cfg), revision=cfg.revision)


def local_config(cfg: ModelConfig):
    """The model's transformers config when it is on this machine (random init, or a local directory), for checks
    made before a run directory exists; None for a hub id, or a config that loading will name with its reason."""
    local = cfg.name is not None and (Path(cfg.name).expanduser() / "config.json").is_file()
    if not (cfg.random_init or cfg.name is None or local):
        return None
    try:
        return _load_config(cfg)
    except Exception:  # unreadable or refused: building the model names it, with the loader's own message
        return None


def check_head(head: Head, config, key: str = "model.name") -> None:
    """Refuse a family that the task's head class cannot build, or that fmtool does not train (encoder-decoders:
    their heads read a decoder input the tasks never give), in one line instead of transformers' traceback."""
    if is_encoder_decoder(config):
        raise FmtoolError(
            f"{key}: model_type={config.model_type} is an encoder-decoder; fmtool trains encoders (BERT) and decoders "
            "(GPT-2, Llama, Qwen2, Mistral)"
        )
    if not builds(head.auto_model, config):
        raise FmtoolError(
            f"{key}: model_type={config.model_type} has no {head.auto_model.__name__} architecture in transformers, "
            "the head this task trains; choose a model family that has one"
        )


def skeleton(config, head: Head) -> PreTrainedModel:
    """The model of `config` with `head` (a family it builds) on the meta device, no weights and no memory: what
    config checks read before a run directory exists."""
    with torch.device("meta"):
        return head.auto_model.from_config(config)


def inherited_labels(cfg: ModelConfig, head: Head) -> list[str]:
    """The label list of a model already fine-tuned with `head` (such as a previous run's model/), else []."""
    if cfg.name is None or cfg.random_init or not head.labelled:
        return []
    config = _load_config(cfg)
    if not head.trained_in(config.architectures or []):
        return []
    return [config.id2label[i] for i in range(config.num_labels)]


def _extend_head(model: PreTrainedModel, labels: Sequence[str]) -> None:
    """Grow the output layer to len(labels) rows: the known labels keep their trained rows."""
    known = model.config.num_labels
    outputs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == known]
    if not outputs:
        raise FmtoolError(
            f"model.name: cannot find the {known}-label output layer of {type(model).__name__} to add labels to"
        )
    name, module = outputs[-1]  # the last such layer is the head
    grown = torch.nn.Linear(module.in_features, len(labels), bias=module.bias is not None)
    model._init_weights(grown)
    with torch.no_grad():
        grown.weight[:known] = module.weight
        if module.bias is not None:
            grown.bias[:known] = module.bias
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attribute, grown)
    model.num_labels = len(labels)
    model.config.num_labels = len(labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}


def _overrides(cfg: ModelConfig, config) -> dict:
    overrides = dict(cfg.config_overrides)
    if cfg.dropout is not None:
        overrides.update({key: cfg.dropout for key in _DROPOUT_KEYS if hasattr(config, key)})
    return overrides


def build_model(
    cfg: ModelConfig,
    head: Head,
    labels: Sequence[str],
    *,
    vocab_size: Optional[int] = None,
    inherited: Sequence[str] = (),
    max_length: Optional[int] = None,
    token_ids: Optional[Mapping[str, Optional[int]]] = None,
    policy: Optional[LoadPolicy] = None,
) -> PreTrainedModel:
    """A model with `head` that outputs `labels` (none for a language model); the label maps go into its config.

    With `inherited` (the labels of a checkpoint fine-tuned for the same task, a prefix of `labels`)
    the trained head is kept and only the new labels get fresh rows; otherwise the head is new. `token_ids` (the
    tokenizer's pad, bos and eos ids, special_token_ids) go into the config: a decoder's sequence classifier pools
    each row's last token that is not padding, and generation stops at the end-of-text id. `policy` is what loading
    may do (default: the training config's own; an audit's twin loads under the audit command's flags).
    """
    head_labels = list(inherited or labels)
    label_maps = {
        "num_labels": len(head_labels),
        "id2label": dict(enumerate(head_labels)),
        "label2id": {label: i for i, label in enumerate(head_labels)},
    }
    auto_model = head.auto_model
    source = cfg.name
    config = _load_config(cfg, policy)
    check_head(head, config, "model.name" if cfg.name else "model.model_type")
    # a hub model's config is only known here; local ones were checked with the rest of the config
    positions = usable_positions(config.model_type, getattr(config, "max_position_embeddings", None))
    if max_length is not None and positions is not None and max_length > positions:
        raise FmtoolError(
            f"trainer.max_length={max_length} is longer than the model's {positions} position embeddings "
            f"({source or cfg.model_type})"
        )
    ids = {key: value for key, value in (token_ids or {}).items() if value is not None}
    for key, value in {**_overrides(cfg, config), **(label_maps if head.labelled else {}), **ids}.items():
        setattr(config, key, value)
    if cfg.bidirectional:
        # transformers (>= 5.2) lets decoders attend both ways: each word's tag then sees the words after it
        config.is_causal = False
    if cfg.random_init or source is None:
        if vocab_size is not None:
            config.vocab_size = vocab_size
        log.info("model=<random init %s> parameters=%s", cfg.model_type, "from config")
        return auto_model.from_config(config, trust_remote_code=cfg.trust_remote_code)
    # a previous run's model may have a head of another size: it is replaced, the encoder kept
    model = load.load_pretrained(
        auto_model,
        source,
        policy or training_policy(cfg),
        config=config,
        revision=cfg.revision,
        ignore_mismatched_sizes=True,
    )
    log.info("model=<%s> parameters=<%d>", source, model.num_parameters())
    if vocab_size is not None:
        check_vocabulary(vocab_size, model, tokenizer_source=cfg.tokenizer or source, model_source=source)
    if inherited and len(labels) > len(inherited):
        _extend_head(model, labels)
    return model


def check_architecture(config, task: str, heads: Mapping[str, Head], source) -> None:
    """Refuse a checkpoint that config.json says was saved for another task: each task's head class builds one
    architecture per family (BERT: BertForMaskedLM for mlm, BertLMHeadModel for clm, BertForTokenClassification for
    ner), so the saved architecture names its task. A checkpoint naming none of them (custom classes) passes."""
    architectures = list(config.architectures or [])
    owners = [name for name, head in heads.items() if architecture_of(head.auto_model, config) in architectures]
    if owners and task not in owners:
        raise FmtoolError(
            f"{source}: config.json's architecture {architectures[0]} is a {owners[0]} model, not {task}: "
            f"use --task {owners[0]}"
        )


def check_trained_head(
    model: PreTrainedModel, loading_info: dict, task: str, heads: Mapping[str, Head], source
) -> None:
    """Refuse a model saved for another task, or whose weights for `task` (one of `heads`, the known tasks' heads)
    were made up at load: transformers initialises missing weights at random (a masked LM loaded as a classifier
    gets a random head), and an audit of those audits noise."""
    check_architecture(model.config, task, heads, source)
    architectures = list(model.config.architectures or [])
    missing = loading_info.get("missing_keys") or []
    if missing and heads[task].labelled:
        names = ", ".join(sorted(missing)[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise FmtoolError(
            f"{source}: the model has no trained weights for {names}: they would be initialised at random "
            f"({', '.join(architectures) or 'unknown architecture'} is not a {task} model)"
        )


def load_language_model(
    model_dir, task: str, heads: Mapping[str, Head], policy: LoadPolicy, device: torch.device = torch.device("cpu")
):
    """(model, tokenizer) of a language-model directory saved for `task` (one of `heads`); a checkpoint of another
    task, or without a trained language-model head, is refused naming what it is."""
    head = heads[task]
    model, info = load.load_pretrained(
        head.auto_model, model_dir, policy, key=str(model_dir), what="language model", output_loading_info=True
    )
    check_architecture(model.config, task, heads, model_dir)
    missing = [k for k in info["missing_keys"] if "bias" in k or "transform" in k or "decoder" in k or "lm_head" in k]
    if missing:
        raise FmtoolError(
            f"{model_dir}: the model has no trained language-model head ({', '.join(sorted(missing)[:3])} missing; "
            f"{', '.join(model.config.architectures or ['unknown architecture'])} is not a {task} model)"
        )
    tokenizer = load.load_tokenizer(model_dir, policy, key=str(model_dir))
    return model.to(device).eval(), tokenizer


def usable_positions(model_type: Optional[str], max_position_embeddings: Optional[int]) -> Optional[int]:
    """Tokens a model can read given its config's max_position_embeddings (None: unknown)."""
    if max_position_embeddings is None:
        return None
    return int(max_position_embeddings) - (2 if model_type in _OFFSET_POSITIONS else 0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, under a DistributedDataParallel wrapper or not."""
    return getattr(model, "module", model)


def special_token_ids(tokenizer) -> dict[str, Optional[int]]:
    """The tokenizer's pad, bos and eos ids, as a model config names them."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
