"""Readers, tag schemes, word -> sub-token alignment and windowing, with hand-worked goldens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fmtool.config.schema import DataFormat, DatasetConfig
from fmtool.dataset import formats
from fmtool.dataset.batching import collate, inference_batches, token_budget_pieces, train_batches
from fmtool.dataset.examples import IGNORE_INDEX, TokenExample
from fmtool.dataset.formats import FORMATS, read_examples
from fmtool.dataset.ner import TokenFeature, encode_ner, plan_windows
from fmtool.dataset.readers import read_conll
from fmtool.dataset.splits import check_labels_known, label_list, load_splits
from fmtool.dataset.tags import detect_scheme, to_iob2
from fmtool.errors import FmtoolError
from fmtool.model import load_tokenizer
from tests.conftest import needs_shared, tiny_config

ALL_ROWS = ("dataset.max_train_examples=null", "dataset.max_eval_examples=null")

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
   
"""


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(tiny_config("ner").model)


def test_read_conll_skips_docstart_and_splits_on_blank_lines(tmp_path):
    path = tmp_path / "x.conll"
    path.write_text(CONLL)
    sentences = read_conll(path, token_column=0, tag_column=3)
    assert [s.tokens for s in sentences] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]


def test_read_conll_names_file_and_line_of_a_bad_row(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(FmtoolError, match=rf"{path}:2: expected a token in column 0 and a tag in column -1, found 1"):
        read_conll(path)
    path.write_text("EU B-ORG\nrejects X-ORG\n")
    with pytest.raises(FmtoolError, match=rf"{path}:2: tag 'X-ORG'"):
        read_conll(path)


def test_iob1_and_bioes_are_normalised_to_iob2():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]
    assert detect_scheme([iob1]) == "iob1"
    assert to_iob2(iob1, "iob1") == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    bioes = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"]
    assert detect_scheme([bioes]) == "bioes"
    assert to_iob2(bioes, "bioes") == ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC"]
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "iob2"


def test_table_readers_keep_extra_columns_as_meta(tmp_path):
    (tmp_path / "t.csv").write_text('text,label,gender\n"hello, world",pos,f\nbad day,neg,m\n')
    cfg = DatasetConfig(name="t", format=DataFormat.csv, data_dir=str(tmp_path), train_file="t.csv")
    rows = read_examples(cfg, "train_file")
    assert [(r.text, r.label, r.meta) for r in rows] == [
        ("hello, world", "pos", {"gender": "f"}),
        ("bad day", "neg", {"gender": "m"}),
    ]
    (tmp_path / "t.jsonl").write_text('{"q": "a?", "a": "b", "y": 1}\n\n{"q": "c?", "a": "d", "y": 0}\n')
    cfg = replace(
        cfg, format=DataFormat.jsonl, train_file="t.jsonl", text_column="q", text_pair_column="a", label_column="y"
    )
    rows = read_examples(cfg, "train_file")
    assert [(r.text, r.text_pair, r.label) for r in rows] == [("a?", "b", "1"), ("c?", "d", "0")]


def test_jsonl_reads_ner_sentences_as_runs_save_them_and_as_hub_exports_do(tmp_path):
    from fmtool.dataset.splits import to_model_labels

    (tmp_path / "run.jsonl").write_text('{"id": "a", "tokens": ["Ann", "left"], "tags": ["S-PER", "O"]}\n')
    (tmp_path / "hub.jsonl").write_text('{"tokens": ["Ann", "left"], "ner_tags": [1, 0]}\n')
    (tmp_path / "bad.jsonl").write_text('{"tokens": ["Ann", "left"], "tags": ["B-PER"]}\n')
    cfg = DatasetConfig(name="t", format=DataFormat.jsonl, data_dir=str(tmp_path), train_file="run.jsonl")
    [saved] = read_examples(cfg, "train_file")
    assert (saved.tokens, saved.tags) == (["Ann", "left"], ["B-PER", "O"])
    [hub] = read_examples(replace(cfg, train_file="hub.jsonl"), "train_file")
    [named] = to_model_labels("hub.jsonl", [hub], ["O", "B-PER", "I-PER"], {})
    assert named.tags == ["B-PER", "O"]
    with pytest.raises(FmtoolError, match=r"bad.jsonl:1: 'tokens' and 'tags' must be lists of the same length"):
        read_examples(replace(cfg, train_file="bad.jsonl"), "train_file")


def test_missing_column_is_named(tmp_path):
    (tmp_path / "t.tsv").write_text("sentence\tlabel\nok\t1\n")
    cfg = DatasetConfig(name="t", format=DataFormat.tsv, data_dir=str(tmp_path), train_file="t.tsv")
    with pytest.raises(
        FmtoolError, match=r"column 'text' \(dataset.text_column\) not found; columns are: sentence, label"
    ):
        read_examples(cfg, "train_file")


