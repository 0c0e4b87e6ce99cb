"""trainer.peft=lora through peft: only the adapters and the task head train, the run keeps the adapter in adapter/
and the merged model in model/, and save -> reload -> merge gives the outputs training ended with (the head that
comes back random after reload is peft's most reported failure)."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, pipeline

from fmtool.errors import FmtoolError
from fmtool.model import build_model
from fmtool.model.build import special_token_ids
from fmtool.model.load import LoadPolicy, load_tokenizer
from fmtool.predict import LoadedRun
from fmtool.task import TASKS
from tests.conftest import OVERFIT, tiny_config, train_tiny

_AUTO = {"classification": AutoModelForSequenceClassification, "ner": AutoModelForTokenClassification}


def _saved_base(path, task: str, model: str):
    """A random-init tiny model saved as a folder: LoRA's base, which the adapter is reloaded onto."""
    cfg = tiny_config(task, f"model={model}")
    tokenizer = load_tokenizer(cfg.model.tokenizer, LoadPolicy())
    base = build_model(
        cfg.model,
        TASKS.get(task).head,
        ["negative", "positive"] if task == "classification" else ["O", "B-PER", "I-PER"],
        vocab_size=len(tokenizer),
        token_ids=special_token_ids(tokenizer),
    )
    base.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("model", ["tiny_gpt", pytest.param("tiny_bert", marks=pytest.mark.slow)])
def test_lora_trains_few_parameters_and_its_adapter_and_merged_model_give_the_trained_outputs(tmp_path, model):
    base = _saved_base(tmp_path / "base", "classification", model)
    run, results = train_tiny(
        tmp_path / "run",
        "classification",
        *OVERFIT["classification"],
        f"model={model}",
        f"model.name={base}",
        "model.random_init=false",
        "model.tokenizer=null",
        "trainer.peft=lora",
        "trainer.lora.r=4",
    )
    total = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(run.model_dir).parameters())
    assert 0 < results["train"]["trainable_parameters"] < total / 5
    assert (run.adapter_dir / "adapter_config.json").is_file() and (run.model_dir / "config.json").is_file()
    loaded = LoadedRun.load(run.path)
    texts = ["a wonderful film", "an awful , dull film", "the film was good"]
    encoded = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(run.model_dir).eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(base), run.adapter_dir
    ).eval()
    untrained = AutoModelForSequenceClassification.from_pretrained(base).eval()
    with torch.no_grad():
        merged_logits = merged(**encoded).logits
        torch.testing.assert_close(adapted(**encoded).logits, merged_logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(untrained(**encoded).logits, merged_logits, atol=1e-4)
    # fmtool's own predictions and transformers' pipeline() read the merged model the same way
    ours = loaded.predict_texts(texts)
    assert [r["label"] for r in ours] == [merged.config.id2label[int(i)] for i in merged_logits.argmax(-1)]
    classify = pipeline("text-classification", model=str(run.model_dir), tokenizer=str(run.model_dir))
    assert [r["label"] for r in classify(texts)] == [r["label"] for r in ours]


@pytest.mark.slow
def test_lora_on_a_tagger_keeps_its_head(tmp_path):
    base = _saved_base(tmp_path / "base", "ner", "tiny_gpt")
    run, results = train_tiny(
        tmp_path / "run",
        "ner",
        *OVERFIT["ner"],
        "model=tiny_gpt",
        f"model.name={base}",
        "model.random_init=false",
        "model.tokenizer=null",
        "trainer.peft=lora",
    )
    assert results["after"]["validation"]["token_accuracy"] > results["before"]["validation"]["token_accuracy"]
    merged = AutoModelForTokenClassification.from_pretrained(run.model_dir)
    assert merged.config.num_labels == len(results["labels"])


@pytest.mark.slow
def test_lora_composes_with_adversarial_training(tmp_path):
    run, results = train_tiny(
        tmp_path / "run",
        "classification",
        *OVERFIT["classification"],
        "model=tiny_gpt",
        "trainer.peft=lora",
        "adversarial=fgm",
    )
    assert results["train"]["adversarial"] == "fgm" and (run.adapter_dir / "adapter_config.json").is_file()
    assert results["after"]["validation"]["accuracy"] >= results["before"]["validation"]["accuracy"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+task=mlm", "trainer.peft=lora"], "trainer.peft=lora: peft has no task type for task=mlm"),
        (["+task=ner", "trainer.peft=lora", "trainer.freeze=embeddings"], "cannot be combined with trainer.peft=lora"),
        (
            ["+task=classification", "trainer.peft=lora", "trainer.dp.enabled=true", "trainer.dp.noise_multiplier=1"],
            "trainer.dp.enabled=true cannot be combined with trainer.peft=lora",
        ),
        (["+task=ner", "trainer.peft=lora", "trainer.lora.r=0"], r"trainer.lora.r=0 is outside \[1, inf\)"),
    ],
)
def test_lora_settings_that_cannot_hold_are_refused_by_name(overrides, message):
    with pytest.raises(FmtoolError, match=message):
        tiny_config(overrides[0].removeprefix("+task="), *overrides[1:])
