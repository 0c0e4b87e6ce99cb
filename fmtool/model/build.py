"""Tokenizer and model construction.

model.name is anything transformers' Auto classes accept: a hub id (downloaded and cached by
transformers) or a local directory such as a previous run's model/. random_init builds the
architecture from a config instead, which is how the tests get a tiny BERT without any download.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel

from fmtool.config.schema import ModelConfig, TaskName
from fmtool.errors import FmtoolError

log = logging.getLogger(__name__)

AUTO_MODELS = {TaskName.ner: AutoModelForTokenClassification, TaskName.classification: AutoModelForSequenceClassification}
_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout", "classifier_dropout")
_CANNOT_LOAD = "model.{key}: cannot load a {what} from '{source}' ({reason})"
_NO_SOURCE = "model.name is null and model.tokenizer is null: set model.tokenizer to a tokenizer directory or hub id"


def _reason(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_tokenizer(cfg: ModelConfig):
    source = cfg.tokenizer or cfg.name
    if source is None:
        raise FmtoolError(_NO_SOURCE)
    key = "tokenizer" if cfg.tokenizer else "name"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as error:
        raise FmtoolError(_CANNOT_LOAD.format(key=key, what="tokenizer", source=source, reason=_reason(error))) from None
    if not tokenizer.is_fast:
        raise FmtoolError(f"model.{key}: '{source}' has no fast tokenizer; fmtool needs one for word-to-sub-token alignment")
    return tokenizer


def _overrides(cfg: ModelConfig, config) -> dict:
    overrides = dict(cfg.config_overrides)
    if cfg.dropout is not None:
        overrides.update({key: cfg.dropout for key in _DROPOUT_KEYS if hasattr(config, key)})
    return overrides


def build_model(cfg: ModelConfig, task: TaskName, labels: Sequence[str], *, vocab_size: Optional[int] = None) -> PreTrainedModel:
    """A model for `task` with a fresh head of len(labels) outputs; the label maps go into its config."""
    label_maps = {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}}
    auto_model = AUTO_MODELS[task]
    source = cfg.name
    try:
        config = AutoConfig.for_model(cfg.model_type) if source is None else AutoConfig.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as error:
        raise FmtoolError(_CANNOT_LOAD.format(key="name", what="model config", source=source, reason=_reason(error))) from None
    for key, value in {**_overrides(cfg, config), **label_maps}.items():
        setattr(config, key, value)
    if cfg.random_init or source is None:
        if vocab_size is not None:
            config.vocab_size = vocab_size
        log.info("model=<random init %s> parameters=%s", cfg.model_type, "from config")
        return auto_model.from_config(config, trust_remote_code=cfg.trust_remote_code)
    try:
        # a previous run's model may have a head of another size: it is replaced, the encoder kept
        model = auto_model.from_pretrained(source, config=config, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as error:
        raise FmtoolError(_CANNOT_LOAD.format(key="name", what="model", source=source, reason=_reason(error))) from None
    log.info("model=<%s> parameters=<%d>", source, model.num_parameters())
    return model