def test_label_unseen_in_train_is_an_error():
    train = [TokenExample("a", ["x"], ["B-PER"])]
    dev = [TokenExample("b", ["y"], ["B-LOC"])]
    labels = label_list(train)
    assert labels == ["B-PER"]
    with pytest.raises(
        FmtoolError, match="validation split has label\\(s\\) B-LOC that never occur in the train split"
    ):
        check_labels_known("validation", dev, labels)


def test_first_subword_alignment(tokenizer):
    example = TokenExample("s", ["Blackburn", "rejects", "Xylophonists"], ["B-PER", "O", "B-MISC"])
    label2id = {"O": 0, "B-PER": 1, "I-PER": 2, "B-MISC": 3, "I-MISC": 4}
    [feature] = encode_ner([example], tokenizer, label2id, max_length=32, stride=4)
    pieces = tokenizer.convert_ids_to_tokens(feature.input_ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    labelled = [(p, label) for p, label in zip(pieces, feature.labels) if label != IGNORE_INDEX]
    assert [label for _, label in labelled] == [1, 0, 3]
    assert [p for p, _ in labelled] == [pieces[1], "rejects", pieces[pieces.index("rejects") + 1]]
    [all_tokens] = encode_ner([example], tokenizer, label2id, max_length=32, stride=4, label_all_tokens=True)
    word_ids = tokenizer([example.tokens], is_split_into_words=True).word_ids(0)
    expected = [
        IGNORE_INDEX
        if w is None
        else label2id[example.tags[w]]
        if p == 0 or word_ids[p - 1] != w
        else label2id[example.tags[w].replace("B-", "I-")]
        for p, w in enumerate(word_ids)
    ]
    assert all_tokens.labels == expected


def test_plan_windows_cut_at_word_starts_and_overlap():
    assert plan_windows([0, 2, 3, 5, 6, 8, 9], 10, budget=4, stride=2) == [(0, 3), (2, 6), (5, 9), (8, 10)]
    assert plan_windows([0, 1, 2], 3, budget=8, stride=2) == [(0, 3)]
    # a single word longer than the budget is cut inside the word rather than looping forever
    assert plan_windows([0], 10, budget=4, stride=1) == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize("max_length,stride", [(16, 4), (24, 8), (12, 0)])
def test_long_sentence_windows_score_every_word_exactly_once(tokenizer, max_length, stride):
    words = [f"word{i} extraordinarily" if i % 7 == 0 else f"w{i}" for i in range(60)]
    words = " ".join(words).split()
    example = TokenExample("long", words, ["O"] * len(words))
    features = encode_ner([example], tokenizer, {"O": 0}, max_length=max_length, stride=stride)
    assert len(features) > 1
    assert all(len(f.input_ids) <= max_length for f in features)
    owned = sorted(word for f in features for word, _ in f.owned)
    assert owned == list(range(len(words)))
    for feature in features:
        for word, position in feature.owned:
            # the owned position is the word's first sub-token within this window
            first_piece = tokenizer([[words[word]]], is_split_into_words=True, add_special_tokens=False)["input_ids"][
                0
            ][0]
            assert feature.input_ids[position] == first_piece


def test_train_batches_repeat_per_seed_and_group_lengths():
    lengths = [5, 50, 6, 49, 7, 48, 8, 47] * 10
    first = train_batches(lengths, 4, seed=1, epoch=0, grouped=True)
    assert first == train_batches(lengths, 4, seed=1, epoch=0, grouped=True)
    assert first != train_batches(lengths, 4, seed=1, epoch=1, grouped=True)
    assert sorted(i for b in first for i in b) == list(range(len(lengths)))
    spread = max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first)
    assert spread <= 3
    for grouped in (True, False):
        assert max(lengths[i] for i in train_batches(lengths, 4, seed=3, epoch=2, grouped=grouped)[0]) == 50
    assert inference_batches([3, 9, 1, 7], 2) == [[1, 3], [0, 2]]


def test_token_budget_pieces_cap_padded_tokens_and_keep_every_row():
    features = [TokenFeature(list(range(n)), None, i, []) for i, n in enumerate([30, 4, 12, 5, 29, 6])]
    pieces = token_budget_pieces(features, 32)
    assert all(len(p) * max(len(f.input_ids) for f in p) <= 32 or len(p) == 1 for p in pieces)
    assert sorted(f.example_index for p in pieces for f in p) == list(range(6))
    assert len(pieces) == 4
    assert token_budget_pieces(features, None) == [features] and token_budget_pieces(features[1:4:2], 32) == [
        features[1:4:2]
    ]


