"""Planted personal data is found with the right types and counts and never appears raw in the report; a clean
twin passes; dataset.redact_pii=true removes it before training and keeps NER tags aligned."""

from __future__ import annotations

import json
import os
import random
import sys

import pytest

from fmtool.audit import family_configs
from fmtool.auditing import audit_loaded
from fmtool.dataset.examples import TextExample, TokenExample
from fmtool.dataset.pii import PiiScanner, redact, redact_examples, text_of
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from tests.conftest import train_tiny
from tests.planted import PLANTED_TSV

# values that pass each recognizer's validation: a Luhn-valid test card, a mod-97-valid IBAN, a valid-range SSN
PLANTED = {
    "EMAIL_ADDRESS": ["anna.berg@example.org", "j.smith@mailbox.co.uk"],
    "PHONE_NUMBER": ["+44 20 7946 0958", "(212) 555-0187"],
    "CREDIT_CARD": ["4111 1111 1111 1111"],
    "IBAN_CODE": ["GB82 WEST 1234 5698 7654 32"],
    "IP_ADDRESS": ["192.168.14.201"],
    "US_SSN": ["219-09-9999"],
    "URL_CREDENTIALS": ["https://admin:hunter2@db.internal.example.com"],
    "SECRET": ["AKIAIOSFODNN7EXAMPLE"],
}
FILLER = "the service was quick and the staff answered every question about my order".split()


