"""fmtool compare: a table over runs or a sweep folder, the Pareto front of hand-made runs whose front is known,
and --gate exiting 1 on a planted regression and 0 without one."""

from __future__ import annotations

import json

import pytest

from fmtool.errors import FmtoolError
from fmtool.report import compare
from tests.conftest import fmtool_cli

# name: (accuracy, demographic parity difference (limit 0.1), worst robustness pass rate, membership AUC)
RUNS = {
    "a": (0.90, 0.08, 0.80, 0.55),
    "b": (0.85, 0.02, 0.90, 0.52),
    "c": (0.80, 0.09, 0.70, 0.60),
    "d": (0.95, 0.15, 0.60, 0.70),
}
FRONT = {"a", "b", "d"}  # c is worse than a in every objective


def _regressions(parent, child, **settings):
    return [j for j in compare.judge(parent, child, **settings) if j.regression]


def _check(name, value, threshold, direction):
    status = "pass" if (value <= threshold if direction == "max" else value >= threshold) else "fail"
    return {"name": name, "value": value, "threshold": threshold, "direction": direction, "status": status}


def _run(folder, accuracy, gap, pass_rate, auc):
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "complete"}))
    (folder / "results.json").write_text(
        json.dumps(
            {"task": "classification", "after": {"validation": {"accuracy": accuracy, "macro_f1": accuracy - 0.05}}}
        )
    )
    audits = [
        {"name": "fairness", "checks": [_check("gender.demographic_parity_difference", gap, 0.1, "max")]},
        {
            "name": "robustness",
            "checks": [
                _check("add_typo.pass_rate", pass_rate, 0.75, "min"),
                _check("uppercase.pass_rate", 1.0, 0.75, "min"),
            ],
        },
        {"name": "membership", "checks": [_check("loss.auc", auc, 0.6, "max")]},
    ]
    (folder / "report").mkdir()
    (folder / "report" / "report.json").write_text(json.dumps({"run": {"task": "classification"}, "audits": audits}))
    return folder


@pytest.fixture
def sweep(tmp_path):
    for index, (name, figures) in enumerate(RUNS.items()):
        _run(tmp_path / "sweep" / f"{index}_{name}", *figures)
    return tmp_path / "sweep"


def test_the_pareto_front_of_known_runs(sweep):
    paths, left_out = compare.run_dirs([sweep])
    runs = [compare.summarise(p) for p in paths]
    assert left_out == []
    used = compare.pareto_front(runs)
    assert used == ["quality", "fairness", "robustness", "privacy"]
    assert {r.path.name.split("_")[1] for r in runs if r.on_front} == FRONT
    c = next(r for r in runs if r.path.name.endswith("_c"))
    assert c.objectives == pytest.approx({"quality": 0.80, "fairness": 0.9, "robustness": 0.70, "privacy": 0.60})
    assert [r.path.name for r in compare.sort_runs(runs, None)] == ["3_d", "0_a", "1_b", "2_c"]
    assert [r.path.name for r in compare.sort_runs(runs, "privacy")][0] == "1_b"


@pytest.mark.slow
def test_compare_cli_writes_table_csv_and_html(sweep, tmp_path):
    result = fmtool_cli("compare", str(sweep), "--csv", str(tmp_path / "out.csv"), "--html", str(tmp_path / "out.html"))
    assert result.returncode == 0, result.stderr
    assert (
        "Pareto front" in result.stdout and result.stdout.count("★") == len(FRONT) + 2
    )  # and the title and the column header
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("run,pareto_front,accuracy")
    page = (tmp_path / "out.html").read_text()
    assert page.count('data-plot="pareto"') == 3 and "<script" not in page


@pytest.mark.slow
def test_gate_fails_a_regressing_child_and_passes_an_equal_one(sweep, tmp_path):
    parent, worse = sweep / "0_a", sweep / "2_c"
    regressions = _regressions(
        compare.summarise(parent), compare.summarise(worse), metric_tolerance=0.01, check_tolerance=0.02, margin=0.01
    )
    assert {r.figure for r in regressions} == {
        "accuracy",
        "macro_f1",
        "robustness.add_typo.pass_rate",
        "membership.loss.auc",
    }
    assert fmtool_cli("compare", str(parent), str(worse), "--gate").returncode == 1
    twin = _run(tmp_path / "twin", *RUNS["a"])
    assert fmtool_cli("compare", str(parent), str(twin), "--gate").returncode == 0
    # a check that passed and now fails regresses whatever the tolerance
    failing = _run(tmp_path / "failing", 0.90, 0.101, 0.80, 0.55)
    assert [
        r.figure
        for r in _regressions(
            compare.summarise(parent), compare.summarise(failing), metric_tolerance=1, check_tolerance=1, margin=0.01
        )
    ] == ["fairness.gender.demographic_parity_difference"]


