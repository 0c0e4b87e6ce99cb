"""Masked-LM pre-training: masking, corpus streaming, learning from scratch, and the chain to fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fmtool.config.schema import DataFormat, DatasetConfig
from fmtool.dataset.examples import IGNORE_INDEX
from fmtool.dataset.formats import iter_documents
from fmtool.dataset.mlm import CONTINUATION, SPECIAL, WORD_START, Masking, StreamedBlocks, pack_blocks, select_masked
from fmtool.errors import FmtoolError
from fmtool.model import load_tokenizer
from fmtool.predict import LoadedRun
from fmtool.task import TASKS
from tests.conftest import tiny_config, train_tiny

LEARN = [
    "trainer.max_steps=40",
    "trainer.eval_every_steps=20",
    "dataset.max_train_examples=400",
    "dataset.max_eval_examples=50",
    "optimizer.lr=3e-3",
    "trainer.max_length=64",
    "audit=none",
]


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("mlm_run"), "mlm", *LEARN, "task.whole_word_masking=true")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(tiny_config("mlm").model)


def test_tiny_mlm_from_scratch_learns(mlm_run):
    run, results = mlm_run
    before, after = results["before"]["validation"], results["after"]["validation"]
    assert after["loss"] < before["loss"] - 2.0
    assert after["perplexity"] < before["perplexity"] / 5
    logged = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    assert [r["step"] for r in logged if r["split"] == "validation"] == [20, 40]
    assert (run.path / "data" / "train.txt").read_text().count("\n") == 400


def test_whole_word_masking_masks_every_piece_of_a_chosen_word():
    starts = np.array([SPECIAL, WORD_START, CONTINUATION, CONTINUATION, WORD_START, WORD_START, CONTINUATION, SPECIAL])
    for seed in range(50):
        chosen = select_masked(starts, 0.4, True, np.random.default_rng(seed))
        assert not chosen[0] and not chosen[-1]
        assert chosen[1] == chosen[2] == chosen[3] and chosen[5] == chosen[6]
        assert chosen.any()


def test_masking_is_seeded_per_block_and_epoch(tokenizer):
    blocks = list(pack_blocks(["the quick brown fox jumps over the lazy dog"] * 20, tokenizer, 32))
    masking = Masking(
        0.15, False, seed=3, mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id
    )
    first, again, later = masking.collate(blocks, 0), masking.collate(blocks, 0), masking.collate(blocks, 1)
    assert torch.equal(first["input_ids"], again["input_ids"]) and not torch.equal(first["labels"], later["labels"])
    # a block masks the same way alone as in a batch: ranks of a data-parallel run agree
    assert torch.equal(masking.collate(blocks[2:3], 0)["labels"][0], first["labels"][2, : len(blocks[2].input_ids)])
    predicted = first["labels"] != IGNORE_INDEX
    assert 0.08 < predicted.sum() / first["attention_mask"].sum() < 0.25
    assert (first["input_ids"][predicted] == tokenizer.mask_token_id).float().mean() > 0.6


def test_blocks_pack_documents_into_full_width_blocks(tokenizer):
    blocks = list(pack_blocks([f"document number {i} is here" for i in range(30)], tokenizer, 16))
    assert all(len(b.input_ids) == 16 for b in blocks[:-1])
    assert all(b.input_ids[0] == tokenizer.cls_token_id and b.input_ids[-1] == tokenizer.sep_token_id for b in blocks)
    assert [b.index for b in blocks] == list(range(len(blocks)))


def test_streamed_blocks_cover_the_corpus_once_per_epoch_in_a_seeded_order(tokenizer):
    documents = [f"line {i} of a corpus too large for memory" for i in range(200)]
    stream = StreamedBlocks(lambda: iter(documents), tokenizer, max_length=16, batch_size=4, seed=1, buffer_size=8)
    epoch0 = [b.index for batch in stream.epoch(0) for b in batch]
    assert sorted(epoch0) == [b.index for b in pack_blocks(documents, tokenizer, 16)]
    assert epoch0 == [b.index for batch in stream.epoch(0) for b in batch]
    assert epoch0 != [b.index for batch in stream.epoch(1) for b in batch]


def test_corpus_readers_stream_text_jsonl_and_conll(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc\n")
    (tmp_path / "a.jsonl").write_text('{"body": "first"}\n{"body": "second"}\n')
    (tmp_path / "a.conll").write_text("-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\n")

    def read(fmt, name, **kw):
        config = DatasetConfig(name="t", format=DataFormat(fmt), data_dir=str(tmp_path), train_file=name, **kw)
        return list(iter_documents(config, "train_file"))

    assert read("text", "a.txt") == ["first doc", "second doc"]
    assert read("jsonl", "a.jsonl", text_column="body") == ["first", "second"]
    assert read("conll", "a.conll") == ["EU rejects", "Peter"]
    with pytest.raises(FmtoolError, match=r"a.jsonl:1: no field 'text'"):
        read("jsonl", "a.jsonl")


def test_streamed_pretraining_with_a_learnt_vocabulary(tmp_path):
    run, results = train_tiny(
        tmp_path,
        "mlm",
        "dataset.streaming=true",
        "trainer.max_steps=6",
        "dataset.shuffle_buffer=16",
        "model.tokenizer_vocab_size=300",
        "trainer.max_length=32",
        "audit=none",
    )
    assert results["train"]["updates"] == 6 and results["data"]["train"]["streamed"]
    loaded = LoadedRun.load(run.path)
    assert len(loaded.tokenizer) == 300 and loaded.model.config.vocab_size == 300
    assert not (run.path / "data" / "train.txt").exists()


def test_pretrained_model_is_a_starting_point_for_fine_tuning(mlm_run, tmp_path):
    run, _ = mlm_run
    ner, results = train_tiny(
        tmp_path,
        "ner",
        f"model.name={run.model_dir}",
        "model.random_init=false",
        "trainer.epochs=0",
        "trainer.max_steps=1",
        "optimizer.lr=1e-12",
        "audit=none",
    )
    pretrained = LoadedRun.load(run.path).model.get_input_embeddings().weight
    fine_tuned = LoadedRun.load(ner.path).model.get_input_embeddings().weight
    assert torch.allclose(pretrained, fine_tuned, atol=1e-6)


def test_masked_lm_run_fills_masks_and_refuses_labelling(mlm_run):
    loaded = LoadedRun.load(mlm_run[0].path)
    [filled] = loaded.predict_texts(["the film was [MASK] ."])
    assert len(filled["masks"]) == 1 and len(filled["masks"][0]) == 5
    with pytest.raises(FmtoolError, match="^a mlm run is a language model and labels nothing: fmtool predict"):
        loaded.predictions([])


def test_masked_lm_run_report_carries_the_stereotype_audit(mlm_run, tmp_path):
    from fmtool.auditing import audit_loaded

    loaded = LoadedRun.load(mlm_run[0].path)
    report = audit_loaded(
        loaded, {"stereotype": {"crows_pairs": str(tmp_path / "absent.csv"), "winobias": None}}, tmp_path
    )
    [entry] = report["audits"]
    assert entry["name"] == "stereotype" and "absent.csv not found" in " ".join(entry["warnings"])


def test_corpus_from_a_saved_hugging_face_dataset(tmp_path):
    import datasets

    part = datasets.Dataset.from_dict({"content": ["a first document", "a second one"]})
    datasets.DatasetDict({"train": part}).save_to_disk(str(tmp_path))
    cfg = DatasetConfig(name="t", format=DataFormat.hf_disk, data_dir=str(tmp_path), text_column="content")
    assert list(iter_documents(cfg, "train_file")) == ["a first document", "a second one"]


@pytest.mark.slow  # a CLI subprocess
def test_eval_of_a_masked_lm_run_reproduces_its_held_out_loss(mlm_run):
    from tests.conftest import fmtool_cli

    run, results = mlm_run
    result = fmtool_cli("eval", str(run.path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["loss"] == pytest.approx(
        results["after"]["validation"]["loss"], rel=1e-5
    )


def test_loss_from_masked_positions_only_equals_the_full_forward(tokenizer):
    from fmtool.model import build_model
    from fmtool.task.mlm import MaskedPositionsLM

    model = build_model(tiny_config("mlm").model, TASKS.get("mlm").head, [], vocab_size=len(tokenizer)).eval()
    blocks = list(pack_blocks(["the quick brown fox jumps over the lazy dog"] * 40, tokenizer, 32))
    batch = Masking(0.15, False, 1, tokenizer.mask_token_id, len(tokenizer), tokenizer.pad_token_id).collate(blocks, 0)
    assert MaskedPositionsLM(model)(**batch).loss.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)
