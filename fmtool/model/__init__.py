"""Load tokenizers and models from hub ids or local directories, or build one from a config."""

from fmtool.model.build import build_model, load_tokenizer

__all__ = ["build_model", "load_tokenizer"]
