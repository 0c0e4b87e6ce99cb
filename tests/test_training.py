"""Learning really happens: a tiny model memorises a small set; results hold before and after figures."""

from __future__ import annotations

import json

from fmtool.config.schema import Freeze
from fmtool.model import build_model, load_tokenizer
from fmtool.task import TASKS
from fmtool.trainer.freeze import apply_freeze
from tests.conftest import tiny_config, train_tiny


def test_tiny_ner_model_overfits_to_f1_one(ner_run):
    _, results = ner_run
    assert results["before"]["validation"]["f1"] < 0.5
    assert results["after"]["validation"]["f1"] == 1.0


def test_tiny_classifier_overfits_to_accuracy_one(classification_run):
    _, results = classification_run
    assert results["after"]["validation"]["accuracy"] == 1.0
    assert results["after"]["validation"]["macro_f1"] == 1.0


def test_metrics_log_has_train_and_eval_lines(ner_run):
    run, results = ner_run
    lines = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    assert {line["split"] for line in lines} == {"train", "validation"}
    evaluations = [line for line in lines if line["split"] == "validation"]
    assert max(e["f1"] for e in evaluations) == results["train"]["best_metric"]["f1"]


def test_same_seed_repeats_metrics_on_cpu(tmp_path):
    overrides = ("trainer.epochs=2", "optimizer.lr=1e-3")
    _, first = train_tiny(tmp_path / "a", "classification", *overrides)
    _, second = train_tiny(tmp_path / "b", "classification", *overrides)
    assert first["after"] == second["after"]
    assert first["before"] == second["before"]


def test_early_stopping_stops_after_patience(tmp_path):
    # lr=0 never improves the metric, so training stops after 1 + patience evaluations
    run, results = train_tiny(
        tmp_path, "ner", "optimizer.lr=1e-12", "trainer.epochs=10", "trainer.patience=2", "scheduler.warmup_ratio=0"
    )
    assert results["train"]["stopped_early"] is True
    evaluations = [json.loads(line) for line in run.metrics_file.read_text().splitlines() if '"validation"' in line]
    assert len(evaluations) == 3


def test_max_steps_and_accumulation_count_updates(tmp_path):
    _, results = train_tiny(
        tmp_path, "ner", "trainer.max_steps=3", "trainer.grad_accum_steps=2", "trainer.batch_size=4"
    )
    assert results["train"]["updates"] == 3
    assert results["train"]["samples"] == 3 * 2 * 4


def test_freeze_strategies_leave_the_right_parameters_trainable():
    cfg = tiny_config("ner")
    tokenizer = load_tokenizer(cfg.model)

    def trainable(strategy, k=0):
        model = build_model(cfg.model, TASKS.get(cfg.task.name).head, ["O", "B-X", "I-X"], vocab_size=len(tokenizer))
        apply_freeze(model, strategy, k)
        return {n for n, p in model.named_parameters() if p.requires_grad}

    everything = trainable(Freeze.none)
    head_only = trainable(Freeze.all_but_head)
    assert head_only == {"classifier.weight", "classifier.bias"}
    no_embeddings = trainable(Freeze.embeddings)
    assert not any("embeddings" in n for n in no_embeddings) and no_embeddings < everything
    bottom = trainable(Freeze.bottom_k, 1)
    assert not any("encoder.layer.0." in n for n in bottom) and any("encoder.layer.1." in n for n in bottom)


def test_a_short_run_logs_enough_training_loss_points_for_a_curve(tmp_path):
    from fmtool.trainer.loop import MIN_LOGGED_POINTS, logging_interval

    assert [logging_interval(50, total) for total in (4, 39, 400, 5000)] == [1, 1, 20, 50]
    run, results = train_tiny(
        tmp_path / "run", "classification", "dataset.max_train_examples=96", "trainer.epochs=7", "trainer.batch_size=8"
    )
    logged = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    train_points = [r for r in logged if r.get("split") == "train"]
    assert results["train"]["updates"] == 84 and len(train_points) >= MIN_LOGGED_POINTS
