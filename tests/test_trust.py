"""A received run or model directory is data: its code never runs and its pickles never load unless the command
says so, and an audit never judges weights that were made up at load."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import yaml

from fmtool.cli import main
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun

_CUSTOM_MODULE = """
from pathlib import Path

from transformers import BertConfig, BertForTokenClassification

Path({marker!r}).write_text("ran")


class CustomConfig(BertConfig):
    pass


class CustomModel(BertForTokenClassification):
    config_class = CustomConfig
"""


def _hostile_run(run, tmp_path):
    """A copy of `run` whose saved config asks for remote code and whose model maps its classes to a module that
    writes a marker file when imported."""
    copy = tmp_path / "received"
    shutil.copytree(run.path, copy)
    marker = tmp_path / "marker"
    (copy / "model" / "custom_bert.py").write_text(_CUSTOM_MODULE.format(marker=str(marker)))
    config = json.loads((copy / "model" / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "custom_bert.CustomConfig",
        "AutoModelForTokenClassification": "custom_bert.CustomModel",
    }
    (copy / "model" / "config.json").write_text(json.dumps(config))
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    saved["model"]["trust_remote_code"] = True
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    return copy, marker


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{run}", "Alice went home ."],
        ["eval", "{run}"],
        ["explain", "{run}", "Alice went home ."],
        ["audit", "{run}", "audit=[calibration]"],
    ],
)
def test_a_saved_config_never_lets_a_received_run_run_its_code(ner_run, tmp_path, capsys, command):
    received, marker = _hostile_run(ner_run[0], tmp_path)
    assert main([part.format(run=received) for part in command]) == 2
    error = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert (
        len(error.splitlines()) == 1
        and "--trust-remote-code" in error
        and "custom_bert.py" in error
        and "config.json" in error
    )


def test_trust_remote_code_is_the_callers_flag(ner_run, tmp_path):
    received, marker = _hostile_run(ner_run[0], tmp_path)
    assert main(["predict", str(received), "--trust-remote-code", "Alice went home ."]) == 0
    assert marker.read_text() == "ran"


def test_resume_takes_the_flag_not_the_saved_config_and_refuses_before_touching_the_run(ner_run, tmp_path, capsys):
    from tests.conftest import train_tiny

    received, marker = _hostile_run(ner_run[0], tmp_path)
    run, _ = train_tiny(
        tmp_path / "interrupted", "ner", "trainer.checkpoint_every_steps=1", "trainer.max_steps=2", "audit=none"
    )
    status = json.loads(run.status_file.read_text())
    run.status_file.write_text(json.dumps({**status, "state": "interrupted"}))
    saved = yaml.safe_load(run.config_file.read_text())
    saved["model"].update(name=str(received / "model"), random_init=False, trust_remote_code=True)
    run.config_file.write_text(yaml.safe_dump(saved))
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    assert main(["resume", str(run.path)]) == 2
    error = capsys.readouterr().err
    assert "model.trust_remote_code=true" in error and "custom_bert.py" in error and not marker.exists()
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before


def test_a_malicious_pickle_is_one_line_even_when_pickles_are_allowed(ner_run, tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "pickled"
    shutil.copytree(ner_run[0].model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    assert main(["audit", str(folder), "--task", "ner", "--allow-pickle", "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and "pwned" not in error
    errors = [line for line in error.splitlines() if line.startswith("fmtool: error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"fmtool: error: {folder}: cannot load the model (Weights only load failed"
    )
    assert main(["audit", str(folder), "--task", "ner", "--output", str(tmp_path / "out")]) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_a_head_the_directory_does_not_hold_is_refused_not_initialised(tmp_path, ner_run):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    tokenizer = LoadedRun.load(ner_run[0].path).tokenizer
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    for name, architecture in (("bare", BertModel), ("masked", BertForMaskedLM)):
        architecture(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    with pytest.raises(
        FmtoolError,
        match=r"bare: the model has no trained weights for .*classifier.weight: they would be initialised at random "
        r"\(BertModel is not a classification model\)",
    ):
        LoadedRun.from_model_dir(tmp_path / "bare", "classification")
    with pytest.raises(
        FmtoolError, match=r"architecture BertForMaskedLM is a mlm model, not classification: use --task mlm"
    ):
        LoadedRun.from_model_dir(tmp_path / "masked", "classification")
    with pytest.raises(
        FmtoolError, match=r"architecture BertForTokenClassification is a ner model, not classification: use --task ner"
    ):
        LoadedRun.from_model_dir(ner_run[0].model_dir, "classification")


def test_an_audits_twin_and_a_base_model_refuse_remote_code_by_the_commands_flag(ner_run, tmp_path, capsys):
    """The twin of a run whose starting point maps its classes to its own code, and a --base-model that does, are
    refused naming --trust-remote-code (the audit command's flag), not a training key."""
    hostile, marker = _hostile_run(ner_run[0], tmp_path)
    run = tmp_path / "run"
    shutil.copytree(ner_run[0].path, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["model"].update(name=str(hostile / "model"), random_init=False)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert (
        main(
            [
                "audit",
                str(run),
                "audit=[membership]",
                "audit.membership.attacks=[reference]",
                "audit.membership.min_examples=8",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--trust-remote-code" in error and "model.trust_remote_code" not in error
    split = run / "data" / "validation.jsonl"
    argv = ["audit", str(run / "model"), "--task", "ner", "--split", f"validation={split}", "audit=[calibration]"]
    assert main([*argv, "--base-model", str(hostile / "model")]) == 2
    error = capsys.readouterr().err.strip()
    assert "--trust-remote-code" in error and "custom_bert.py" in error and not marker.exists()
