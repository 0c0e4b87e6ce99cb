"""A refused command changes nothing: out-of-range options fail before a run directory exists, and a train
refused for its run directory leaves every byte of the run there as it was."""

from __future__ import annotations

import json
import math
import re
import shutil
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from fmtool.audit import AUDITS
from fmtool.cli import main
from fmtool.config import to_typed
from fmtool.config.compose import with_dotlist
from fmtool.config.schema import TrainConfig
from fmtool.configure import compose_train_config, validate
from fmtool.errors import FmtoolError
from fmtool.runs import RunDir

_NUMBERS = (int, float)


def _numeric_options(node_type: type, prefix: str = ""):
    """(key, field, number type, is a list) of every int or float option in the schema tree, optionals included."""
    hints = typing.get_type_hints(node_type)
    for spec in fields(node_type):
        kind = hints[spec.name]
        if is_dataclass(kind):
            yield from _numeric_options(kind, f"{prefix}{spec.name}.")
            continue
        if typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        listed = typing.get_origin(kind) is list
        number = typing.get_args(kind)[0] if listed else kind
        if number in _NUMBERS:
            yield f"{prefix}{spec.name}", spec, number, listed


# the training schema's options and every audit family's (audit.<family>.<key>)
_OPTIONS = list(_numeric_options(TrainConfig)) + [
    option for name in AUDITS.names() for option in _numeric_options(AUDITS.get(name).config_type, f"audit.{name}.")
]


def test_every_numeric_option_has_a_range():
    assert len(_OPTIONS) > 100
    assert [key for key, spec, _, _ in _OPTIONS if "range" not in spec.metadata] == []


def _outside(bounds, kind: type) -> list:
    """A value just below the range's lower end and one just above its upper end, where it has them."""
    values = []
    if bounds.low is not None:
        values.append(bounds.low if bounds.low_open else bounds.low - (1 if kind is int else 0.5))
    if bounds.high is not None:
        values.append(bounds.high if bounds.high_open else bounds.high + 1)
    return values


# the training schema's options in the everyday tier, the audit families' in the full suite
@pytest.mark.parametrize(
    "key, spec, kind, listed, value",
    [
        pytest.param(*o, value, id=f"{o[0]}={value}", marks=[pytest.mark.slow] if o[0].startswith("audit.") else [])
        for o in _OPTIONS
        for value in _outside(o[1].metadata["range"], o[2])
    ],
)
def test_a_value_outside_each_range_is_one_line_naming_key_value_and_range(composed, key, spec, kind, listed, value):
    bounds = spec.metadata["range"]
    value = kind(value)
    text = f"[{value}]" if listed else str(value)
    with pytest.raises(FmtoolError, match=re.escape(f"{key}={text}") + ".*" + re.escape(str(bounds))):
        validate(to_typed(with_dotlist(composed, [f"{key}={text}"], "test")))


