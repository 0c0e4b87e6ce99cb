"""DP-SGD (Opacus) trains with the epsilon it was given, reports it in results and the report, refuses the options
that would void its accounting, and stops a model from memorising rows that a non-private twin memorises."""

from __future__ import annotations

import json

import pytest

from fmtool.auditing import audit_loaded
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from fmtool.trainer.private import per_example_loss
from tests.conftest import tiny_config, train_tiny
from tests.planted import write_unique_rows

_MEMORISE = [
    "dataset.format=tsv",
    "dataset.train_file=train.tsv",
    "dataset.validation_file=train.tsv",
    "dataset.test_file=dev.tsv",
    "dataset.text_column=sentence",
    "dataset.max_train_examples=null",
    "dataset.max_eval_examples=null",
    "scheduler=constant",
    "scheduler.warmup_ratio=0",
    "model.dropout=0.0",
    "optimizer.weight_decay=0",
    "optimizer.lr=1e-3",
    "trainer.epochs=80",
    "trainer.freeze=embeddings",
    "audit=none",
]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_dp_run_spends_the_epsilon_it_was_given_and_reports_it(tmp_path, optimizer):
    run, results = train_tiny(
        tmp_path / "run",
        "classification",
        "trainer.dp.enabled=true",
        "trainer.dp.target_epsilon=4",
        "trainer.epochs=2",
        "trainer.freeze=embeddings",
        "audit=none",
        f"optimizer={optimizer}",
    )
    privacy = results["train"]["privacy"]
    assert privacy["optimizer"] == optimizer
    assert (
        privacy["epsilon"] == pytest.approx(4, rel=0.05)
        and privacy["delta"] == 1e-5
        and privacy["noise_multiplier"] > 0
    )
    report = audit_loaded(LoadedRun.load(run.path), {"calibration": {}}, run.path)
    assert report["privacy"]["epsilon"] == privacy["epsilon"]
    assert "DP-SGD" in (run.path / "report" / "report.md").read_text()
    assert json.loads((run.path / "results.json").read_text())["train"]["privacy"]["accountant"] == "prv"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.dp.enabled=true"], "give exactly one of trainer.dp.noise_multiplier and trainer.dp.target_epsilon"),
        (
            [
                "trainer.dp.enabled=true",
                "trainer.dp.noise_multiplier=1",
                "adversarial=fgm",
                "trainer.checkpoint_every_steps=5",
            ],
            r"cannot be combined with adversarial=fgm, trainer.checkpoint_every_steps",
        ),
    ],
)
def test_options_that_void_the_accounting_are_refused_by_name(overrides, message):
    with pytest.raises(FmtoolError, match=message):
        tiny_config("classification", *overrides)


def test_noise_too_small_for_the_accountant_is_a_one_line_error_naming_the_setting(tmp_path):
    with pytest.raises(
        FmtoolError,
        match=(
            r"^trainer.dp: the prv accountant cannot bound epsilon for noise_multiplier 1e-06 \(MemoryError\); add "
            r"noise"
        ),
    ):
        train_tiny(
            tmp_path / "run",
            "classification",
            "trainer.dp.enabled=true",
            "trainer.dp.noise_multiplier=0.000001",
            "trainer.epochs=1",
        )


def test_every_example_weighs_the_same_in_the_ner_loss():
    import torch

    logits = torch.zeros(2, 4, 3)
    labels = torch.tensor([[0, -100, -100, -100], [0, 0, 0, 1]])
    # uniform logits: each labelled token costs log 3, so each example's mean and the batch mean are log 3
    assert per_example_loss(logits, labels).item() == pytest.approx(torch.log(torch.tensor(3.0)).item())


@pytest.mark.slow
def test_dp_sgd_stops_the_memorisation_that_the_membership_audit_catches(tmp_path):
    data = write_unique_rows(tmp_path / "unique")
    audit = {"membership": {"held_out_splits": ["test"], "attacks": ["loss"]}}
    leaky, _ = train_tiny(tmp_path / "plain", "classification", f"dataset.data_dir={data}", *_MEMORISE)
    private, results = train_tiny(
        tmp_path / "private",
        "classification",
        f"dataset.data_dir={data}",
        *_MEMORISE,
        "trainer.dp.enabled=true",
        "trainer.dp.target_epsilon=1",
    )
    plain_entry = audit_loaded(LoadedRun.load(leaky.path), audit, leaky.path)["audits"][0]
    private_entry = audit_loaded(LoadedRun.load(private.path), audit, private.path)["audits"][0]
    assert plain_entry["status"] == "fail" and plain_entry["summary"]["loss.auc"] > 0.7, plain_entry["summary"]
    assert private_entry["status"] == "pass" and private_entry["summary"]["loss.auc"] < 0.6, private_entry["summary"]
    assert results["train"]["privacy"]["epsilon"] <= 1.05


def test_a_draw_of_no_example_is_still_a_noisy_step_the_accountant_counts():
    import torch
    from opacus import PrivacyEngine

    from fmtool.trainer.private import _no_example_drawn

    model = torch.nn.Linear(3, 2)
    rows = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.zeros(8, dtype=torch.long))
    engine = PrivacyEngine(accountant="prv")
    _, optimizer, _ = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=torch.utils.data.DataLoader(rows, batch_size=4),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
    )
    before = model.weight.detach().clone()
    _no_example_drawn(optimizer)
    optimizer.step()
    # an unchanged model after an empty draw would tell that no one was drawn; noise alone must move it
    assert not torch.equal(before, model.weight.detach())
    assert len(engine.accountant.history) == 1
