"""What differs between model families, answered in one place: which modules are the transformer blocks (what
trainer.freeze=bottom_k freezes and FSDP2 shards), which a task's head class can build, which modules LoRA adapts by
default, and whether the modules a user names exist and are wide enough for the adapter's rank.

peft keeps the per-family table of LoRA's default targets (GPT-2: c_attn; Llama, Qwen2, Mistral: q_proj and v_proj;
BERT: query and value); fmtool reads it instead of copying it, so a family peft learns is one fmtool knows.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated layers, bottom first: members of a ModuleList whose class the model names unsplittable
    (transformers' _no_split_modules, what accelerate's FSDP wrapping reads), or every ModuleList member when it names
    none. BERT's encoder.layer, GPT-2's h and Llama's layers alike."""
    unsplittable = set()
    for module in model.modules():
        unsplittable |= set(getattr(module, "_no_split_modules", None) or ())
    members = [m for layers in model.modules() if isinstance(layers, torch.nn.ModuleList) for m in layers]
    return [m for m in members if not unsplittable or type(m).__name__ in unsplittable]


def builds(auto_model: type, config) -> bool:
    """Whether transformers' `auto_model` class has an architecture for this config's family."""
    return type(config) in auto_model._model_mapping


def is_encoder_decoder(config) -> bool:
    """T5, BART and their kin: a sequence classifier of theirs needs decoder inputs no fmtool task gives."""
    return bool(getattr(config, "is_encoder_decoder", False))


def is_encoder(config) -> bool:
    """A bidirectional encoder (BERT, RoBERTa): its family has a masked-LM head, which reads both ways; decoders
    (GPT-2, Llama) have none."""
    from transformers import AutoModelForMaskedLM

    return builds(AutoModelForMaskedLM, config)


def architecture_of(auto_model: type, config) -> Optional[str]:
    """The class name `auto_model` builds for this config's family (None: it builds none)."""
    return auto_model._model_mapping[type(config)].__name__ if builds(auto_model, config) else None


def lora_default_targets(model_type: Optional[str]) -> Optional[list[str]]:
    """peft's default LoRA targets for the family, or None where peft has none."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    targets = DEFAULTS.get(model_type or "")
    return list(targets) if targets else None


def _adaptable(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The modules LoRA can wrap: those with a two-dimensional weight (Linear, GPT-2's Conv1D, Embedding)."""
    return {
        name: module
        for name, module in model.named_modules()
        if name and isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 2
    }


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of targets: the module's full name, or its name's last dotted parts."""
    return name == target or name.endswith("." + target)


def lora_problems(model: torch.nn.Module, targets: Optional[Sequence[str]], rank: int) -> list[str]:
    """Why trainer.lora cannot adapt `model` (empty when it can): targets that match no module, a family without
    peft defaults when none are named, and a rank above the narrowest adapted weight's smaller side (a weight update
    of that shape has no higher rank: the excess adds parameters and no capacity)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if targets is not None and not targets:
        return ["trainer.lora.target_modules=[] adapts nothing: name the modules, or null for peft's default"]
    if targets is None:
        targets = lora_default_targets(model_type)
        if targets is None:
            return [
                f"trainer.peft=lora: peft has no default target modules for model_type={model_type}; name them "
                "with trainer.lora.target_modules=[...]"
            ]
        key = f"peft's default trainer.lora.target_modules for {model_type}"
    else:
        key = "trainer.lora.target_modules"
    modules = _adaptable(model)
    unmatched = [t for t in targets if not any(_matches(name, t) for name in modules)]
    if unmatched:
        leaves = sorted({name.rsplit(".", 1)[-1] for name in modules})
        return [
            f"{key}: {', '.join(unmatched)} match no module of {type(model).__name__}; its adaptable modules are "
            f"named {', '.join(leaves[:12])}{' ...' if len(leaves) > 12 else ''}"
        ]
    widths = [min(m.weight.shape) for n, m in modules.items() if any(_matches(n, t) for t in targets)]
    if rank > min(widths):
        return [
            f"trainer.lora.r={rank} is above the rank {min(widths)} that an update of the narrowest adapted weight can "
            f"have: the excess adds parameters, not capacity; choose trainer.lora.r <= {min(widths)}"
        ]
    return []
