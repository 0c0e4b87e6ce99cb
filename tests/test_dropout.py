"""SFC64 dropout: torch's dropout distribution and scaling, seeded from torch, used in training on CPU."""

from __future__ import annotations

import pytest
import torch

from fmtool.task import TASKS
from fmtool.trainer.dropout import ATTENTION_MODEL_TYPES, SFC64Dropout, scaled_keep_mask, use_sfc64_dropout
from tests.conftest import tiny_config


def test_masks_keep_one_minus_p_and_scale_the_kept_values():
    dropout = SFC64Dropout(0.25).train()
    inputs = torch.ones(1000, 1000, requires_grad=True)
    outputs = dropout(inputs)
    kept = outputs != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.002
    assert torch.allclose(outputs[kept], torch.full_like(outputs[kept], 1 / 0.75))
    outputs.sum().backward()
    assert torch.equal(inputs.grad, outputs.detach())
    assert torch.equal(dropout.eval()(inputs), inputs)


def test_masks_follow_torch_seed_and_differ_between_calls():
    torch.manual_seed(3)
    first, second = (
        scaled_keep_mask(torch.Size([64, 64]), 0.1, torch.float32),
        scaled_keep_mask(torch.Size([64, 64]), 0.1, torch.float32),
    )
    torch.manual_seed(3)
    assert torch.equal(scaled_keep_mask(torch.Size([64, 64]), 0.1, torch.float32), first)
    assert not torch.equal(first, second)


def test_training_on_cpu_replaces_every_dropout_module():
    from fmtool.model import build_model, load_tokenizer
    from fmtool.trainer.setup import prepare_model

    cfg = tiny_config("classification")
    model = build_model(
        cfg.model, TASKS.get(cfg.task.name).head, ["neg", "pos"], vocab_size=len(load_tokenizer(cfg.model))
    )
    before = sum(type(m) is torch.nn.Dropout for m in model.modules())
    prepare_model(model, cfg)
    assert before > 0 and sum(isinstance(m, SFC64Dropout) for m in model.modules()) == before
    assert use_sfc64_dropout(model) == 0


def _tiny_model_with_padding():
    from fmtool.model import build_model, load_tokenizer

    cfg = tiny_config("classification")
    model = build_model(
        cfg.model, TASKS.get(cfg.task.name).head, ["neg", "pos"], vocab_size=len(load_tokenizer(cfg.model))
    )
    input_ids = torch.randint(5, 100, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, 7:] = 0
    attention_mask[2, 3:] = 0
    return model, {"input_ids": input_ids, "attention_mask": attention_mask}


def test_attention_composite_matches_torch_attention_with_padding():
    from fmtool.trainer.dropout import SFC64_ATTENTION

    model, batch = _tiny_model_with_padding()
    model.eval()
    with torch.no_grad():
        reference = model(**batch).logits
    use_sfc64_dropout(model)
    assert model.config._attn_implementation == SFC64_ATTENTION
    composite = model(**batch).logits  # gradients on: the training composite, not the fused kernel
    assert composite.requires_grad
    torch.testing.assert_close(composite.detach(), reference, atol=1e-5, rtol=1e-4)


def _tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.for_model(
        model_type,
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        attn_implementation="sdpa",
        **({"embedding_size": 32} if model_type == "electra" else {}),
    )
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_config(config).eval()


@pytest.mark.parametrize("model_type", ATTENTION_MODEL_TYPES)
def test_every_architecture_given_the_composite_computes_what_sdpa_does(model_type):
    from fmtool.trainer.dropout import SFC64_ATTENTION

    model = _tiny(model_type)
    input_ids = torch.randint(5, 100, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, 7:] = 0
    with torch.no_grad():
        reference = model(input_ids=input_ids, attention_mask=attention_mask).logits
    use_sfc64_dropout(model)
    assert model.config._attn_implementation == SFC64_ATTENTION
    composite = model(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(
        composite.detach()[attention_mask.bool()], reference[attention_mask.bool()], atol=1e-5, rtol=1e-4
    )


def test_other_architectures_keep_their_attention():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=100, attn_implementation="sdpa"))
    use_sfc64_dropout(gpt2)
    assert gpt2.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("extra", [{"is_causal": True}, {"position_bias": "bias"}])
def test_calls_with_features_the_composite_lacks_go_to_sdpa_unchanged(extra):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from fmtool.trainer.dropout import sfc64_attention

    module = torch.nn.Module()
    query, key, value = (torch.randn(2, 4, 10, 8, requires_grad=True) for _ in range(3))
    if "position_bias" in extra:
        extra = {"position_bias": torch.randn(1, 4, 10, 10)}
    got, _ = sfc64_attention(module, query, key, value, None, **extra)
    expected, _ = sdpa_attention_forward(module, query, key, value, None, **extra)
    torch.testing.assert_close(got, expected)
    plain, _ = sfc64_attention(module, query, key, value, None)
    assert not torch.allclose(plain, expected), (
        "the extra feature changes the result, so the comparison means something"
    )


def test_attention_dropout_drops_probabilities_from_torch_seed():
    from fmtool.trainer.dropout import sfc64_attention

    module = torch.nn.Module()
    query, key = torch.randn(2, 4, 64, 8), torch.randn(2, 4, 64, 8)
    value = torch.eye(64).expand(2, 4, 64, 64).clone().requires_grad_(True)  # output rows are the probabilities
    torch.manual_seed(5)
    probabilities, _ = sfc64_attention(module, query, key, value, None, dropout=0.2)
    torch.manual_seed(5)
    again, _ = sfc64_attention(module, query, key, value, None, dropout=0.2)
    assert torch.equal(probabilities, again)
    assert abs((probabilities == 0).float().mean().item() - 0.2) < 0.01
    assert torch.allclose(probabilities.sum() / probabilities.numel(), torch.tensor(1 / 64), rtol=0.05)
    probabilities.sum().backward()
    assert value.grad is not None


def test_saved_model_loads_without_fmtool(tmp_path):
    from transformers import AutoConfig

    model, _ = _tiny_model_with_padding()
    use_sfc64_dropout(model)
    model.save_pretrained(tmp_path)
    assert "fmtool" not in (tmp_path / "config.json").read_text()
    assert AutoConfig.from_pretrained(tmp_path)._attn_implementation in (None, "sdpa", "eager")


def test_bf16_masks_hold_zero_or_the_rounded_scale():
    torch.manual_seed(0)
    mask = scaled_keep_mask(torch.Size([300, 300]), 0.1, torch.bfloat16)
    assert mask.dtype == torch.bfloat16 and mask.shape == (300, 300)
    scale = torch.tensor(1 / 0.9, dtype=torch.bfloat16)
    assert set(mask.unique().tolist()) == {0.0, scale.item()}
    assert abs(mask.ne(0).float().mean().item() - 0.9) < 0.005
