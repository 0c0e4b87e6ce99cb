"""The one place fmtool loads a pretrained model, config or tokenizer, and the policy that goes with it.

A model directory, hub id or run directory someone hands you is data. Two things in it can run code: an
`auto_map` in config.json or tokenizer_config.json (transformers imports the Python file it names) and
pickle-format weights (`pytorch_model.bin`, `*.pt`). Whether either may happen is the caller's decision, made
every time (the training config's `model.trust_remote_code` / `model.allow_pickle`, or a command's
`--trust-remote-code` / `--allow-pickle`); a saved config never decides it.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer

from fmtool.errors import FmtoolError

log = logging.getLogger(__name__)

# what loading a damaged, foreign or hostile model directory raises: missing files, bad config, truncated
# safetensors, a pickle the safe unpickler refuses
LOAD_ERRORS = (OSError, ValueError, SafetensorError, pickle.UnpicklingError)
_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
_REMOTE_CODE = (
    "{source}: {file} maps {classes} to its own Python code ({modules}), which loading would run; {fix} if you trust "
    "where it comes from"
)
_PICKLE = (
    "{source}: holds only pickle-format weights ({files}), which can run code when loaded; convert them to "
    "safetensors, or {fix} if you trust where they come from"
)


@dataclass(frozen=True)
class LoadPolicy:
    """What loading may do, and how the caller would allow it (named in a refusal)."""

    trust_remote_code: bool = False
    allow_pickle: bool = False
    remote_code_switch: str = "pass --trust-remote-code"
    pickle_switch: str = "pass --allow-pickle"

    @classmethod
    def of_training(cls, trust_remote_code: bool, allow_pickle: bool) -> "LoadPolicy":
        """The policy a training config states for its own model.name and model.tokenizer."""
        return cls(trust_remote_code, allow_pickle, "set model.trust_remote_code=true", "set model.allow_pickle=true")


def reason(error: Exception) -> str:
    """The first line of a loading error, for a one-line message."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _cannot_load(key: str, what: str, source: Any, error: Exception) -> FmtoolError:
    if key == str(source):
        return FmtoolError(f"{source}: cannot load the {what} ({reason(error)})")
    return FmtoolError(f"{key}: cannot load a {what} from '{source}' ({reason(error)})")


def _remote_code(source: Path) -> Optional[tuple[str, list[str], list[str]]]:
    """(file, classes, modules) of the first auto_map in a local directory's configs, or None."""
    for name in ("config.json", "tokenizer_config.json"):
        path = source / name
        try:
            auto_map = json.loads(path.read_text(encoding="utf-8")).get("auto_map") if path.is_file() else None
        except (OSError, ValueError, AttributeError):
            continue
        if auto_map:
            targets = [t for v in auto_map.values() for t in (v if isinstance(v, list) else [v]) if t]
            modules = sorted({str(t).split("--")[-1].rsplit(".", 1)[0] + ".py" for t in targets})
            return name, sorted(auto_map), modules
    return None


def check_source(source: Any, policy: LoadPolicy) -> Optional[bool]:
    """Refuse a local directory whose loading the policy does not allow; returns transformers' use_safetensors."""
    path = Path(str(source))
    if path.is_dir():
        remote = _remote_code(path)
        if remote and not policy.trust_remote_code:
            file, classes, modules = remote
            raise FmtoolError(
                _REMOTE_CODE.format(
                    source=source,
                    file=file,
                    classes=", ".join(classes),
                    modules=", ".join(modules),
                    fix=policy.remote_code_switch,
                )
            )
        if not any(path.glob("*.safetensors")):
            pickled = sorted(p.name for pattern in _PICKLE_PATTERNS for p in path.glob(pattern))
            if pickled and not policy.allow_pickle:
                raise FmtoolError(_PICKLE.format(source=source, files=", ".join(pickled), fix=policy.pickle_switch))
            if pickled:
                log.warning("loading pickle-format weights from %s (allowed by the caller): they can run code", source)
    return None if policy.allow_pickle else True


def load_pretrained(
    auto_class: Any, source: Any, policy: LoadPolicy, *, key: str = "model.name", what: str = "model", **kwargs: Any
) -> Any:
    """auto_class.from_pretrained(source) under `policy`; any loading failure becomes one line naming `key`."""
    use_safetensors = check_source(source, policy)
    try:
        return auto_class.from_pretrained(
            source, trust_remote_code=policy.trust_remote_code, use_safetensors=use_safetensors, **kwargs
        )
    except LOAD_ERRORS as error:
        raise _cannot_load(key, what, source, error) from None


def load_config(source: Any, policy: LoadPolicy, *, key: str = "model.name", **kwargs: Any) -> Any:
    check_source(source, policy)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=policy.trust_remote_code, **kwargs)
    except LOAD_ERRORS as error:
        raise _cannot_load(key, "model config", source, error) from None


def load_tokenizer(source: Any, policy: LoadPolicy, *, key: str = "model.tokenizer", **kwargs: Any) -> Any:
    check_source(source, policy)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=policy.trust_remote_code, **kwargs)
    except LOAD_ERRORS as error:
        raise _cannot_load(key, "tokenizer", source, error) from None
    if not tokenizer.is_fast:
        raise FmtoolError(f"{key}: '{source}' has no fast tokenizer; fmtool needs one for word-to-sub-token alignment")
    if _byte_level_without_prefix_space(tokenizer):
        # pre-split words (NER, every perturbation) must be tokenized as they are inside a sentence, with their
        # leading space; transformers' run_ner sets this for GPT-2 and RoBERTa only, Qwen2's needs it as well
        log.info("tokenizer=<%s> add_prefix_space=<true> (byte-level BPE)", source)
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=policy.trust_remote_code, **{**kwargs, "add_prefix_space": True}
        )
        if _byte_level_without_prefix_space(tokenizer):
            # a generic fast tokenizer (tokenizer_class TokenizersBackend) ignores the keyword: set it on the backend
            _set_prefix_space(tokenizer.backend_tokenizer)
    if tokenizer.pad_token is None:
        _set_pad_token(tokenizer, key, source)
    return tokenizer


def _set_prefix_space(backend: Any) -> None:
    """Every ByteLevel step of the backend's pre-tokenizer adds the leading space, whatever else the steps do."""
    from tokenizers import Tokenizer

    whole = json.loads(backend.to_str())
    pre = whole["pre_tokenizer"]
    for step in pre.get("pretokenizers", [pre]):
        if step.get("type") == "ByteLevel":
            step["add_prefix_space"] = True
    backend.pre_tokenizer = Tokenizer.from_str(json.dumps(whole)).pre_tokenizer


def _byte_level_without_prefix_space(tokenizer: Any) -> bool:
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    if pre is None:
        return False
    state = json.loads(pre.__getstate__())
    steps = state.get("pretokenizers", [state])  # a Sequence (Qwen2: Split then ByteLevel) or one pre-tokenizer
    return any(step.get("type") == "ByteLevel" and not step.get("add_prefix_space") for step in steps)


def _set_pad_token(tokenizer: Any, key: str, source: Any) -> None:
    """Decoder tokenizers (GPT-2, Llama) often have no pad token, without which batches cannot be padded and a
    sequence classifier cannot find each row's last real token: take the end-of-text token, as is usual."""
    stand_in = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
    if stand_in is None:
        raise FmtoolError(f"{key}: '{source}' has no pad, end-of-text or unknown token to pad batches with")
    tokenizer.pad_token = stand_in
    log.info("tokenizer=<%s> pad_token=<%s> (it had none)", source, stand_in)