@pytest.fixture(scope="module")
def composed():
    # every audit family selected, so each family's options can be set
    return compose_train_config(["+task=ner", "debug=tiny", f"audit=[{','.join(AUDITS.names())}]"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_steps=-5", "trainer.max_steps=-5 is outside [1, inf) (or null)"),
        ("trainer.max_steps=0", "trainer.max_steps=0 is outside [1, inf) (or null)"),
        ("trainer.eval_every_steps=0", "trainer.eval_every_steps=0 is outside [1, inf) (or null)"),
        ("trainer.max_grad_norm=-1", "trainer.max_grad_norm=-1.0 is outside (0, inf) (or null)"),
        ("trainer.max_grad_norm=0", "trainer.max_grad_norm=0.0 is outside (0, inf) (or null)"),
        ("dataset.max_train_examples=-3", "dataset.max_train_examples=-3 is outside [1, inf) (or null)"),
        ("dataset.max_train_examples=0", "dataset.max_train_examples=0 is outside [1, inf) (or null)"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1.0 is outside [0, inf)"),
        ("scheduler.warmup_steps=-10", "scheduler.warmup_steps=-10 is outside [0, inf)"),
        ("trainer.num_threads=0", "trainer.num_threads=0 is outside [1, inf) (or null)"),
        ("seed=-1", "seed=-1 is outside [0, 4294967295]"),
        ("optimizer.betas=[2.0,0.9]", "optimizer.betas=[2.0, 0.9]: each value must lie in [0, 1)"),
        ("optimizer.eps=-1", "optimizer.eps=-1.0 is outside (0, inf)"),
        ("optimizer.momentum=-1", "optimizer.momentum=-1.0 is outside [0, 1)"),
        ("optimizer.lr=nan", "optimizer.lr=nan is outside (0, inf)"),
        ("optimizer.lr=inf", "optimizer.lr=inf is outside (0, inf)"),
        ("model.config_overrides.hidden_size=-1", "model.config_overrides.hidden_size=-1 is outside [1, inf)"),
        (
            "+model.config_overrides.hidden_dropout_prob=1.5",
            "model.config_overrides.hidden_dropout_prob=1.5 is outside [0, 1)",
        ),
    ],
)
def test_the_reported_out_of_range_values_fail_before_a_run_directory_exists(tmp_path, capsys, override, message):
    target = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "+task=ner",
                "debug=tiny",
                "optimizer=sgd" if "momentum" in override else "optimizer=adamw",
                override,
                f"hydra.run.dir={target}",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not target.exists()


def test_nan_is_never_in_range():
    from fmtool.config.schema import Range

    assert not Range(0, None, low_open=True).holds(math.nan) and not Range().holds(math.inf) and Range().holds(-3)


def _tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_refused_train_leaves_every_byte_of_the_run(ner_run, tmp_path, capsys):
    held = tmp_path / "held"
    shutil.copytree(ner_run[0].path, held)
    # what Hydra writes into a run directory before the job starts
    (held / ".hydra").mkdir()
    (held / ".hydra" / "config.yaml").write_text("the run's own settings\n")
    (held / "train.log").write_text("the run's own log\n")
    before = _tree(held)
    assert main(["train", "+task=ner", "debug=tiny", f"hydra.run.dir={held}"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _tree(held) == before
    writing = RunDir(held)
    writing._lock()
    try:
        assert main(["train", "+task=ner", "debug=tiny", "overwrite=true", f"hydra.run.dir={held}"]) == 2
        assert "another fmtool process is writing" in capsys.readouterr().err
        assert _tree(held) == before
    finally:
        writing._unlock()


def test_lora_targets_that_match_nothing_are_refused_before_a_run_is_replaced(ner_run, tmp_path, capsys):
    held = tmp_path / "held"
    shutil.copytree(ner_run[0].path, held)
    before = _tree(held)
    argv = ["train", "+task=ner", "debug=tiny", "overwrite=true", "trainer.peft=lora", f"hydra.run.dir={held}"]
    assert main([*argv, "trainer.lora.target_modules=[nosuch]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trainer.lora.target_modules: nosuch match no module" in err
    assert main([*argv, "trainer.lora.target_modules=[]"]) == 2
    assert "adapts nothing" in capsys.readouterr().err
    assert main(["validate", "+task=ner", "debug=tiny", "trainer.peft=lora", "model.model_type=albert"]) == 2
    assert "no default target modules for model_type=albert" in capsys.readouterr().err
    assert main(["validate", "+task=ner", "debug=tiny", "trainer.peft=lora", "trainer.lora.r=4096"]) == 2
    assert "trainer.lora.r=4096 is above the rank 32" in capsys.readouterr().err
    assert _tree(held) == before


def test_a_replacement_that_fails_before_training_gives_the_old_run_back(ner_run, tmp_path, monkeypatch):
    """overwrite=true deletes the old run only once the new one trains: a model that cannot be adapted (known only
    after a hub download) restores it, byte for byte."""
    import fmtool.pipeline
    from fmtool.pipeline import run_training
    from tests.conftest import tiny_config

    held = tmp_path / "held"
    shutil.copytree(ner_run[0].path, held)
    before = _tree(held)

    def refuse(*args):
        raise FmtoolError("config: trainer.lora.target_modules: nosuch match no module")

    monkeypatch.setattr(fmtool.pipeline, "with_adapters", refuse)
    cfg = tiny_config("ner", "overwrite=true", "audit=none")
    with pytest.raises(FmtoolError, match="nosuch"):
        run_training(cfg, RunDir.create(held, cfg))
    assert _tree(held) == before and not (held / ".replaced").exists()
    monkeypatch.undo()
    replaced = RunDir.create(held, cfg)
    run_training(cfg, replaced)
    assert replaced.status()["state"] == "complete" and not (held / ".replaced").exists()
    assert replaced.status()["run_id"] != json.loads(before[Path("status.json")])["run_id"]
