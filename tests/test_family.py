"""Model-family facts answered once (fmtool/model/family.py): for every shipped model config, the transformer blocks
that trainer.freeze=bottom_k freezes are the ones FSDP2 shards, as many as the config's layers, and LoRA's default
targets name modules the model has; a head that a family lacks is refused in one line."""

from __future__ import annotations

import pytest

from fmtool.config.compose import config_dir
from fmtool.config.schema import Freeze
from fmtool.errors import FmtoolError
from fmtool.model.build import check_head, local_config, skeleton
from fmtool.model.family import lora_default_targets, lora_problems, transformer_blocks
from fmtool.task import TASKS
from fmtool.trainer.freeze import apply_freeze
from tests.conftest import tiny_config

SHIPPED = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if p.stem not in ("bert_base", "gpt2"))


@pytest.mark.parametrize("model", SHIPPED)
@pytest.mark.parametrize("task", ["ner", "classification"])
def test_blocks_freezing_and_lora_targets_agree_for_every_shipped_family(model, task):
    cfg = tiny_config(task, f"model={model}")
    head = TASKS.get(task).head
    config = local_config(cfg.model)
    blocks = transformer_blocks(skeleton(config, head))
    assert len(blocks) == config.num_hidden_layers >= 2
    frozen = skeleton(config, head)
    apply_freeze(frozen, Freeze.bottom_k, 1)
    bottom, above = transformer_blocks(frozen)[0], transformer_blocks(frozen)[1]
    assert not any(p.requires_grad for p in bottom.parameters()) and all(p.requires_grad for p in above.parameters())
    assert not frozen.get_input_embeddings().weight.requires_grad
    assert lora_default_targets(config.model_type) and lora_problems(frozen, None, 4) == []


def test_bottom_k_trains_a_tiny_gpt_tagger(tmp_path):
    from tests.conftest import train_tiny

    run, results = train_tiny(
        tmp_path, "ner", "model=tiny_gpt", "trainer.freeze=bottom_k", "trainer.freeze_layers=1", "trainer.max_steps=2"
    )
    assert run.status()["state"] == "complete" and results["train"]["trainable_parameters"] < 60_000


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+task=mlm", "model=tiny_gpt"], "model_type=gpt2 has no AutoModelForMaskedLM architecture"),
        (["+task=clm", "model=tiny_gpt", "trainer.freeze=all_but_head"], "leaves no weight of GPT2LMHeadModel"),
        (["+task=ner", "model=tiny_llama", "trainer.freeze=bottom_k", "trainer.freeze_layers=3"], "has 2 layers"),
        (["+task=classification", "model.model_type=t5"], "model_type=t5 is an encoder-decoder; fmtool trains"),
    ],
)
def test_a_model_the_task_cannot_train_is_refused_at_config_time(overrides, message, capsys):
    from fmtool.cli import main

    assert main(["validate", "debug=tiny", *overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error


def test_a_hub_model_without_the_head_is_refused_when_its_config_arrives():
    cfg = tiny_config("clm", "model=tiny_gpt")
    with pytest.raises(FmtoolError, match="model.name: model_type=gpt2 has no AutoModelForMaskedLM"):
        check_head(TASKS.get("mlm").head, local_config(cfg.model), "model.name")
