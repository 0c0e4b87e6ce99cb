"""+task=clm: documents packed with an end-of-text token between them, the held-out loss summed over every predicted
token, a tiny GPT pre-trained on the demo corpus lowering its perplexity, text continuation, and a byte-level
vocabulary learnt for a run from scratch."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from fmtool.dataset.mlm import Packing, pack_blocks
from fmtool.model import build_model
from fmtool.model.build import special_token_ids
from fmtool.model.load import LoadPolicy, load_tokenizer
from fmtool.predict import LoadedRun
from fmtool.task import TASKS
from fmtool.task.clm import causal_batch
from tests.conftest import REPO, tiny_config, train_tiny

TINY_BPE = REPO / "fmtool" / "resources" / "tokenizers" / "tiny_bpe"
_FAST = ["dataset.max_train_examples=400", "dataset.max_eval_examples=60", "optimizer.lr=3e-3", "trainer.epochs=2"]


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("clm"), "clm", *_FAST)


def test_documents_are_packed_with_an_end_of_text_token_after_each():
    tokenizer = load_tokenizer(TINY_BPE, LoadPolicy())
    documents = ["the film was good", "a bad film", "Maria visited Berlin"]
    blocks = list(pack_blocks(documents, tokenizer, 8, Packing.causal(tokenizer)))
    joined = [i for b in blocks for i in b.input_ids]
    expected = [
        i for d in documents for i in [*tokenizer(d, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    ]
    assert joined == expected
    assert all(len(b.input_ids) == 8 for b in blocks[:-1]) and 0 < len(blocks[-1].input_ids) <= 8


def test_the_held_out_loss_is_the_mean_over_every_predicted_token():
    cfg = tiny_config("clm")
    tokenizer = load_tokenizer(TINY_BPE, LoadPolicy())
    torch.manual_seed(0)
    model = build_model(
        cfg.model, TASKS.get("clm").head, [], vocab_size=len(tokenizer), token_ids=special_token_ids(tokenizer)
    ).eval()
    objective = TASKS.get("clm").objective(cfg.task, cfg.seed, tokenizer)
    blocks = list(pack_blocks(["the film was good", "a bad film"] * 6, tokenizer, 16, objective.packing))
    from fmtool.trainer.runtime import resolve_runtime

    metrics = objective.held_out(model, blocks, resolve_runtime(cfg.trainer))
    with torch.no_grad():
        total = sum(
            model(**causal_batch([b], tokenizer.pad_token_id)).loss.item() * (len(b.input_ids) - 1) for b in blocks
        )
    tokens = sum(len(b.input_ids) - 1 for b in blocks)
    assert metrics["details"]["predicted_tokens"] == tokens
    assert metrics["loss"] == pytest.approx(total / tokens, rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))


def test_a_tiny_gpt_pre_trained_on_the_demo_corpus_lowers_its_perplexity(clm_run):
    run, results = clm_run
    before, after = results["before"]["validation"], results["after"]["validation"]
    # the random start sits near the vocabulary size; two epochs must take a clear share of it off
    assert after["perplexity"] < 0.8 * before["perplexity"], (before, after)
    assert results["task"] == "clm" and results["data"]["train"]["documents"] == 400


def test_a_clm_run_continues_text_greedily_and_evaluates_as_it_trained(clm_run):
    run, results = clm_run
    loaded = LoadedRun.load(run.path)
    first, again = loaded.predict_texts(["the film was"]), loaded.predict_texts(["the film was"])
    assert first == again and first[0]["text"] == "the film was" and first[0]["continuation"]
    with pytest.raises(Exception, match="is a language model and labels nothing"):
        loaded.predictions([])


def test_generation_is_bounded_by_the_context_and_a_long_prompt_keeps_its_last_tokens(clm_run, tmp_path, capsys):
    from fmtool.cli import main

    run, _ = clm_run
    assert main(["predict", str(run.path), "the film was", "--max-new-tokens", "100000"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "task.max_new_tokens=100000 (predict's --max-new-tokens)" in error
    assert "context of 512 tokens; choose at most 511" in error
    long_prompt = " ".join(["the film was good"] * 500)  # 2,000 words
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run.path), long_prompt, "--max-new-tokens", "8", "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["text"] == long_prompt and record["prompt_tokens_dropped"] > 0 and record["continuation"]


def test_a_temperature_too_small_to_sample_is_greedy_and_the_models_generation_config_is_ignored(clm_run, caplog):
    run, _ = clm_run
    loaded = LoadedRun.load(run.path)
    greedy = loaded.predict_texts(["the film was"])
    tiny = dataclasses.replace(
        loaded, cfg=dataclasses.replace(loaded.cfg, task=dataclasses.replace(loaded.cfg.task, temperature=1e-40))
    )
    assert tiny.predict_texts(["the film was"]) == greedy
    # a received run whose generation_config.json changes greedy decoding
    loaded.model.generation_config.repetition_penalty = 5.0
    loaded.model.generation_config.no_repeat_ngram_size = 1
    with caplog.at_level("WARNING"):
        assert loaded.predict_texts(["the film was"]) == greedy
    assert "ignored the model's generation_config.json: no_repeat_ngram_size=1, repetition_penalty=5.0" in caplog.text


def test_generation_flags_on_a_labelling_run_are_refused(ner_run, capsys):
    from fmtool.cli import main

    assert main(["predict", str(ner_run[0].path), "Alice went home .", "--temperature", "0.7", "--top-p", "0.9"]) == 2
    assert "predict: --temperature, --top-p continue text; a ner run labels it" in capsys.readouterr().err


@pytest.mark.slow
def test_a_clm_run_from_scratch_learns_a_byte_level_vocabulary(tmp_path):
    run, results = train_tiny(tmp_path / "run", "clm", *_FAST, "model.tokenizer_vocab_size=300", "trainer.epochs=1")
    tokenizer = load_tokenizer(run.tokenizer_dir, LoadPolicy())
    assert len(tokenizer) == 300
    assert tokenizer.backend_tokenizer.pre_tokenizer.__class__.__name__ in ("ByteLevel", "Sequence")
    assert results["after"]["validation"]["perplexity"] < results["before"]["validation"]["perplexity"]


@pytest.mark.slow
def test_a_causal_lm_exposes_a_much_repeated_canary_by_its_exact_log_perplexity(tmp_path):
    from fmtool.auditing import audit_loaded
    from fmtool.config.schema import CanaryConfig
    from fmtool.dataset.canaries import make_canaries

    run, _ = train_tiny(
        tmp_path / "run",
        "clm",
        *_FAST,
        "trainer.epochs=6",
        "trainer.max_length=64",
        "task.canaries.repetitions=[1,100]",
    )
    canaries = make_canaries(CanaryConfig(repetitions=[1, 100]), 42)
    entry = audit_loaded(LoadedRun.load(run.path), {"canary": {}}, run.path)["audits"][0]
    exposures = {row["repetitions"]: row["exposure"] for row in entry["tables"]["canaries"]}
    # of 1,000 secrets scored: log2(1000) = 10 bits when the planted one ranks first
    assert exposures[100] > 8 and exposures[1] < 6, exposures
    assert entry["status"] == "fail"
    # a twin trained on the same corpus without the canaries: the same sentence is not exposed
    clean, _ = train_tiny(tmp_path / "clean", "clm", *_FAST, "trainer.epochs=6", "trainer.max_length=64")
    secrets = tmp_path / "secrets.txt"
    secrets.write_text(canaries[1].text + "\n")
    [twin] = audit_loaded(LoadedRun.load(clean.path), {"canary": {"secrets": str(secrets)}}, tmp_path / "twin")[
        "audits"
    ]
    assert twin["tables"]["canaries"][0]["exposure"] < 6 and twin["status"] == "pass", twin["tables"]


_WIDER = ["model.config_overrides.n_embd=128", "optimizer.lr=3e-3", "dataset.max_eval_examples=null"]


@pytest.mark.slow
def test_a_causal_lm_that_memorised_its_documents_fails_membership_and_one_that_generalised_passes(tmp_path):
    from fmtool.auditing import audit_loaded

    def membership(run) -> dict:
        return audit_loaded(LoadedRun.load(run.path), {"membership": {}}, run.path)["audits"][0]

    # 100 documents seen 16 times each with no dropout, and one evaluation at the end so the last weights are kept
    memorised, _ = train_tiny(
        tmp_path / "memorised",
        "clm",
        *_WIDER,
        "dataset.max_train_examples=100",
        "model.dropout=0.0",
        "scheduler=constant",
        "trainer.batch_size=8",
        "trainer.max_steps=200",
        "trainer.eval_every_steps=200",
    )
    leaky = membership(memorised)
    assert leaky["status"] == "fail", leaky["summary"]
    # measured: loss AUC 0.87, Min-K% 0.90
    assert leaky["summary"]["loss.auc"] > 0.75 and leaky["summary"]["min_k.auc"] > 0.75, leaky["summary"]
    assert {row["attack"] for row in leaky["tables"]["attacks"]} == {"blind baseline (no model)", "loss", "min_k"}
    assert "loss.auc" in [c["name"] for c in leaky["checks"]]  # one corpus, split at random: no shift to correct
    assert any("reference attack skipped" in warning for warning in leaky["warnings"])
    # the whole corpus seen once: measured AUC 0.49 for both attacks
    generalised, _ = train_tiny(
        tmp_path / "generalised", "clm", *_WIDER, "dataset.max_train_examples=null", "trainer.epochs=1"
    )
    tight = membership(generalised)
    assert tight["status"] == "pass", tight["summary"]
