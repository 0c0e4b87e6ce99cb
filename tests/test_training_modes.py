"""Resume, re-fine-tuning, adversarial training, gradient checkpointing and multi-process (DDP, FSDP2) training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fmtool.adversarial import METHODS, attack, perturbed_embeddings, project, unit_direction
from fmtool.config.schema import AdversarialName
from fmtool.errors import FmtoolError
from fmtool.pipeline import run_training
from fmtool.predict import LoadedRun
from fmtool.runs import FAILED, RunDir
from fmtool.trainer.checkpoint import checkpoint_step, load_checkpoint
from tests.conftest import OVERFIT, REPO, fmtool_cli, tiny_config, train_tiny
from tests.helpers import SHORT, model_weights


class StopAfter:
    """A progress display that interrupts training after `updates` updates, like Ctrl-C or a preemption."""

    def __init__(self, updates: int) -> None:
        self.updates, self.seen = updates, 0

    def start(self, description, total):
        pass

    def advance(self, n=1, **fields):
        self.seen += n if "loss" in fields else 0  # training updates report their loss; evaluation batches do not
        if self.seen >= self.updates:
            raise KeyboardInterrupt

    def stop(self):
        pass


def _logged(run: RunDir) -> list[dict]:
    return [json.loads(line) for line in run.metrics_file.read_text().splitlines()]


@pytest.mark.parametrize(
    "extra", [[], pytest.param(["model=tiny_gpt", "trainer.peft=lora"], marks=pytest.mark.slow)], ids=["full", "lora"]
)
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, extra):
    overrides = [*SHORT, "trainer.checkpoint_every_steps=3", *extra]
    straight, expected = train_tiny(tmp_path / "straight", "ner", *overrides)
    cfg = tiny_config("ner", *overrides)
    stopped = RunDir.create(tmp_path / "stopped", cfg)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, stopped, StopAfter(5))
    assert stopped.status()["state"] == FAILED and load_checkpoint(stopped.checkpoint_dir)["state"]["step"] == 3
    resumed = run_training(stopped.load_config(), RunDir.reopen(stopped.path), resume=True)
    assert resumed["after"] == expected["after"]
    assert resumed["train"]["updates"] == 8 and resumed["train"]["samples"] == expected["train"]["samples"]
    assert _logged(stopped) == _logged(straight)
    straight_weights, resumed_weights = model_weights(straight), model_weights(stopped)
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)


def _killed_before_rename(save, directory, payload):
    (directory / "state.pt.partial").write_bytes(b"torn")  # torch.save stopped part-way
    raise KeyboardInterrupt


def _killed_after_rename(save, directory, payload):
    save(directory, payload)
    raise KeyboardInterrupt


@pytest.mark.parametrize("kill", [_killed_before_rename, _killed_after_rename], ids=["before-rename", "after-rename"])
def test_a_kill_at_any_point_of_a_checkpoint_write_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, kill):
    """kill -9 while the second checkpoint is written: before its rename the first stands, after it the second; either
    way the resumed run's weights and metrics are the uninterrupted run's, byte for byte."""
    import fmtool.trainer.loop as loop

    overrides = [*SHORT, "trainer.checkpoint_every_steps=3"]
    straight, expected = train_tiny(tmp_path / "straight", "ner", *overrides)
    cfg = tiny_config("ner", *overrides)
    killed = RunDir.create(tmp_path / "killed", cfg)
    save, saves = loop.save_checkpoint, []

    def save_then_die_on_the_second(directory, payload):
        saves.append(payload["state"]["step"])
        return kill(save, directory, payload) if len(saves) == 2 else save(directory, payload)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, killed)
    monkeypatch.setattr(loop, "save_checkpoint", save)
    resumed = run_training(killed.load_config(), RunDir.reopen(killed.path), resume=True)
    assert saves == [3, 6] and resumed["after"] == expected["after"]
    assert killed.metrics_file.read_bytes() == straight.metrics_file.read_bytes()
    straight_weights, resumed_weights = model_weights(straight), model_weights(killed)
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)


@pytest.mark.parametrize("edit, named", [({"r": 4}, "trainer.lora.r=4"), ({"peft": "none"}, "trainer.peft=none")])
def test_resuming_with_an_edited_lora_setting_names_it(tmp_path, capsys, edit, named):
    import yaml

    from fmtool.cli import main

    cfg = tiny_config("ner", *SHORT, "trainer.checkpoint_every_steps=3", "trainer.peft=lora")
    stopped = RunDir.create(tmp_path / "stopped", cfg)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, stopped, StopAfter(5))
    saved = yaml.safe_load(stopped.config_file.read_text())
    if "r" in edit:
        saved["trainer"]["lora"]["r"] = edit["r"]
    else:
        saved["trainer"]["peft"] = edit["peft"]
    stopped.config_file.write_text(yaml.safe_dump(saved))
    assert main(["resume", str(stopped.path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"config.yaml says {named} (the checkpoint was taken with" in error


def test_a_truncated_checkpoint_is_named_not_a_traceback(tmp_path):
    run = RunDir.create(tmp_path / "run", tiny_config("ner", "trainer.checkpoint_every_steps=1"))
    (run.checkpoint_dir / "state.pt").write_bytes(b"PK\x03\x04 torn")
    run.finish(FAILED, error="killed")
    with pytest.raises(FmtoolError, match=r"state.pt: not a readable fmtool checkpoint"):
        checkpoint_step(RunDir.reopen(run.path).checkpoint_dir)


@pytest.mark.slow  # a CLI subprocess
def test_resume_refuses_complete_runs_and_runs_without_checkpoints(tmp_path, ner_run):
    run, _ = ner_run
    result = fmtool_cli("resume", str(run.path))
    assert result.returncode == 2 and "already complete" in result.stderr
    cfg = tiny_config("ner", *SHORT)
    stopped = RunDir.create(tmp_path / "no_checkpoint", cfg)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, stopped, StopAfter(2))
    result = fmtool_cli("resume", str(stopped.path))
    assert result.returncode == 2 and "no checkpoint to resume from" in result.stderr


def test_re_fine_tuning_keeps_the_label_map_and_extends_it(tmp_path, ner_run, caplog):
    run, first = ner_run
    start = [f"model.name={run.model_dir}", "model.random_init=false", "model.tokenizer=null"]
    # same data: the kept head scores like the model it came from before any update
    _, again = train_tiny(
        tmp_path / "again",
        "ner",
        *start,
        "trainer.max_steps=1",
        "optimizer.lr=1e-9",
        "dataset.validation_file=train.conll",
        "dataset.max_train_examples=24",
        "dataset.max_eval_examples=24",
        "audit=none",
    )
    assert again["labels"] == first["labels"] and again["inherited_labels"] == first["labels"]
    assert again["before"]["validation"]["f1"] == first["after"]["validation"]["f1"] == 1.0
    new_data = tmp_path / "new.conll"
    new_data.write_text("Fmtool B-PROD\nhelps O\nPeter B-PER\n\nUse O\nFmtool B-PROD\nSuite I-PROD\n")
    _, extended = train_tiny(
        tmp_path / "extended",
        "ner",
        *start,
        f"dataset.data_dir={tmp_path}",
        "dataset.train_file=new.conll",
        "dataset.validation_file=new.conll",
        "audit=none",
    )
    assert extended["labels"] == [*first["labels"], "B-PROD", "I-PROD"]
    assert "the new data adds B-PROD, I-PROD" in caplog.text


def test_adversarial_perturbations_stay_in_the_epsilon_ball():
    grad, mask = torch.randn(3, 5, 4), torch.ones(3, 5, 1)
    mask[0, 3:] = 0
    direction = unit_direction(grad, mask)
    assert torch.allclose(direction.flatten(1).norm(dim=1), torch.ones(3)) and direction[0, 3:].abs().sum() == 0
    assert torch.allclose(project(5 * direction, 2.0).flatten(1).norm(dim=1), torch.full((3,), 2.0))
    assert torch.allclose(project(0.5 * direction, 2.0), 0.5 * direction)
    assert set(METHODS.names()) == {name.value for name in AdversarialName}


ADVERSARIAL_RUN = [*OVERFIT["classification"], "adversarial.epsilon=0.05", "audit=none"]


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory):
    run, _ = train_tiny(tmp_path_factory.mktemp("plain"), "classification", *ADVERSARIAL_RUN)
    return model_weights(run)


@pytest.mark.parametrize(
    "method", ["fgm", pytest.param("pgd", marks=pytest.mark.slow), pytest.param("freelb", marks=pytest.mark.slow)]
)
def test_adversarial_training_learns_under_each_method(tmp_path, method, plain_weights):
    run, results = train_tiny(tmp_path, "classification", *ADVERSARIAL_RUN, f"adversarial={method}")
    assert results["train"]["adversarial"] == method
    assert results["after"]["validation"]["accuracy"] >= 0.9
    trained = model_weights(run)
    assert any(not torch.allclose(plain_weights[k], trained[k]) for k in trained)


def test_pgd_attack_lowers_a_trained_classifiers_accuracy(classification_run):
    from fmtool.dataset.batching import collate

    loaded = LoadedRun.load(classification_run[0].path)
    examples = classification_run[0].load_split("validation")
    features = loaded.task.encode(
        examples, loaded.tokenizer, {label: i for i, label in enumerate(loaded.labels)}, loaded.cfg.trainer
    )
    batch = collate(features, loaded.tokenizer.pad_token_id)
    model = loaded.model.eval()
    embeddings = model.get_input_embeddings()
    zeros = torch.zeros(*batch["input_ids"].shape, embeddings.embedding_dim)
    mask = batch["attention_mask"].unsqueeze(-1).float()

    def loss_with(delta):
        with perturbed_embeddings(model, delta):
            return model(**batch).loss

    def accuracy(delta):
        with torch.no_grad(), perturbed_embeddings(model, delta):
            return (model(**batch).logits.argmax(-1) == batch["labels"]).float().mean().item()

    delta = attack(loss_with, zeros, mask, epsilon=3.0, step_size=1.0, steps=5)
    assert accuracy(None) == 1.0 and accuracy(delta) < 0.9
    assert (delta.flatten(1).norm(dim=1) <= 3.0 + 1e-4).all()


def test_gradient_checkpointing_gives_the_same_training(tmp_path):
    same = [*SHORT, "model.dropout=0.0", "trainer.max_steps=3"]
    _, plain = train_tiny(tmp_path / "plain", "classification", *same)
    _, checkpointed = train_tiny(
        tmp_path / "checkpointed", "classification", *same, "trainer.gradient_checkpointing=true"
    )
    assert checkpointed["after"]["validation"]["accuracy"] == plain["after"]["validation"]["accuracy"]
    assert checkpointed["train"]["best_metric"] == pytest.approx(plain["train"]["best_metric"])


def test_token_budget_splits_wide_batches_without_changing_the_update(tmp_path):
    # fp32: under bf16 the pieces' other widths change rounding, not the update
    same = [
        *SHORT,
        "model.dropout=0.0",
        "trainer.max_steps=3",
        "trainer.max_length=32",
        "trainer.window_stride=8",
        "trainer.precision=fp32",
    ]
    _, whole = train_tiny(tmp_path / "whole", "ner", *same, "trainer.max_batch_tokens=100000")
    _, split = train_tiny(tmp_path / "split", "ner", *same, "trainer.max_batch_tokens=32")
    weights_whole, weights_split = (
        model_weights(RunDir.open(tmp_path / "whole")),
        model_weights(RunDir.open(tmp_path / "split")),
    )
    assert all(torch.allclose(weights_whole[k], weights_split[k], atol=1e-6) for k in weights_whole)
    assert split["train"]["samples"] == whole["train"]["samples"]


def _train(folder, overrides: list[str], *, processes: int = 1) -> RunDir:
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port=29533"]
    result = subprocess.run(
        [sys.executable, *(launcher if processes > 1 else []), "-m", "fmtool", "train", *overrides],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return RunDir.open(folder)


def _gradient_norms(run: RunDir) -> list[float]:
    """Each update's gradient norm before clipping: the raw gradient's, before any optimizer step rescales it."""
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    return [record["grad_norm"] for record in records if record["split"] == "train"]


# NER: the ranks' halves of a batch hold different numbers of labelled tokens; 29 examples in batches of 4 leave
# a 1-example batch that gives one rank nothing; accumulation and a token budget that splits some ranks' halves
# and not others exercise DDP's no_sync and FSDP's equal micro-batch counts
UNEVEN_NER = [
    "+task=ner",
    "debug=tiny",
    "model.dropout=0.0",
    "trainer.max_steps=4",
    "trainer.batch_size=4",
    "trainer.grad_accum_steps=2",
    "dataset.max_train_examples=29",
    "audit=none",
    "trainer.max_length=32",
    "trainer.window_stride=8",
    "trainer.max_batch_tokens=32",
]
LORA_DECODER = [
    "+task=classification",
    "debug=tiny",
    "model=tiny_llama",
    "model.dropout=0.0",
    "trainer.peft=lora",
    "trainer.lora.dropout=0",
    "trainer.max_steps=3",
    "trainer.batch_size=4",
    "audit=none",
]
CAUSAL_LM = ["+task=clm", "debug=tiny", "model=tiny_gpt", "model.dropout=0.0", "trainer.max_steps=3", "audit=none"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param([*UNEVEN_NER, "trainer.strategy=ddp"], id="ddp-ner"),
        pytest.param([*UNEVEN_NER, "trainer.strategy=fsdp"], id="fsdp-ner"),
        pytest.param([*LORA_DECODER, "trainer.strategy=fsdp"], id="fsdp-lora-llama"),
        pytest.param([*CAUSAL_LM, "trainer.strategy=fsdp"], id="fsdp-clm-gpt"),
    ],
)
def test_two_processes_give_one_process_gradients_and_model(overrides, tmp_path):
    # the gradient norms compare the raw gradients: an optimizer step (Adam's) would hide a summed-instead-of-averaged
    # gradient, which doubles the norm
    one = _train(tmp_path / "one", [*overrides, f"hydra.run.dir={tmp_path / 'one'}"])
    two = _train(tmp_path / "two", [*overrides, f"hydra.run.dir={tmp_path / 'two'}"], processes=2)
    trained_one, trained_two = one.load_results()["train"], two.load_results()["train"]
    assert trained_two["processes"] == 2 and trained_two["samples"] == trained_one["samples"]
    assert _gradient_norms(two) == pytest.approx(_gradient_norms(one), rel=1e-3)
    weights_one, weights_two = model_weights(one), model_weights(two)
    assert weights_one.keys() == weights_two.keys()
    assert all(torch.allclose(weights_one[k], weights_two[k], atol=1e-5) for k in weights_one)


@pytest.mark.slow
def test_resume_command_completes_an_interrupted_run_and_audits_it(tmp_path):
    cfg = tiny_config("classification", *SHORT[:-1], "trainer.checkpoint_every_steps=2", "audit=[bias]")
    stopped = RunDir.create(tmp_path / "run", cfg)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, stopped, StopAfter(3))
    result = fmtool_cli("resume", str(stopped.path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert RunDir.open(stopped.path).load_results()["train"]["updates"] == 8
    assert (stopped.path / "report" / "report.json").is_file() and (stopped.path / "audit" / "bias.json").is_file()


@pytest.mark.slow
def test_adversarial_module_imports_on_its_own():
    result = subprocess.run(
        [sys.executable, "-c", "import fmtool.adversarial"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_streamed_pretraining_resumes_mid_epoch_exactly(tmp_path):
    overrides = [
        "dataset.streaming=true",
        "dataset.shuffle_buffer=8",
        "trainer.max_steps=6",
        "trainer.eval_every_steps=3",
        "trainer.checkpoint_every_steps=2",
        "trainer.max_length=32",
        "dataset.max_train_examples=40",
        "audit=none",
    ]
    straight, expected = train_tiny(tmp_path / "straight", "mlm", *overrides)
    cfg = tiny_config("mlm", *overrides)
    stopped = RunDir.create(tmp_path / "stopped", cfg)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, stopped, StopAfter(3))
    resumed = run_training(stopped.load_config(), RunDir.reopen(stopped.path), resume=True)
    assert resumed["after"] == expected["after"] and _logged(stopped) == _logged(straight)
    straight_weights, resumed_weights = model_weights(straight), model_weights(stopped)
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)
