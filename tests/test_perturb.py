"""Perturbations keep NER tags aligned when words split, merge, vanish or change length; they repeat per example id."""

from __future__ import annotations

from fmtool.dataset.examples import TextExample, TokenExample
from fmtool.dataset.noise import NAMES, number_words, perturbation
from fmtool.dataset.perturb import Perturbation, Segment, perturb, perturb_aligned, repair_iob2

SENTENCE = TokenExample(
    "s1",
    ["John", "Smith", "did", "not", "visit", "New", "York", "in", "1999", ",", "he", "said", "."],
    ["B-PER", "I-PER", "O", "O", "O", "B-LOC", "I-LOC", "O", "O", "O", "O", "O", "O"],
)
REVIEW = TextExample("r1", "I do not think the color of this film is good, it is 25 percent worse.", "0")


def _pairs(example: TokenExample) -> list[str]:
    return [f"{w}/{t}" for w, t in zip(example.tokens, example.tags)]


def test_a_split_word_continues_its_entity():
    split_new = Perturbation(
        "split",
        lambda words, tags, rng: [
            Segment(("Ne", "w"), i) if w == "New" else Segment((w,), i) for i, w in enumerate(words)
        ],
    )
    changed, positions = perturb_aligned(SENTENCE, split_new)
    assert _pairs(changed)[5:8] == ["Ne/B-LOC", "w/I-LOC", "York/I-LOC"]
    assert positions[5] == [5, 6] and positions[6] == [7]


def test_a_deleted_first_word_hands_b_to_the_next():
    drop_john = Perturbation(
        "drop", lambda words, tags, rng: [Segment(() if i == 0 else (w,), i) for i, w in enumerate(words)]
    )
    changed, positions = perturb_aligned(SENTENCE, drop_john)
    assert _pairs(changed)[0] == "Smith/B-PER" and positions[0] == []
    assert repair_iob2(["O", "I-PER", "I-LOC", "I-LOC"]) == ["O", "B-PER", "B-LOC", "I-LOC"]


def test_contraction_merges_two_words_outside_entities():
    changed, positions = perturb_aligned(SENTENCE, perturbation("add_contraction"))
    assert changed.tokens[:4] == ["John", "Smith", "didn't", "visit"] and changed.tags[:4] == [
        "B-PER",
        "I-PER",
        "O",
        "O",
    ]
    assert positions[2] == [2] and positions[3] == []


def test_number_to_word_may_make_several_words():
    changed = perturb(SENTENCE, perturbation("number_to_word"))
    assert changed.tokens[8:13] == ["one", "thousand", "nine", "hundred", "and"] and changed.tokens[13] == "ninety-nine"
    assert set(changed.tags[8:14]) == {"O"}
    assert [number_words(n) for n in (7, 40, 125, 2001)] == [
        "seven",
        "forty",
        "one hundred and twenty-five",
        "two thousand and one",
    ]


def test_swapped_entity_moves_its_span_with_its_length():
    pool = {"PER": [("Ann",)], "LOC": [("Los", "Angeles", "County")]}
    changed, positions = perturb_aligned(SENTENCE, perturbation("swap_entities", entity_pool=pool))
    assert _pairs(changed)[:7] == [
        "Ann/B-PER",
        "did/O",
        "not/O",
        "visit/O",
        "Los/B-LOC",
        "Angeles/I-LOC",
        "County/I-LOC",
    ]
    assert positions[0] == [0] and positions[1] == [] and positions[5] == [4, 5, 6] and positions[6] == []


def test_strip_punctuation_and_add_punctuation():
    stripped = perturb(SENTENCE, perturbation("strip_punctuation"))
    assert (
        "," not in stripped.tokens and "." not in stripped.tokens and len(stripped.tokens) == len(stripped.tags) == 11
    )
    added = perturb(SENTENCE, perturbation("add_punctuation"))
    assert added.tokens[:-1] == SENTENCE.tokens and added.tags[-1] == "O"


def test_golden_text_edits():
    assert (
        perturb(REVIEW, perturbation("add_contraction")).text
        == "I don't think the color of this film is good, it's 25 percent worse."
    )
    assert (
        perturb(REVIEW, perturbation("american_to_british")).text
        == "I do not think the colour of this film is good, it is 25 per cent worse."
    )
    assert (
        perturb(REVIEW, perturbation("number_to_word")).text
        == "I do not think the color of this film is good, it is twenty-five percent worse."
    )
    assert (
        perturb(REVIEW, perturbation("strip_punctuation")).text
        == "I do not think the color of this film is good it is 25 percent worse"
    )
    assert perturb(REVIEW, perturbation("uppercase")).text == REVIEW.text.upper()


def test_every_perturbation_is_seeded_by_example_id_and_keeps_tags_valid():
    pool = {"PER": [("Ann",)], "LOC": [("Rome",)]}
    for name in NAMES:
        edit = perturbation(name, entity_pool=pool)
        first, again = perturb(SENTENCE, edit, seed=3), perturb(SENTENCE, edit, seed=3)
        assert first == again, name
        assert len(first.tokens) == len(first.tags) and first.tags == repair_iob2(first.tags), name
        assert all(token for token in first.tokens), name
    typo = perturbation("add_typo")
    variants = {tuple(perturb(TokenExample(str(i), SENTENCE.tokens, SENTENCE.tags), typo).tokens) for i in range(20)}
    assert len(variants) > 5
