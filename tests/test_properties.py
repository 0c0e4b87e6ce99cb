"""Property-based tests (hypothesis) of the readers, word alignment and windowing: random files with odd unicode,
long sentences and stray blank lines either parse with every word given exactly one tag and one scoring
window, or fail with the one-line error naming file:line."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmtool.config.schema import DataFormat, DatasetConfig
from fmtool.dataset.examples import TokenExample
from fmtool.dataset.formats import read_examples
from fmtool.dataset.ner import encode_ner
from fmtool.dataset.readers import read_conll
from fmtool.errors import FmtoolError
from fmtool.model import load_tokenizer
from tests.conftest import tiny_config

# thousands of generated cases: the full tier (CI) runs them
pytestmark = pytest.mark.slow

# letters of several scripts, combining marks, digits, punctuation, zero-width and confusable characters
_ALPHABET = st.sampled_from(list("abcXYZéü0129.,;:'\"-()[]ßøДжअआक्षি中文ｶﾅ\u0301\u0308\u200b\u00a0\u2019\U0001f600"))
_WORD = st.text(_ALPHABET, min_size=1, max_size=12).filter(lambda w: w.strip() == w and w.split() == [w])
_TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"])
_SETTINGS = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(tiny_config("ner").model)


def _sentences():
    return st.lists(st.lists(st.tuples(_WORD, _TAG), min_size=1, max_size=40), min_size=1, max_size=6)


@_SETTINGS
@given(
    sentences=_sentences(), blank_runs=st.lists(st.integers(1, 3), min_size=6, max_size=6), columns=st.integers(2, 4)
)
def test_conll_files_parse_to_one_tag_per_word(tmp_path_factory, sentences, blank_runs, columns):
    lines = []
    for sentence, blanks in zip(sentences, blank_runs):
        lines += [" ".join([word, *["X"] * (columns - 2), tag]) for word, tag in sentence] + [""] * blanks
    path = tmp_path_factory.mktemp("conll") / "data.conll"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        examples = read_conll(path)
    except FmtoolError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    assert [list(zip(e.tokens, e.tags)) for e in examples] == [
        [(w, _iob2(sentence, i)) for i, (w, _) in enumerate(sentence)] for sentence in sentences
    ]


def _iob2(sentence, index):
    """The IOB2 tag the reader must give: an I- without a same-type tag before it starts an entity."""
    tag = sentence[index][1]
    if tag.startswith("I-") and (index == 0 or sentence[index - 1][1][2:] != tag[2:]):
        return "B-" + tag[2:]
    return tag


@_SETTINGS
@given(words=st.lists(_WORD, min_size=1, max_size=120), max_length=st.integers(8, 40), stride=st.integers(0, 8))
def test_every_word_is_scored_in_exactly_one_window(tokenizer, words, max_length, stride):
    example = TokenExample("p", words, ["O"] * len(words))
    features = encode_ner([example], tokenizer, {"O": 0}, max_length=max_length, stride=stride)
    assert all(len(f.input_ids) <= max_length for f in features)
    owned = sorted(word for f in features for word, _ in f.owned)
    assert owned == list(range(len(words)))


@_SETTINGS
@given(
    rows=st.lists(
        st.one_of(
            st.dictionaries(
                st.sampled_from(["text", "label", "extra"]), st.one_of(st.text(max_size=20), st.integers(), st.none())
            ),
            st.integers(),
            st.text(max_size=5),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_jsonl_files_parse_or_name_the_line(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("jsonl")
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cfg = DatasetConfig(name="p", format=DataFormat.jsonl, data_dir=str(folder), train_file="train.jsonl")
    try:
        examples = read_examples(cfg, "train_file")
    except FmtoolError as error:
        assert "\n" not in str(error) and "train.jsonl:" in str(error)
        return
    assert len(examples) == len(rows) and all(isinstance(e.label, str) and e.label != "None" for e in examples)
