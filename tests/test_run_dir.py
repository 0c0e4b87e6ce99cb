"""The run directory contract: files, reload in plain transformers, incomplete runs refused, predict output."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer, pipeline

from fmtool.config.schema import Precision
from fmtool.dataset.examples import split_words
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from fmtool.runs import ReplicaRun, RunDir


def test_run_dir_holds_every_file(ner_run):
    run, _ = ner_run
    for name in (
        "status.json",
        "config.yaml",
        "env.json",
        "labels.json",
        "metrics.jsonl",
        "results.json",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "data/train.jsonl",
        "data/validation.jsonl",
        "predictions/validation.jsonl",
    ):
        assert (run.path / name).is_file(), name
    assert run.status()["state"] == "complete"
    assert not any(run.path.glob("**/*.partial"))
    train_logs = [
        r for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"
    ]
    assert train_logs and all(r["grad_norm"] > 0 and r["loss"] > 0 for r in train_logs)


def test_saved_model_reloads_in_plain_transformers_with_same_predictions(ner_run):
    run, _ = ner_run
    model = AutoModelForTokenClassification.from_pretrained(run.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == run.load_labels()
    example = run.load_split("validation")[0]
    encoded = tokenizer(example.tokens, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        token_labels = model(**encoded).logits.argmax(-1)[0].tolist()
    word_ids = encoded.word_ids(0)
    firsts = [p for p, w in enumerate(word_ids) if w is not None and (p == 0 or word_ids[p - 1] != w)]
    plain = [model.config.id2label[token_labels[p]] for p in firsts]
    saved = json.loads(run.predictions_file("validation").read_text().splitlines()[0])
    assert plain == saved["predicted"]


def test_transformers_pipeline_loads_the_run_model(classification_run):
    run, _ = classification_run
    classify = pipeline("text-classification", model=str(run.model_dir), tokenizer=str(run.model_dir))
    example = run.load_split("validation")[0]
    loaded = LoadedRun.load(run.path)
    assert classify(example.text)[0]["label"] == loaded.predict_texts([example.text])[0]["label"]
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(run.model_dir), torch.nn.Module)


def test_incomplete_run_is_refused(tmp_path, ner_run):
    run, _ = ner_run
    partial = RunDir(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({"state": "running"}))
    with pytest.raises(FmtoolError, match="running, not complete"):
        RunDir.open(partial.path)
    with pytest.raises(FmtoolError, match="not an fmtool run directory"):
        RunDir.open(tmp_path / "nowhere")


def test_precision_override_gives_full_precision_scores(ner_run):
    run, _ = ner_run
    example = run.load_split("validation")[0]
    model = AutoModelForTokenClassification.from_pretrained(run.model_dir).eval()
    encoded = AutoTokenizer.from_pretrained(run.model_dir)(
        example.tokens, is_split_into_words=True, return_tensors="pt"
    )
    with torch.no_grad():
        probabilities = model(**encoded).logits.softmax(-1)[0].max(-1).values
    word_ids = encoded.word_ids(0)
    firsts = [p for p, w in enumerate(word_ids) if w is not None and (p == 0 or word_ids[p - 1] != w)]
    full = LoadedRun.load(run.path, precision=Precision.fp32)
    assert full.runtime.autocast_dtype is None
    [prediction] = full.predictions([example])
    assert prediction.scores == pytest.approx(probabilities[firsts].tolist(), abs=1e-6)
    half = LoadedRun.load(run.path, precision=Precision.bf16)
    assert half.runtime.autocast_dtype == torch.bfloat16
    assert half.predictions([example])[0].scores != pytest.approx(probabilities[firsts].tolist(), abs=1e-6)


def test_ner_predict_gives_entities_with_character_offsets(ner_run):
    run, _ = ner_run
    loaded = LoadedRun.load(run.path)
    example = run.load_split("validation")[0]
    text = " ".join(example.tokens)
    [record] = loaded.predict_texts([text])
    assert record["text"] == text
    # the memorised sentence's gold entities come back with offsets that slice the input
    gold = [(e["type"], e["text"]) for e in record["entities"]]
    assert gold and all(text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in record["entities"])
    tags = example.tags
    expected = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            j = i + 1
            while j < len(tags) and tags[j] == "I-" + tag[2:]:
                j += 1
            expected.append((tag[2:], " ".join(example.tokens[i:j])))
    assert gold == expected


def test_classification_predict_gives_label_and_probabilities(classification_run):
    run, _ = classification_run
    [record] = LoadedRun.load(run.path).predict_texts(["the film is wonderful ."])
    assert set(record) == {"text", "label", "probabilities"}
    assert set(record["probabilities"]) == set(run.load_labels())
    assert abs(sum(record["probabilities"].values()) - 1) < 1e-5
    assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)


def test_split_words_keeps_offsets():
    text = "Dr. Smith visited the U.S. (again), didn't he?"
    spans = split_words(text)
    assert [w for w, _, _ in spans] == [
        "Dr",
        ".",
        "Smith",
        "visited",
        "the",
        "U.S.",
        "(",
        "again",
        ")",
        ",",
        "didn't",
        "he",
        "?",
    ]
    assert all(text[s:e] == w for w, s, e in spans)


@pytest.mark.slow  # a CLI subprocess
def test_a_run_directory_belongs_to_one_run(tmp_path):
    from tests.conftest import fmtool_cli, tiny_config, train_tiny

    first, _ = train_tiny(tmp_path / "run", "ner", "audit=none")
    results, first_id = first.results_file.read_text(), first.status()["run_id"]
    with pytest.raises(
        FmtoolError, match=r"already holds a run \(complete\); pass overwrite=true \(or --overwrite\) to replace it"
    ):
        RunDir.create(first.path, tiny_config("ner", "seed=7"))
    refused = fmtool_cli("train", "+task=ner", "debug=tiny", "audit=none", f"hydra.run.dir={first.path}")
    assert (
        refused.returncode == 2
        and len(refused.stderr.strip().splitlines()) == 1
        and "already holds a run" in refused.stderr
    )
    assert first.results_file.read_text() == results and first.status() == {
        **first.status(),
        "state": "complete",
        "run_id": first_id,
    }
    (first.path / "predictions" / "stale.jsonl").write_text("{}\n")
    second = RunDir.create(first.path, tiny_config("ner", "seed=7", "overwrite=true"))
    assert (
        second.status()["run_id"] != first_id
        and not (first.path / "predictions").exists()
        and not first.results_file.exists()
    )
    with pytest.raises(FmtoolError, match="another fmtool process is writing or auditing this run directory"):
        RunDir.create(first.path, tiny_config("ner", "overwrite=true"))
    second.finish("failed", error="stopped by the test")
    RunDir.create(first.path, tiny_config("ner", "overwrite=true")).finish("failed")


def test_resume_keeps_the_original_error_and_refuses_another_runs_checkpoint(tmp_path):
    import shutil

    from tests.conftest import tiny_config

    failed = RunDir.create(tmp_path / "failed", tiny_config("ner"))
    failed.finish("failed", error="KeyError: 'train'")
    with pytest.raises(
        FmtoolError, match=r"cannot resume: .*no checkpoint to resume from.*\(it stopped with: KeyError: 'train'\)"
    ):
        RunDir.reopen(failed.path)
    assert failed.status()["state"] == "failed" and failed.status()["error"] == "KeyError: 'train'"
    donor = RunDir.create(tmp_path / "donor", tiny_config("ner", "trainer.checkpoint_every_steps=1"))
    (donor.checkpoint_dir / "state.pt").write_bytes(b"x")
    donor.finish("failed", error="interrupted")
    shutil.copytree(donor.checkpoint_dir, failed.checkpoint_dir)
    with pytest.raises(FmtoolError, match=r"checkpoint belongs to another run"):
        RunDir.reopen(failed.path)
    assert failed.status()["error"] == "KeyError: 'train'"


def test_a_model_directory_without_its_tokenizer_is_refused(tmp_path, ner_run):
    import shutil

    from fmtool.pipeline import run_training
    from tests.conftest import tiny_config

    run, _ = ner_run
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(run.model_dir / name, bare / name)
    cfg = tiny_config("ner", f"model.name={bare}", "model.tokenizer=null", "model.random_init=false", "audit=none")
    target = RunDir.create(tmp_path / "run", cfg)
    with pytest.raises(
        FmtoolError,
        match=r"model.name: the tokenizer \(\d+ tokens, from '.*bare'\) does not fit the model .* \(\d+ embedding "
        r"rows\)",
    ):
        run_training(cfg, target)
    assert target.status()["state"] == "failed"
    with pytest.raises(FmtoolError, match="does not fit the model .*save the one the model was trained with beside it"):
        LoadedRun.from_model_dir(bare, "ner")


def test_pickle_weights_are_refused_unless_allowed(tmp_path, ner_run):
    import shutil

    from fmtool.pipeline import run_training
    from tests.conftest import tiny_config

    run, _ = ner_run
    pickled = tmp_path / "pickled"
    shutil.copytree(run.model_dir, pickled)
    model = LoadedRun.load(run.path).model
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(
        FmtoolError,
        match=r"holds only pickle-format weights \(pytorch_model.bin\), which can run code .* --allow-pickle",
    ):
        LoadedRun.from_model_dir(pickled, "ner")
    refused = RunDir.create(
        tmp_path / "refused", tiny_config("ner", f"model.name={pickled}", "model.random_init=false", "audit=none")
    )
    with pytest.raises(FmtoolError, match="holds only pickle-format weights"):
        run_training(refused.load_config(), refused)
    allowed = RunDir.create(
        tmp_path / "allowed",
        tiny_config("ner", f"model.name={pickled}", "model.random_init=false", "model.allow_pickle=true", "audit=none"),
    )
    assert run_training(allowed.load_config(), allowed)["train"]["updates"] > 0
    assert allowed.status()["state"] == "complete"


def test_report_records_the_digests_of_what_was_audited(ner_run):
    import hashlib

    from fmtool.auditing import audit_loaded

    run, _ = ner_run
    report = audit_loaded(LoadedRun.load(run.path), {"robustness": {"tests": ["lowercase"]}}, run.path)
    provenance = report["provenance"]
    weights = (run.model_dir / "model.safetensors").read_bytes()
    assert provenance["model_files"]["model.safetensors"] == {
        "sha256": hashlib.sha256(weights).hexdigest(),
        "bytes": len(weights),
    }
    assert {"train.jsonl", "validation.jsonl"} <= set(provenance["data_files"])
    assert (
        provenance["trust_remote_code"] is False
        and provenance["allow_pickle"] is False
        and provenance["environment"]["packages"]["torch"]
    )
    markdown = (run.path / "report" / "report.md").read_text()
    assert (
        "## Provenance and loading" in markdown and provenance["model_files"]["model.safetensors"]["sha256"] in markdown
    )


def test_a_replica_rank_overrides_every_method_that_writes_the_run_directory():
    writers = [name for name in vars(RunDir) if name.startswith(("save_", "append_", "truncate_")) or name == "finish"]
    assert "save_adapter" in writers
    assert all(getattr(ReplicaRun, name) is ReplicaRun._skip for name in writers)
