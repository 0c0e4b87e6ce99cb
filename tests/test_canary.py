"""A canary repeated many times in the pre-training corpus is exposed, one seen once is not; canaries are
seeded, planted only where they can be, and the audit skips a run without them."""

from __future__ import annotations

import random

import pytest

from fmtool.auditing import audit_loaded
from fmtool.config.schema import CanaryConfig
from fmtool.dataset.canaries import make_canaries, secret_text, with_canaries
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from tests.conftest import tiny_config, train_tiny
from tests.helpers import word_tokenizer

NOUNS = "cat dog bird fish horse mouse lion tiger bear wolf".split()
VERBS = "sees chases follows likes meets finds".split()


def _corpus(folder, seed: int = 0):
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.txt", 400), ("valid.txt", 40)):
        lines = []
        for _ in range(n):
            if rng.random() < 0.3:  # digits occur outside the canaries too
                lines.append(f"room {' '.join(str(rng.randrange(10)) for _ in range(3))} is free")
            else:
                lines.append(f"the {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)} .")
        (folder / name).write_text("\n".join(lines) + "\n")
    words = NOUNS + VERBS + [str(d) for d in range(10)] + "the . room is free my secret number".split()
    return folder, word_tokenizer(folder / "tokenizer", words, lowercase=True)


@pytest.mark.slow
def test_a_much_repeated_canary_is_exposed_and_a_single_one_is_not(tmp_path):
    data, tokenizer = _corpus(tmp_path / "corpus")
    run, _ = train_tiny(
        tmp_path / "run",
        "mlm",
        "dataset.format=text",
        f"dataset.data_dir={data}",
        "dataset.train_file=train.txt",
        "dataset.validation_file=valid.txt",
        "dataset.max_train_examples=null",
        "dataset.max_eval_examples=null",
        f"model.tokenizer={tokenizer}",
        "task.canaries.repetitions=[1,100]",
        "trainer.max_length=32",
        "trainer.batch_size=16",
        "trainer.epochs=30",
        "optimizer.lr=3e-3",
        "scheduler.warmup_ratio=0",
        "audit=none",
    )
    train_text = (run.path / "data" / "train.txt").read_text()
    canaries = make_canaries(CanaryConfig(repetitions=[1, 100]), 42)
    assert [train_text.count(c.text) for c in canaries] == [1, 100]
    entry = audit_loaded(LoadedRun.load(run.path), {"canary": {}}, run.path)["audits"][0]
    exposures = {row["repetitions"]: row["exposure"] for row in entry["tables"]["canaries"]}
    assert exposures[100] > 8 and exposures[1] < 4, exposures
    assert entry["status"] == "fail" and entry["checks"][0]["value"] == exposures[100]
    # the same memorised sentence named by someone who knows it, beside one the corpus never held
    unseen = "my secret number is " + secret_text(random.Random(5), 6)
    assert unseen not in train_text
    secrets = tmp_path / "secrets.txt"
    secrets.write_text(f"{canaries[1].text}\n{unseen}\n")
    given = audit_loaded(LoadedRun.load(run.path), {"canary": {"secrets": str(secrets)}}, tmp_path / "given")["audits"][
        0
    ]
    by_order = [row for row in given["tables"]["canaries"] if row["repetitions"] is None]
    assert by_order[0]["exposure"] > 8 and by_order[1]["exposure"] < 6, by_order  # 6 bits: the check's threshold
    assert [row["canary"] for row in by_order] == ["my secret number is <secret>"] * 2
    assert canaries[1].secret not in (tmp_path / "given" / "report" / "report.json").read_text()


def test_canaries_are_seeded_distinct_and_inserted_as_often_as_asked():
    cfg = CanaryConfig(repetitions=[1, 5, 20], digits=4)
    canaries = make_canaries(cfg, 7)
    assert canaries == make_canaries(cfg, 7) and len({c.secret for c in canaries}) == 3
    assert all(len(c.secret.split()) == 4 and c.text == f"my secret number is {c.secret}" for c in canaries)
    documents = with_canaries([f"doc {i}" for i in range(50)], canaries, 7)
    assert len(documents) == 76 and [documents.count(c.text) for c in canaries] == [1, 5, 20]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (
            ["+task=ner", "task.canaries.repetitions=[5]"],
            "task.canaries are planted in an in-memory pre-training corpus",
        ),
        (["task.canaries.repetitions=[0]"], r"task.canaries.repetitions=\[0\]"),
        (["task.canaries.repetitions=[3]", "task.canaries.template=no secret here"], "task.canaries.template"),
    ],
)
def test_bad_canary_settings_name_the_key(overrides, key):
    task = "ner" if "+task=ner" in overrides else "mlm"
    with pytest.raises(FmtoolError, match=key):
        tiny_config(task, *[o for o in overrides if o != "+task=ner"])


def test_a_given_secret_is_ranked_among_strings_of_its_layout_and_token_count(tmp_path):
    from fmtool.audit.canary import given_secret, given_secrets, same_layout
    from fmtool.model import load_tokenizer

    assert given_secret("flat {4} code is 7 3 9 1 .", "x") == ("flat {{4}} code is {secret} .", "7 3 9 1")
    assert given_secret("call 5551234 today", "x") == ("call {secret} today", "5551234")
    tokenizer = load_tokenizer(tiny_config("mlm").model)
    others = same_layout(random.Random(0), "5551234", tokenizer, 50, attempts=2000)
    length = len(tokenizer("5551234", add_special_tokens=False)["input_ids"])
    assert len(others) == 50 and "5551234" not in others
    assert all(
        len(o) == 7 and o.isdigit() and len(tokenizer(o, add_special_tokens=False)["input_ids"]) == length
        for o in others
    )
    for sentence in ("no digits here", "room b12 is free"):
        with pytest.raises(FmtoolError, match=r"audit.canary.secrets: x: no digits standing as a word"):
            given_secret(sentence, "x")
    listed = tmp_path / "secrets.txt"
    listed.write_text("my pin is 4 8 2 1\n\nno secret\n")
    with pytest.raises(FmtoolError, match=rf"audit.canary.secrets: {listed}:3: no digits"):
        given_secrets(str(listed))


def test_a_run_without_canaries_skips_the_audit_with_the_reason(tmp_path):
    run, _ = train_tiny(tmp_path / "run", "mlm", "trainer.max_steps=2", "audit=none")
    entry = audit_loaded(LoadedRun.load(run.path), {"canary": {}}, run.path)["audits"][0]
    assert entry["status"] == "skip" and "planted no canaries" in entry["warnings"][0]