def test_a_sweep_job_that_did_not_complete_is_left_out_and_named(sweep, tmp_path):
    failed = sweep / "4_failed"
    failed.mkdir()
    (failed / "status.json").write_text(json.dumps({"state": "failed", "error": "config: trainer.lr must be positive"}))
    paths, left_out = compare.run_dirs([sweep])
    assert [p.name for p in paths] == ["0_a", "1_b", "2_c", "3_d"] and left_out == [f"{failed}: failed"]
    only_failed = tmp_path / "broken_sweep" / "0"
    only_failed.mkdir(parents=True)
    (only_failed / "status.json").write_text(json.dumps({"state": "interrupted"}))
    with pytest.raises(FmtoolError, match=r"broken_sweep holds no complete run \(0: interrupted\)"):
        compare.run_dirs([only_failed.parent])


def test_compare_names_what_it_cannot_read(tmp_path):
    with pytest.raises(FmtoolError, match="neither a run directory nor a folder of runs"):
        compare.run_dirs([tmp_path])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text("{}")
    with pytest.raises(FmtoolError, match=r"results.json missing"):
        compare.summarise(tmp_path / "run")


def test_masked_lm_runs_are_better_with_lower_loss_and_perplexity(tmp_path):
    def mlm_run(name, loss):
        folder = tmp_path / "sweep" / name
        folder.mkdir(parents=True)
        (folder / "status.json").write_text(json.dumps({"state": "complete"}))
        (folder / "results.json").write_text(
            json.dumps({"task": "mlm", "after": {"validation": {"loss": loss, "perplexity": 2.718281828**loss}}})
        )
        (folder / "report").mkdir()
        (folder / "report" / "report.json").write_text(json.dumps({"run": {"task": "mlm"}, "audits": []}))
        return compare.summarise(folder)

    good, bad = mlm_run("good", 6.0), mlm_run("bad", 7.0)
    assert compare.pareto_front([good, bad]) == ["quality"] and good.on_front and not bad.on_front
    assert [r.path.name for r in compare.sort_runs([bad, good], None)] == ["good", "bad"]
    assert [r.path.name for r in compare.sort_runs([bad, good], "perplexity")] == ["good", "bad"]
    assert _regressions(good, good, metric_tolerance=0.01, check_tolerance=0.02, margin=0.01) == []
    assert _regressions(bad, good, metric_tolerance=0.01, check_tolerance=0.02, margin=0.01) == []
    assert {r.figure for r in _regressions(good, bad, metric_tolerance=0.01, check_tolerance=0.02, margin=0.01)} == {
        "loss",
        "perplexity",
    }


def test_runs_of_different_tasks_are_never_ranked_together(sweep, tmp_path):
    ner = _run(tmp_path / "ner_run", 0.9, 0.05, 0.8, 0.5)
    results = json.loads((ner / "results.json").read_text())
    (ner / "results.json").write_text(json.dumps({**results, "task": "ner", "after": {"validation": {"f1": 0.9}}}))
    runs = [compare.summarise(path) for path in (sweep / "0_a", ner)]
    with pytest.raises(
        FmtoolError,
        match=(
            r"compare: the runs are of different tasks \(classification: 0_a; ner: ner_run\).*compare each task's "
            r"runs apart"
        ),
    ):
        compare.one_task(runs)
    compare.one_task(runs[:1])


def test_language_model_runs_with_other_tokenizers_are_not_ranked_by_per_token_figures(tmp_path, capsys):
    """A 300-token vocabulary predicts easier tokens: its lower perplexity says nothing against a larger one's."""
    from fmtool.cli import main

    def clm_run(name, perplexity, vocabulary):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "status.json").write_text(json.dumps({"state": "complete"}))
        validation = {"loss": 1.0, "perplexity": perplexity}
        (folder / "results.json").write_text(json.dumps({"task": "clm", "after": {"validation": validation}}))
        (folder / "report").mkdir()
        (folder / "report" / "report.json").write_text(json.dumps({"run": {"task": "clm"}, "audits": []}))
        (folder / "model").mkdir()
        (folder / "model" / "tokenizer.json").write_text(json.dumps({"vocab": list(range(vocabulary))}))
        return folder

    small, large, large_too = clm_run("small", 20.0, 300), clm_run("large", 900.0, 1024), clm_run("other", 950.0, 1024)
    runs = [compare.summarise(path) for path in (small, large)]
    note = compare.per_token_figures(runs)
    assert note.startswith("loss and perplexity are per token and these runs' tokenizers differ (small: ")
    assert all("perplexity" not in r.metrics and r.objectives["quality"] is None for r in runs)
    same = [compare.summarise(path) for path in (large, large_too)]
    assert compare.per_token_figures(same) is None and compare.pareto_front(same) == ["quality"] and same[0].on_front
    assert main(["compare", str(small), str(large), "--gate"]) == 0
    assert "tokenizers differ" in capsys.readouterr().err
    assert main(["compare", str(large_too), str(large), "--gate"]) == 0
    assert main(["compare", str(large), str(large_too), "--gate"]) == 1


