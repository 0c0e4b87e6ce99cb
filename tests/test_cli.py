"""The command line end to end: train, sweeps, config errors with exit code 2, eval, predict."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import fmtool_cli

_TINY = ["+task=ner", "debug=tiny"]


@pytest.mark.slow
def test_train_writes_a_complete_run_dir(tmp_path):
    result = fmtool_cli("train", *_TINY, f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    assert (run / "train.log").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["config_overrides"]["hidden_size"] == 32


@pytest.mark.slow
def test_default_run_dir_is_runs_task_timestamp(tmp_path):
    result = fmtool_cli("train", *_TINY, "audit=none", f"paths.runs_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    [run] = list((tmp_path / "ner").iterdir())
    assert (run / "results.json").is_file()


def test_misspelt_key_exits_2_naming_it_and_writes_nothing(tmp_path):
    result = fmtool_cli("train", *_TINY, "trainer.epohcs=2", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("fmtool: error: config:") and "trainer.epohcs" in lines[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bad_data_file_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.conll").write_text("EU B-ORG\nrejects\n")
    (bad / "dev.conll").write_text("EU B-ORG\n")
    result = fmtool_cli("train", *_TINY, f"dataset.data_dir={bad}", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert f"{bad}/train.conll:2:" in result.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "train.conll:2" in status["error"]


@pytest.mark.slow
def test_multirun_sweep_writes_one_run_dir_per_job(tmp_path):
    result = fmtool_cli("train", "-m", *_TINY, "optimizer.lr=1e-3,1e-4", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = [yaml.safe_load((job / "config.yaml").read_text())["optimizer"]["lr"] for job in jobs]
    assert lrs == [1e-3, 1e-4]
    assert all(json.loads((job / "status.json").read_text())["state"] == "complete" for job in jobs)


@pytest.mark.slow  # a CLI subprocess
def test_cfg_job_prints_the_config_without_running(tmp_path):
    result = fmtool_cli("train", *_TINY, "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["task"]["name"] == "ner"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_validate_and_list():
    assert fmtool_cli("validate", *_TINY).returncode == 0
    bad = fmtool_cli("validate", "+task=ner", "dataset=conll2003")
    assert bad.returncode == 2 and "dataset.data_dir is not set" in bad.stderr
    listing = fmtool_cli("list", "optimizer")
    assert listing.stdout.split() == ["adamw", "sgd"]


@pytest.mark.slow
def test_predict_reads_arguments_stdin_and_files(ner_run, tmp_path):
    run, _ = ner_run
    args = fmtool_cli("predict", str(run.path), "Maria Lopez visited Berlin .", "It rained .")
    assert args.returncode == 0, args.stderr
    records = [json.loads(line) for line in args.stdout.splitlines()]
    assert [r["text"] for r in records] == ["Maria Lopez visited Berlin .", "It rained ."]
    assert all(set(r) == {"text", "entities"} for r in records)
    stdin = fmtool_cli("predict", str(run.path), stdin="Maria Lopez visited Berlin .\n\nIt rained .\n")
    assert stdin.stdout == args.stdout
    source = tmp_path / "in.txt"
    source.write_text("Maria Lopez visited Berlin .\nIt rained .\n")
    out = tmp_path / "out.jsonl"
    assert fmtool_cli("predict", str(run.path), "--file", str(source), "--output", str(out)).returncode == 0
    assert out.read_text() == args.stdout
    full = fmtool_cli("predict", str(run.path), "--precision", "fp32", "Maria Lopez visited Berlin .")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["text"] == "Maria Lopez visited Berlin ."
    bad = fmtool_cli("predict", str(run.path), "--precision", "fp8", "It rained .")
    assert bad.returncode == 2 and "--precision" in bad.stderr
    unknown = fmtool_cli("predict", str(run.path), "It rained .", "--bogus")
    assert unknown.returncode == 2 and "unrecognized arguments: --bogus" in unknown.stderr


@pytest.mark.slow
def test_eval_scores_a_saved_split_and_a_new_file(ner_run, tmp_path):
    run, results = ner_run
    saved = fmtool_cli("eval", str(run.path), "--split", "validation")
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout.splitlines()[-1])["f1"] == results["after"]["validation"]["f1"]
    other = tmp_path / "other.conll"
    other.write_text("Maria B-PER\nLopez I-PER\nwon O\n")
    fresh = fmtool_cli("eval", str(run.path), "--file", str(other))
    assert fresh.returncode == 0, fresh.stderr
    assert (run.path / "eval" / "other.json").is_file()
    missing = fmtool_cli("eval", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not an fmtool run directory" in missing.stderr


@pytest.mark.slow
def test_predict_and_eval_refuse_bad_counts_empty_input_and_directory_outputs(ner_run, tmp_path):
    run, _ = ner_run
    for size in ("-3", "0", "many"):
        result = fmtool_cli("predict", str(run.path), "--batch-size", size, "It rained .")
        assert result.returncode == 2 and "--batch-size" in result.stderr, size
    assert fmtool_cli("eval", str(run.path), "--batch-size", "0").returncode == 2
    empty = fmtool_cli("predict", str(run.path), stdin="\n  \n")
    assert (
        empty.returncode == 2
        and empty.stderr.strip() == "fmtool: error: predict: no text given (standard input held none)"
    )
    into_dir = fmtool_cli("predict", str(run.path), "--output", str(tmp_path), "It rained .")
    assert (
        into_dir.returncode == 2
        and "is a directory" in into_dir.stderr
        and len(into_dir.stderr.strip().splitlines()) == 1
    )
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"It rained .\nCaf\xe9 Lopez won .\n")
    for command in ("predict", "explain"):
        result = fmtool_cli(command, str(run.path), "--file", str(latin))
        assert (
            result.returncode == 2
            and result.stderr.strip()
            == f"fmtool: error: {latin}:2: not UTF-8 text (byte 0xe9); convert the file to UTF-8"
        )
    no_rows = tmp_path / "none.conll"
    no_rows.write_text("\n\n")
    result = fmtool_cli("eval", str(run.path), "--file", str(no_rows))
    assert result.returncode == 2 and result.stderr.strip() == f"fmtool: error: eval: {no_rows} holds no examples"
