from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmtool.config import to_typed
from fmtool.configure import compose_train_config, validate
from fmtool.pipeline import run_training
from fmtool.runs import RunDir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).parent / "fixtures"


def tiny_config(task: str = "ner", *overrides: str):
    return validate(to_typed(compose_train_config([f"+task={task}", "debug=tiny", *overrides])))


def train_tiny(path: Path, task: str = "ner", *overrides: str) -> tuple[RunDir, dict]:
    cfg = tiny_config(task, *overrides)
    run = RunDir.create(path, cfg)
    return run, run_training(cfg, run)


# Small enough to memorise in seconds: evaluation reuses the same sentences as training.
OVERFIT = {
    "ner": [
        "dataset.validation_file=train.conll",
        "dataset.max_train_examples=24",
        "dataset.max_eval_examples=24",
        "optimizer.lr=3e-3",
        "scheduler=constant",
        "scheduler.warmup_ratio=0",
        "trainer.epochs=60",
        "trainer.batch_size=8",
    ],
    "classification": [
        "dataset.validation_file=train.tsv",
        "dataset.max_train_examples=24",
        "dataset.max_eval_examples=24",
        "optimizer.lr=3e-3",
        "scheduler=constant",
        "scheduler.warmup_ratio=0",
        "trainer.epochs=30",
        "trainer.batch_size=8",
    ],
}


@pytest.fixture(scope="session")
def ner_run(tmp_path_factory) -> tuple[RunDir, dict]:
    return train_tiny(tmp_path_factory.mktemp("ner_run"), "ner", *OVERFIT["ner"])


@pytest.fixture(scope="session")
def classification_run(tmp_path_factory) -> tuple[RunDir, dict]:
    return train_tiny(tmp_path_factory.mktemp("cls_run"), "classification", *OVERFIT["classification"])


def fmtool_cli(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "fmtool", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        input=stdin,
        env=env,
        timeout=600,
    )


def needs_shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path