def test_collate_pads_dynamically(tokenizer):
    examples = [TokenExample("a", ["a"], ["O"]), TokenExample("b", ["a", "b", "c"], ["O", "O", "O"])]
    features = encode_ner(examples, tokenizer, {"O": 0}, max_length=32, stride=4)
    batch = collate(features, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_shared_conll2003_reads_with_published_counts():
    root = needs_shared("conll2003")
    cfg = tiny_config("ner", "dataset=conll2003", f"dataset.data_dir={root}", *ALL_ROWS)
    splits = load_splits(cfg.dataset)
    assert (len(splits.train), len(splits.validation)) == (14041, 3250)
    assert sum(t.startswith("B-") for e in splits.train for t in e.tags) == 23499


def test_shared_sst2_and_clinc150_read():
    sst2 = tiny_config("classification", "dataset=sst2", f"dataset.data_dir={needs_shared('sst2')}", *ALL_ROWS)
    splits = load_splits(sst2.dataset)
    assert (len(splits.train), len(splits.validation)) == (67349, 872)
    clinc = tiny_config("classification", "dataset=clinc150", f"dataset.data_dir={needs_shared('clinc150')}", *ALL_ROWS)
    splits = load_splits(clinc.dataset)
    assert (len(splits.train), len(splits.validation), len(label_list(splits.train))) == (15000, 3000, 150)


def test_shared_wnut17_reads():
    cfg = tiny_config("ner", "dataset=wnut17", f"dataset.data_dir={needs_shared('wnut17')}", *ALL_ROWS)
    splits = load_splits(cfg.dataset)
    assert (len(splits.train), len(splits.validation)) == (3394, 1009)


def test_hugging_face_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    part = datasets.Dataset.from_dict({"tokens": [["Ann", "Lee", "ran"]], "ner_tags": [[1, 2, 0]]}, features=features)
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(tmp_path))
    cfg = DatasetConfig(name="disk", format=DataFormat.hf_disk, data_dir=str(tmp_path))
    splits = load_splits(cfg)
    assert splits.train[0].tokens == ["Ann", "Lee", "ran"] and splits.train[0].tags == ["B-PER", "I-PER", "O"]


def _table(tmp_path, name: str, content: bytes | str, fmt: str):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    cfg = DatasetConfig(
        name="t", format=DataFormat(fmt), train_file=str(path), text_column="text", label_column="label"
    )
    return path, lambda: read_examples(cfg, "train_file")


@pytest.mark.parametrize(
    "name, content, fmt, message",
    [
        (
            "short.csv",
            "text,label\ngood film,1\nno label here\n",
            "csv",
            r"short.csv:3: no value in column 'label' \(dataset.label_column\)",
        ),
        (
            "null.jsonl",
            '{"text": "a", "label": "1"}\n{"text": "b", "label": null}\n',
            "jsonl",
            r"null.jsonl:2: no value in column 'label'",
        ),
        (
            "number.jsonl",
            '{"text": "a", "label": "1"}\n7\n',
            "jsonl",
            r"number.jsonl:2: expected a JSON object per line, found int",
        ),
        ("latin1.csv", b"text,label\ncaf\xe9 ok,1\n", "csv", r"latin1.csv:2: not UTF-8 text \(byte 0xe9\)"),
        ("huge.csv", "text,label\n" + "x" * 140_000 + ",1\n", "csv", r"huge.csv:2: field larger than field limit"),
    ],
)
def test_table_rows_without_a_label_or_not_text_fail_naming_the_line(tmp_path, name, content, fmt, message):
    _, read = _table(tmp_path, name, content, fmt)
    with pytest.raises(FmtoolError, match=message):
        read()


def test_a_conll_line_missing_its_tag_column_fails_instead_of_reading_the_chunk_tag(tmp_path):
    path = tmp_path / "short.conll"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ I-NP\n")
    with pytest.raises(FmtoolError, match=rf"{path}:3: 3 columns, but the file's first token line has 4"):
        read_conll(path)
    latin = tmp_path / "latin.conll"
    latin.write_bytes(b"Caf\xe9 B-LOC\n")
    with pytest.raises(FmtoolError, match=rf"{latin}:1: not UTF-8 text"):
        read_conll(latin)


def test_every_configurable_format_reads_something_and_the_registry_decides_what():
    assert sorted(f.value for f in DataFormat) == FORMATS.names()
    assert all(FORMATS.get(name).examples or FORMATS.get(name).documents for name in FORMATS)
    assert formats.format_names(documents=True, files=True) == ["conll", "csv", "jsonl", "text", "tsv"]
    assert formats.format_of_file(Path("dev.iob")) == "conll" and formats.format_of_file(Path("x.parquet")) is None
    with pytest.raises(FmtoolError, match="dataset.format=text is raw text for pre-training"):
        read_examples(DatasetConfig(name="t", format=DataFormat.text, train_file="x.txt"), "train_file")
    with pytest.raises(
        FmtoolError,
        match=r"dataset.format=text is raw text for pre-training; labelled data needs one of: clinc_json, conll",
    ):
        tiny_config("ner", "dataset.format=text")
    with pytest.raises(
        FmtoolError,
        match=r"dataset.format=clinc_json holds labelled examples, not a pre-training corpus; use one of: conll, "
        r"csv, hf",
    ):
        tiny_config("mlm", "dataset.format=clinc_json")
