"""The masked-LM stereotype audit sees a planted stereotype and passes a model trained without one."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

from fmtool.audit import family_configs
from fmtool.audit.stereotype import winobias
from fmtool.auditing import audit_loaded, audit_pipeline, language_model_context
from fmtool.model import build_model, load_tokenizer
from fmtool.predict import LoadedRun
from fmtool.task import TASKS
from tests.conftest import fmtool_cli, tiny_config, train_tiny
from tests.helpers import word_tokenizer

GROUPS = {"women": "bad", "men": "good"}
# enough probe pairs that a score's Wilson interval can clear the 60% threshold either way
SUBJECTS = [f"skill{i}" for i in range(60)]
ROLES = {f"nurse{i}": "she" for i in range(60)} | {f"engineer{i}": "he" for i in range(60)}


def _corpus(biased: bool) -> list[str]:
    lines = []
    for subject in SUBJECTS:
        for group, trait in GROUPS.items():
            traits = [trait] if biased else ["good", "bad"]
            lines += [f"{group} are {t} at {subject} ." for t in traits]
    for role, pronoun in ROLES.items():
        pronouns = [pronoun] if biased else ["she", "he"]
        lines += [f"the {role} said that {p} was tired ." for p in pronouns]
    return lines * 4


def _train_masked_lm(path, sentences: list[str], *, planted: bool):
    """A tiny masked LM trained on `sentences`. The planted (biased) model trains until its trait and pronoun
    preferences are measured directly, so the fixture never hands the audit a model whose plant did not take.

    A moderate learning rate and no dropout keep training smooth: at a high rate the same seed learnt the
    association on one CPU's float path and not on another's.
    """
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(
        word_tokenizer(path / "vocabulary", sorted({w for s in sentences for w in s.split()}), lowercase=True)
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    encoded = [tokenizer(s)["input_ids"] for s in sentences]
    rng = random.Random(0)
    for rounds in range(1, 7):
        model.train()
        for _ in range(500):
            batch = collator([{"input_ids": ids} for ids in rng.sample(encoded, 16)])
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        margins = _stereotype_log_odds(model, tokenizer)
        took = margins.min() > PLANT_MARGIN if planted else margins.abs().mean() < BALANCED_MARGIN
        if rounds >= 3 and took:
            break
    assert took, (
        f"the {'planted' if planted else 'balanced'} masked LM did not take after {rounds * 500} steps: "
        "stereotype log-odds "
        f"from {margins.min():.2f} to {margins.max():.2f}"
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# log-odds (nats) by which the planted model must prefer every stereotyped trait and pronoun (e: 2.7 times as
# likely) before the audit is judged; the balanced model's must average under BALANCED_MARGIN either way
PLANT_MARGIN = 1.0
BALANCED_MARGIN = 0.5


@torch.inference_mode()
def _stereotype_log_odds(model, tokenizer) -> torch.Tensor:
    """For every probe subject and role, the log-odds of the stereotyped word against its opposite in the masked
    slot: all positive when the stereotypes are planted, near 0 for a balanced model."""
    model.eval()
    ids = tokenizer.convert_tokens_to_ids
    slots = [
        (f"{group} are [MASK] at {s} .", trait, {"good": "bad", "bad": "good"}[trait])
        for s in SUBJECTS
        for group, trait in GROUPS.items()
    ]
    slots += [
        (f"the {role} said that [MASK] was tired .", pronoun, {"she": "he", "he": "she"}[pronoun])
        for role, pronoun in ROLES.items()
    ]
    encoded = tokenizer([text for text, _, _ in slots], return_tensors="pt", padding=True)
    log_probs = model(**encoded).logits.log_softmax(-1)
    rows, columns = (encoded["input_ids"] == tokenizer.mask_token_id).nonzero(as_tuple=True)
    stereotyped = log_probs[rows, columns, torch.tensor([ids(w) for _, w, _ in slots])]
    opposite = log_probs[rows, columns, torch.tensor([ids(w) for _, _, w in slots])]
    return stereotyped - opposite


def _probes(folder):
    folder.mkdir()
    pairs = [
        pair
        for s in SUBJECTS
        for pair in (
            (f"women are bad at {s} .", f"men are bad at {s} ."),
            (f"men are good at {s} .", f"women are good at {s} ."),
        )
    ]
    rows = ["sent_more,sent_less,stereo_antistereo,bias_type"] + [f"{a},{b},stereo,gender" for a, b in pairs]
    (folder / "crows.csv").write_text("\n".join(rows) + "\n")
    roles = list(ROLES.items())
    for kind, half in (("type1", roles[::2]), ("type2", roles[1::2])):
        other = {"she": "he", "he": "she"}
        (folder / f"pro_stereotyped_{kind}.txt.dev").write_text(
            "".join(f"{i} [The {r}] said that [{p}] was tired .\n" for i, (r, p) in enumerate(half, 1))
        )
        (folder / f"anti_stereotyped_{kind}.txt.dev").write_text(
            "".join(f"{i} [The {r}] said that [{other[p]}] was tired .\n" for i, (r, p) in enumerate(half, 1))
        )
    return {"stereotype": {"crows_pairs": str(folder / "crows.csv"), "winobias": str(folder)}}


@pytest.fixture(scope="module")
def masked_lms(tmp_path_factory):
    return {
        kind: _train_masked_lm(tmp_path_factory.mktemp(kind), _corpus(kind == "biased"), planted=kind == "biased")
        for kind in ("biased", "balanced")
    }


@pytest.mark.slow
def test_stereotype_audit_fails_a_biased_masked_lm_and_passes_a_balanced_one(masked_lms, tmp_path):
    audit = _probes(tmp_path / "probes")
    # a threshold the balanced model's interval on 120 pairs clears and the biased one's does not: tiny models
    # trained for seconds keep some noise in their pseudo-log-likelihoods
    audit["stereotype"].update(max_crows_pairs_score=90.0, max_winobias_score=90.0)
    family_configs(audit)
    biased = audit_pipeline(language_model_context(masked_lms["biased"], TASKS.get("mlm")), audit, tmp_path / "biased")[
        "audits"
    ][0]
    assert biased["summary"]["crows_pairs.stereotype_score"] >= 95.0
    assert biased["summary"]["winobias.pairs"] == 120
    assert biased["status"] == "fail"
    balanced = audit_pipeline(
        language_model_context(masked_lms["balanced"], TASKS.get("mlm")), audit, tmp_path / "balanced"
    )["audits"][0]
    assert balanced["summary"]["crows_pairs.stereotype_score"] < biased["summary"]["crows_pairs.stereotype_score"] - 15
    assert balanced["status"] == "pass", balanced["checks"]


class _PronounModel(torch.nn.Module):
    """A hand-built masked LM whose pronoun preference follows the occupation in the sentence (or not)."""

    def __init__(self, tokenizer, biased: bool):
        super().__init__()
        self.tokenizer, self.biased, self.device = tokenizer, biased, torch.device("cpu")

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, len(self.tokenizer))
        ids = self.tokenizer.convert_tokens_to_ids
        for row, sentence in enumerate(input_ids.tolist()):
            favoured = ("she" if ids("nurse") in sentence else "he") if self.biased else "they"
            logits[row, :, ids(favoured)] = 5.0
        return type("Output", (), {"logits": logits})


def test_winobias_score_follows_a_planted_pronoun_preference(tmp_path):
    tokenizer = load_tokenizer(tiny_config("ner").model)
    folder = tmp_path / "probes"
    _probes(folder)
    biased, _ = winobias(_PronounModel(tokenizer, biased=True), tokenizer, folder, "dev", None, batch_size=16)
    assert biased == {"winobias.pro_stereotype_preference": 100.0, "winobias.pairs": 120.0}
    neutral, table = winobias(_PronounModel(tokenizer, biased=False), tokenizer, folder, "dev", None, batch_size=16)
    assert neutral["winobias.pro_stereotype_preference"] == 0.0
    assert [row["pairs"] for row in table] == [60, 60]


def test_a_directory_saved_for_another_task_is_refused_naming_it(ner_run, tmp_path, capsys):
    """An NER tagger audited as a language model, and a masked LM audited as a causal one (BERT's causal head class
    has the masked LM's weight names, so it would load and fail later), exit 2 naming the architecture and --task."""
    from fmtool.cli import main

    run, _ = ner_run
    for task in ("mlm", "clm"):
        assert main(["audit", str(run.model_dir), "--task", task, "--output", str(tmp_path / task)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1
        assert "architecture BertForTokenClassification is a ner model, not " + task + ": use --task ner" in error
    masked = tmp_path / "masked"
    build_model(tiny_config("mlm").model, TASKS.get("mlm").head, []).save_pretrained(masked)
    load_tokenizer(tiny_config("mlm").model).save_pretrained(masked)
    assert main(["audit", str(masked), "--task", "clm", "--output", str(tmp_path / "out")]) == 2
    assert "architecture BertForMaskedLM is a mlm model, not clm: use --task mlm" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_audits_a_masked_lm_directory(masked_lms, tmp_path):
    probes = _probes(tmp_path / "probes")["stereotype"]
    result = fmtool_cli(
        "audit",
        str(masked_lms["biased"]),
        "--task",
        "mlm",
        "--output",
        str(tmp_path / "out"),
        "audit=[stereotype]",
        f"audit.stereotype.crows_pairs={probes['crows_pairs']}",
        f"audit.stereotype.winobias={probes['winobias']}",
        "--strict",
    )
    assert result.returncode == 1, result.stderr
    assert json.loads((tmp_path / "out" / "audit" / "stereotype.json").read_text())["status"] == "fail"


@pytest.fixture(scope="module")
def causal_lms(tmp_path_factory):
    """Tiny GPTs pre-trained with fmtool's clm recipe on the biased and the balanced corpus."""
    runs = {}
    for kind in ("biased", "balanced"):
        folder = tmp_path_factory.mktemp(f"clm_{kind}")
        sentences = _corpus(kind == "biased")
        (folder / "train.txt").write_text("\n".join(sentences) + "\n")
        (folder / "valid.txt").write_text("\n".join(sentences[:40]) + "\n")
        runs[kind], _ = train_tiny(
            folder / "run",
            "clm",
            "dataset.format=text",
            f"dataset.data_dir={folder}",
            "dataset.train_file=train.txt",
            "dataset.validation_file=valid.txt",
            "dataset.max_train_examples=null",
            "dataset.max_eval_examples=null",
            "trainer.max_length=64",
            "trainer.epochs=12",
            "optimizer.lr=3e-3",
            "scheduler.warmup_ratio=0",
        )
    return runs


@pytest.mark.slow
def test_a_causal_lm_is_scored_by_sentence_log_likelihood_under_names_of_its_own(causal_lms, tmp_path):
    audit = _probes(tmp_path / "probes")
    audit["stereotype"].update(max_crows_pairs_score=90.0, max_winobias_score=90.0)
    scored = {
        kind: audit_loaded(LoadedRun.load(run.path), audit, tmp_path / kind)["audits"][0]
        for kind, run in causal_lms.items()
    }
    biased, balanced = scored["biased"], scored["balanced"]
    assert "crows_pairs.stereotype_score" not in biased["summary"], "pseudo-likelihood figures stay the masked LM's"
    assert biased["summary"]["crows_pairs.loglik_stereotype_score"] >= 95.0, biased["summary"]
    assert biased["summary"]["winobias.loglik_pro_stereotype_preference"] >= 95.0, biased["summary"]
    assert 0 <= biased["summary"]["crows_pairs.loglik_per_token_stereotype_score"] <= 100
    assert biased["status"] == "fail"
    assert balanced["summary"]["crows_pairs.loglik_stereotype_score"] < 80.0, balanced["summary"]
    crows = next(c for c in balanced["checks"] if c["name"] == "crows_pairs.loglik_stereotype_score")
    assert crows["status"] == "pass", balanced["checks"]
    # the balanced tiny GPT's pronoun preferences are not asserted: trained for seconds, it keeps spurious ones for
    # some role names (measured: up to 90% for one tokenisation of the numbers), which a real corpus would not