def _reviews(folder, *, planted: bool, seed: int = 0):
    """Rows of filler text; with planted, a known number of them carry one value of each type."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {kind: 0 for kind in PLANTED}
    for split, n in (("train", 80), ("dev", 40)):
        lines = ["sentence\tlabel"]
        for i in range(n):
            words = rng.sample(FILLER, 8)
            if planted and i % 5 == 0:
                kind = list(PLANTED)[(i // 5) % len(PLANTED)]
                words.insert(4, f"contact {rng.choice(PLANTED[kind])} now")
                expected[kind] += split == "train"
            lines.append(f"{' '.join(words)} .\t{'positive' if i % 2 else 'negative'}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder, expected


_CLASSIFIER = [
    *PLANTED_TSV,
    "trainer.max_steps=2",
    "audit=none",
]


@pytest.mark.parametrize("kind, value", [(k, v) for k, values in PLANTED.items() for v in values])
def test_each_planted_value_is_found_with_its_type(kind, value):
    text = f"please write to me at {value} today"
    spans = PiiScanner().scan(text)
    assert [(s.kind, text[s.start : s.end]) for s in spans] == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "the score was 2-1 after 90 minutes",
        "call me 4111 1111 1111 1112 times",
        "version 3.10.999.2 shipped in 2019",
        "078-05-1120 is the famous invalid number",
        "IBAN GB00 WEST 1234 5698 7654 32",
    ],
)
def test_look_alikes_that_fail_validation_are_not_reported(text):
    assert [s.kind for s in PiiScanner().scan(text) if s.kind != "PHONE_NUMBER"] == []


def test_allow_list_and_thresholds_silence_known_values():
    text = "mail support@example.com or 192.168.0.1"
    assert PiiScanner(allow_list=["SUPPORT@example.com"], thresholds={"IP_ADDRESS": 0.9}).scan(text) == []


def test_redaction_keeps_ner_tags_aligned():
    example = TokenExample(
        "1",
        ["Mail", "anna.berg@example.org", "or", "call", "+44", "20", "7946", "0958", "Anna"],
        ["O", "O", "O", "O", "O", "O", "O", "O", "B-PER"],
    )
    redacted = redact(example, PiiScanner().scan(text_of(example)))
    assert redacted.tags == example.tags and len(redacted.tokens) == len(example.tokens)
    assert redacted.tokens == ["Mail", "<EMAIL_ADDRESS>", "or", "call", *["<PHONE_NUMBER>"] * 4, "Anna"]
    examples, counts = redact_examples([TextExample("2", "card 4111 1111 1111 1111 expired", "negative")], PiiScanner())
    assert examples[0].text == "card <CREDIT_CARD> expired" and counts == {"CREDIT_CARD": 1}


def test_planted_pii_is_counted_without_leaking_into_the_report_and_a_clean_twin_passes(tmp_path_factory):
    data, expected = _reviews(tmp_path_factory.mktemp("pii_data"), planted=True)
    run, _ = train_tiny(tmp_path_factory.mktemp("pii_run"), "classification", f"dataset.data_dir={data}", *_CLASSIFIER)
    report = audit_loaded(LoadedRun.load(run.path), {"pii": {}}, run.path)
    entry = report["audits"][0]
    assert entry["status"] == "fail"
    assert {kind: int(entry["summary"][f"train.{kind}"]) for kind in PLANTED} == expected
    assert entry["summary"]["train.examples_with_pii"] == sum(expected.values()) == 16
    assert any("<EMAIL_ADDRESS>" in row["redacted"] for row in entry["tables"]["examples"])
    written = "".join((run.path / "report" / name).read_text() for name in ("report.json", "report.md", "report.html"))
    for values in PLANTED.values():
        for value in values:
            assert value not in written and json.dumps(value)[1:-1] not in written
    clean_data, _ = _reviews(tmp_path_factory.mktemp("clean_data"), planted=False)
    clean, _ = train_tiny(
        tmp_path_factory.mktemp("clean_run"), "classification", f"dataset.data_dir={clean_data}", *_CLASSIFIER
    )
    assert audit_loaded(LoadedRun.load(clean.path), {"pii": {}}, clean.path)["audits"][0]["status"] == "pass"


def test_redact_pii_removes_planted_values_before_training(tmp_path):
    data, expected = _reviews(tmp_path / "data", planted=True)
    run, results = train_tiny(
        tmp_path / "run", "classification", f"dataset.data_dir={data}", "dataset.redact_pii=true", *_CLASSIFIER
    )
    saved = (run.path / "data" / "train.jsonl").read_text()
    assert all(value not in saved for values in PLANTED.values() for value in values)
    assert results["redacted"]["train"] == {kind: n for kind, n in expected.items() if n}
    entry = audit_loaded(LoadedRun.load(run.path), {"pii": {}}, run.path)["audits"][0]
    assert entry["status"] == "pass", entry["checks"]


def test_ner_runs_count_gold_person_names_and_the_models_precision(ner_run):
    run, _ = ner_run
    entry = audit_loaded(LoadedRun.load(run.path), {"pii": {}}, run.path)["audits"][0]
    gold = sum(tag == "B-PER" for e in run.load_split("train") for tag in e.tags)
    assert entry["summary"]["train.PERSON"] == gold > 0 and "train.person_precision" not in entry["summary"]
    assert entry["summary"]["validation.person_precision"] > 0.5
    assert entry["status"] == "pass" and not entry["warnings"]


def test_bad_pii_settings_name_the_key():
    with pytest.raises(FmtoolError, match=r"audit.pii: unknown PII type 'PASSPORT'"):
        family_configs({"pii": {"fail_on": ["PASSPORT"]}})


def test_a_long_scan_shared_among_worker_processes_finds_what_one_process_finds(monkeypatch):
    import fmtool.dataset.pii as pii

    rng = random.Random(1)
    values = [v for kind in PLANTED.values() for v in kind]
    texts = [
        " ".join(rng.sample(FILLER, 6) + ([f"call {rng.choice(values)} today"] if i % 7 == 0 else []))
        for i in range(400)
    ]
    scanner = PiiScanner()
    alone = [scanner.scan(t) for t in texts]
    monkeypatch.setattr(pii, "_TEXTS_PER_WORKER", 100)  # 400 texts: as many workers as cores, up to 4
    started, original_init = [], pii.ProcessPoolExecutor.__init__
    monkeypatch.setattr(
        pii.ProcessPoolExecutor,
        "__init__",
        lambda self, workers, **kw: started.append(workers) or original_init(self, workers, **kw),
    )
    shared = scanner.scan_all(texts)
    assert shared == alone and sum(map(len, shared)) >= 400 // 7
    assert started == ([min(os.cpu_count(), 4)] if (os.cpu_count() or 1) >= 2 and sys.platform == "linux" else [])