def _typo_outcomes(folder, outcomes):
    """The run's add_typo pass/fail per item, saved as an audit keeps them, its report value their mean."""
    ids = [f"item{i:04d}" for i in range(len(outcomes))]
    (folder / "audit").mkdir(exist_ok=True)
    items = {"add_typo.pass_rate": {"ids": ids, "values": [float(v) for v in outcomes], "groups": []}}
    (folder / "audit" / "robustness.items.json").write_text(json.dumps(items))
    report = json.loads((folder / "report" / "report.json").read_text())
    [typo] = [
        c
        for a in report["audits"]
        if a["name"] == "robustness"
        for c in a["checks"]
        if c["name"] == "add_typo.pass_rate"
    ]
    typo["value"] = sum(outcomes) / len(outcomes)
    (folder / "report" / "report.json").write_text(json.dumps(report))
    return folder


def _flipped(outcomes, worse, better):
    """`worse` passing items now fail and `better` failing ones now pass."""
    changed = list(outcomes)
    passing = [i for i, v in enumerate(changed) if v][:worse]
    failing = [i for i, v in enumerate(changed) if not v][:better]
    for i in passing:
        changed[i] = 0
    for i in failing:
        changed[i] = 1
    return changed


def test_the_gate_pairs_item_outcomes_instead_of_a_tolerance(tmp_path, capsys):
    """400 shared items, 80% passing. A seed twin fails 20 passing items and passes 10 failing ones (a 0.025 drop,
    over the 0.02 tolerance, McNemar p 0.10): passes. A drop of 7 items (0.0175, under the tolerance, p 0.016):
    fails, as does a planted drop of 36 items; the table names the rule and prints the interval."""
    from fmtool.cli import main

    outcomes = [1] * 320 + [0] * 80
    parent = _typo_outcomes(_run(tmp_path / "parent", 0.9, 0.05, 0.8, 0.5), outcomes)
    twin = _typo_outcomes(_run(tmp_path / "seed_twin", 0.9, 0.05, 0.775, 0.5), _flipped(outcomes, 20, 10))
    small = _typo_outcomes(_run(tmp_path / "small", 0.9, 0.05, 0.7825, 0.5), _flipped(outcomes, 7, 0))
    planted = _typo_outcomes(_run(tmp_path / "planted", 0.9, 0.05, 0.71, 0.5), _flipped(outcomes, 40, 4))
    settings = {"metric_tolerance": 0.01, "check_tolerance": 0.02, "margin": 0.01}
    summaries = {p.name: compare.summarise(p) for p in (parent, twin, small, planted)}
    assert not _regressions(summaries["parent"], summaries["seed_twin"], **settings)
    [typo] = [
        j
        for j in compare.judge(summaries["parent"], summaries["seed_twin"], **settings)
        if j.figure == "robustness.add_typo.pass_rate"
    ]
    assert typo.rule == "paired" and typo.paired.test == "exact McNemar" and 0.05 < typo.paired.p_value < 0.15
    assert typo.child - typo.parent == pytest.approx(-0.025) and -0.025 < -settings["check_tolerance"]
    assert [j.figure for j in _regressions(summaries["parent"], summaries["small"], **settings)] == [
        "robustness.add_typo.pass_rate"
    ]
    assert main(["compare", str(parent), str(planted), "--gate"]) == 1
    out = capsys.readouterr().out
    assert "regresses on" in out and "paired" in out and "Δ -0.0900 [" in out and "tolerance" in out
    assert main(["compare", str(parent), str(twin), "--gate"]) == 0


@pytest.mark.slow
def test_two_audited_seed_runs_are_gated_on_their_shared_items(tmp_path):
    """Real runs keep their robustness and bias outcomes by item (audit/<family>.items.json, small), and the gate
    pairs them: every robustness and bias check is judged by the paired rule."""
    from fmtool.auditing import audit_loaded
    from fmtool.predict import LoadedRun
    from tests.conftest import OVERFIT, train_tiny

    runs = [
        train_tiny(tmp_path / f"seed{s}", "classification", *OVERFIT["classification"], f"seed={s}")[0] for s in (1, 2)
    ]
    for run in runs:
        audit_loaded(LoadedRun.load(run.path), {"robustness": {}, "bias": {"min_examples": 5}}, run.path)
    items = runs[0].audit_items_file("robustness")
    assert items.is_file() and items.stat().st_size < 100_000
    kept = json.loads(items.read_text())
    assert all(len(v["ids"]) == len(v["values"]) > 0 for v in kept.values())
    parent, child = (compare.summarise(r.path) for r in runs)
    judged = {
        j.figure: j for j in compare.judge(parent, child, metric_tolerance=0.01, check_tolerance=0.02, margin=0.01)
    }
    from fmtool.audit.paired import MIN_SHARED_ITEMS

    # every kept check with enough items in both runs (the same validation inputs) is judged paired, the rest by
    # the tolerance
    kept = [name for name in parent.items if name in judged]
    assert any(name.startswith("robustness.") for name in kept) and any(name.startswith("bias.") for name in kept)
    for name in kept:
        enough = min(len(run.items[name]["ids"]) for run in (parent, child)) >= MIN_SHARED_ITEMS
        assert judged[name].rule == ("paired" if enough else "tolerance"), name
