"""Faults and bad input end in one line naming the file, key or split (exit 2) or in a resumable `interrupted`
run, never in a traceback or a run that looks complete."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import unicodedata

import pytest
import torch

from fmtool.dataset.examples import split_words
from fmtool.errors import FmtoolError, TrainingStopped
from fmtool.pipeline import run_training
from fmtool.predict import LoadedRun
from fmtool.runs import RunDir
from fmtool.task import TASKS
from fmtool.trainer.checkpoint import load_checkpoint
from tests.conftest import REPO, fmtool_cli, tiny_config, train_tiny


def test_a_truncated_safetensors_file_is_named(tmp_path, ner_run):
    run, _ = ner_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    weights = copy / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(FmtoolError, match=r"model: cannot load the model \(Error while deserializing header"):
        LoadedRun.load(copy)


def test_a_damaged_status_file_is_named(tmp_path, ner_run):
    run, _ = ner_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / "status.json").write_text("{bad", encoding="utf-8")
    with pytest.raises(FmtoolError, match=r"status.json: damaged, not JSON"):
        LoadedRun.load(copy)


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.02])
def test_a_truncated_config_file_is_named(tmp_path, ner_run, capsys, keep):
    from fmtool.cli import main

    copy = tmp_path / "run"
    shutil.copytree(ner_run[0].path, copy)
    saved = (copy / "config.yaml").read_bytes()
    (copy / "config.yaml").write_bytes(saved[: int(len(saved) * keep)])
    assert main(["predict", str(copy), "Alice went home ."]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "config.yaml: damaged" in error


@pytest.mark.parametrize("key", ["train_file", "validation_file"])
@pytest.mark.parametrize("task, name, holds", [("ner", "empty.conll", "examples"), ("mlm", "empty.txt", "text")])
def test_an_empty_data_file_is_named_and_the_run_marked_failed(tmp_path, key, task, name, holds):
    empty = tmp_path / name
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(FmtoolError, match=rf"dataset.{key}: {empty} holds no {holds}"):
        train_tiny(tmp_path / "run", task, f"dataset.{key}={empty}", "audit=none")
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"


@pytest.mark.parametrize("task", ["mlm", "clm"])
def test_a_language_model_run_without_held_out_documents_names_the_key(tmp_path, task):
    with pytest.raises(FmtoolError, match=r"dataset.validation_file is null, and this run reads it"):
        train_tiny(tmp_path / "run", task, "dataset.validation_file=null", "audit=none")
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"


def test_text_that_is_not_utf8_is_named_by_its_line_wherever_it_is_read(tmp_path):
    import argparse
    import io

    from fmtool.commands import _texts

    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"It rained .\nCaf\xe9 won .\n")
    with pytest.raises(FmtoolError, match=rf"^{latin}:2: not UTF-8 text \(byte 0xe9\)"):
        _texts(argparse.Namespace(texts=[], file=str(latin), output=None), "predict")
    for key in ("train_file", "validation_file"):
        with pytest.raises(FmtoolError, match=rf"^{latin}:2: not UTF-8 text"):
            train_tiny(tmp_path / key, "mlm", f"dataset.{key}={latin}", "audit=none")
    stdin = argparse.Namespace(texts=[], file=None, output=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ok\n\xff\n")))
        with pytest.raises(FmtoolError, match=r"^standard input:2: not UTF-8 text \(byte 0xff\)"):
            _texts(stdin, "predict")
        patch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"It rained .\r\nok\n")))
        assert _texts(stdin, "predict") == ["It rained .", "ok"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"female": ["Ann"]}', r"must hold a JSON object of genders, each an object of origins, each a list of names"),
        ('{"female": {"x": ["Ann"]', r"names.json:1: invalid JSON"),
    ],
)
def test_a_malformed_first_names_lexicon_is_named_by_its_key(tmp_path, content, message):
    from fmtool.dataset.lexicons import first_names, swap_pairs

    path = tmp_path / "names.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FmtoolError, match=rf"^audit.bias.first_names: .*{message}"):
        first_names(str(path), "audit.bias.first_names")
    pairs = tmp_path / "swaps.json"
    pairs.write_text('{"gender": [["he", "she", "they"]]}', encoding="utf-8")
    with pytest.raises(FmtoolError, match=r"^audit.bias.swaps: .* each a list of \[word, counterpart\] pairs"):
        swap_pairs(str(pairs), "audit.bias.swaps")
    assert first_names()["female"] and swap_pairs()["gender"]


def test_a_directory_given_as_a_data_file_is_called_one(tmp_path):
    with pytest.raises(FmtoolError, match=rf"dataset.train_file: {tmp_path} is a directory"):
        tiny_config("ner", f"dataset.train_file={tmp_path}")


def test_max_length_beyond_the_position_embeddings_fails_at_config_time():
    with pytest.raises(
        FmtoolError, match=r"trainer.max_length=1024 is longer than the model's 512 position embeddings"
    ):
        tiny_config("ner", "trainer.max_length=1024")
    with pytest.raises(FmtoolError, match=r"trainer.max_length=600 is longer than the model's 512"):
        tiny_config("ner", "model=minilm", "trainer.max_length=600")


def test_a_missing_local_model_is_named_before_any_run_directory_exists(tmp_path):
    with pytest.raises(FmtoolError, match=r"model.name: /no/such/model not found \(a local directory"):
        tiny_config("ner", "model=minilm", "model.name=/no/such/model")


def test_missing_runs_and_splits_say_what_is_missing(ner_run, tmp_path):
    run, _ = ner_run
    with pytest.raises(FmtoolError, match=r"has no 'test' split \(it has train, validation\)"):
        run.load_split("test")
    with pytest.raises(FmtoolError, match=r"not an fmtool run directory"):
        RunDir(tmp_path / "nothing").load_config()


def test_words_keep_their_combining_marks_and_offsets():
    for text in [unicodedata.normalize("NFD", "Zoé and Ça met in Paris."), "नमस्ते दुनिया, मेरा नाम राम है।", "தமிழ் நாடு"]:
        spans = split_words(text)
        assert all(text[start:end] == word for word, start, end in spans)
        assert [w for w, _, _ in spans if w not in ",.।"] == [w.strip(",.।") for w in text.split()]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import fmtool.pipeline as pipeline

    build = pipeline.build_model

    def poisoned(*args, **kwargs):
        model = build(*args, **kwargs)
        calls = {"n": 0}

        def nan_after_six(module, inputs, output):
            calls["n"] += module.training
            return output * float("nan") if calls["n"] > 6 else output

        model.classifier.register_forward_hook(nan_after_six)
        return model

    monkeypatch.setattr(pipeline, "build_model", poisoned)
    cfg = tiny_config(
        "ner", "trainer.max_steps=20", "trainer.batch_size=4", "trainer.checkpoint_every_steps=2", "audit=none"
    )
    run = RunDir.create(tmp_path / "run", cfg)
    with pytest.raises(TrainingStopped, match=r"the loss is nan at update 7"):
        run_training(cfg, run)
    assert run.status()["state"] == "failed" and "the loss is nan" in run.status()["error"]
    saved = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert saved["state"]["step"] == 6 and all(torch.isfinite(t).all() for t in saved["model"].values())


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_checkpoints_marks_the_run_interrupted_and_resume_finishes_it(tmp_path, signum, code):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmtool",
            "train",
            "+task=ner",
            "debug=tiny",
            "audit=none",
            "trainer.max_steps=100000",
            "trainer.checkpoint_every_steps=100000",
            "trainer.eval_every_steps=100000",
            "trainer.batch_size=2",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None, (
            process.stderr.read() if process.poll() is not None else "no progress"
        )
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(f"fmtool: error: interrupted by {signal.Signals(signum).name} after update ")
    )
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and list((run_dir / "checkpoint").glob("*.pt"))
    stopped_at = int(stderr.strip().splitlines()[-1].split("after update ")[1].split(":")[0])
    # continue to a short end: the saved config asks for 100,000 updates, so edit it as a user would
    config = (run_dir / "config.yaml").read_text().replace("max_steps: 100000", f"max_steps: {stopped_at + 5}")
    (run_dir / "config.yaml").write_text(config)
    result = fmtool_cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"


@pytest.mark.slow
def test_a_stop_signal_ends_a_dp_sgd_run_between_updates_as_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmtool",
            "train",
            "+task=classification",
            "debug=tiny",
            "audit=none",
            "trainer.epochs=100000",
            "trainer.dp.enabled=true",
            "trainer.dp.noise_multiplier=1.0",
            "trainer.batch_size=4",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None, (
            process.stderr.read() if process.poll() is not None else "no progress"
        )
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "a DP-SGD run keeps no checkpoint" in stderr.strip().splitlines()[-1]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"


@pytest.mark.slow
def test_a_bad_sweep_job_fails_alone_and_the_sweep_ends_with_the_job_table(tmp_path):
    sweep = tmp_path / "sweep"
    result = fmtool_cli(
        "train",
        "-m",
        "+task=ner",
        "debug=tiny",
        "audit=none",
        "trainer.max_length=1,96,128,160",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1, result.stderr
    rows = json.loads((sweep / "sweep.json").read_text())
    assert [(r["overrides"], r["state"]) for r in rows] == [
        ("trainer.max_length=1", "refused"),
        ("trainer.max_length=96", "complete"),
        ("trainer.max_length=128", "complete"),
        ("trainer.max_length=160", "complete"),
    ]
    assert rows[0]["error"].startswith("config: trainer.max_length=1 is outside [8, 8192]")
    assert "fmtool: error: config: trainer.max_length=1 is outside [8, 8192]" in result.stderr
    assert (
        "3 of 4 jobs complete" in result.stdout
        and "trainer.max_length=1 is outside" in (sweep / "sweep.md").read_text()
    )
    compared = fmtool_cli("compare", str(sweep))
    assert compared.returncode == 0 and "refused (config: trainer.max_length=1 is outside" in " ".join(
        compared.stdout.split()
    )


def test_position_embeddings_shorter_than_max_length_are_refused_when_the_config_arrives(tmp_path, ner_run):
    # a hub model's config is read only when the model is built; validate cannot see it earlier
    from fmtool.config.schema import ModelConfig
    from fmtool.model import build_model

    run, _ = ner_run
    short = tmp_path / "short"
    shutil.copytree(run.model_dir, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    with pytest.raises(FmtoolError, match=r"trainer.max_length=128 is longer than the model's 64 position embeddings"):
        build_model(ModelConfig(name=str(short)), TASKS.get("ner").head, ["O"], max_length=128)


def test_a_random_init_models_positions_are_checked_before_a_run_directory_exists(tmp_path, capsys):
    from fmtool.cli import main

    target = tmp_path / "run"
    argv = ["train", "+task=ner", "debug=tiny", "model=tiny_gpt", "trainer.max_length=600", f"hydra.run.dir={target}"]
    assert main(argv) == 2
    assert "trainer.max_length=600 is longer than the model's 512 position embeddings" in capsys.readouterr().err
    assert not target.exists()


def test_bidirectional_on_an_encoder_is_refused_not_ignored(capsys):
    from fmtool.cli import main

    assert main(["validate", "+task=ner", "debug=tiny", "model.bidirectional=true"]) == 2
    assert "model_type=bert is an encoder, which already reads both ways" in capsys.readouterr().err
    assert main(["validate", "+task=ner", "debug=tiny", "model=tiny_gpt", "model.bidirectional=true"]) == 0


def test_an_audit_refused_midway_leaves_the_last_audit_and_no_partial_folder(tmp_path, ner_run, capsys, monkeypatch):
    """The first family has written its file when the second is refused (a probe missing, a model it cannot read)."""
    import fmtool.auditing
    from fmtool.cli import main

    copy = tmp_path / "run"
    shutil.copytree(ner_run[0].path, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    families = fmtool.auditing.run_audits

    def refused_after_the_first(ctx, audit):
        for index, outcome in enumerate(families(ctx, audit)):
            if index == 1:
                raise FmtoolError("audit.data: refused by the test")
            yield outcome

    monkeypatch.setattr(fmtool.auditing, "run_audits", refused_after_the_first)
    assert main(["audit", str(copy), "audit=[calibration,data]"]) == 2
    assert "refused by the test" in capsys.readouterr().err
    assert not (copy / ".audit.partial").exists()
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_the_sweep_table_shows_bracketed_overrides_and_errors(tmp_path, capsys):
    from fmtool.report.console import print_sweep
    from fmtool.sweep import JobRow

    row = JobRow("0", "audit=[bias,data] trainer.lora.target_modules=[q_proj]", "refused", "bad [key]", "runs/0")
    print_sweep([row], tmp_path)
    out = capsys.readouterr().out
    assert "audit=[bias,data]" in out and "target_modules=[q_proj]" in out and "bad [key]" in out


def test_blank_text_arguments_are_named_as_arguments(ner_run, capsys):
    from fmtool.cli import main

    assert main(["predict", str(ner_run[0].path), ""]) == 2
    assert capsys.readouterr().err.strip() == "fmtool: error: predict: no text given (the text arguments are blank)"
