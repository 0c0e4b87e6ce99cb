"""Counterfactual rewrites are valid sentences: swapped words keep their kind and entity boundaries stay put."""

from __future__ import annotations

from seqeval.metrics.sequence_labeling import get_entities

from fmtool.dataset.counterfactual import (
    ATTRIBUTES,
    INSIDE_PERSON,
    NOT_A_PERSON,
    NOT_ALONE,
    counterfactual_groups,
    counterfactuals,
    peer_rewrites,
    skipped,
)
from fmtool.dataset.examples import TextExample, TokenExample
from fmtool.dataset.lexicons import first_names
from fmtool.dataset.tags import is_person_type
from tests.conftest import needs_shared, tiny_config

GROUPS = counterfactual_groups(ATTRIBUTES)


def _sentence(text: str, tags: str) -> TokenExample:
    return TokenExample("s", text.split(), tags.split())


def _swapped(example: TokenExample, rewrite: TokenExample) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(example.tokens, rewrite.tokens)) if a != b]


def test_words_inside_entities_of_another_kind_are_never_swapped():
    # the rewrites a model-free swap made on CoNLL-2003 dev: a name inside a team, a country, an ORG and a MISC name,
    # a title beside a person
    invalid = [
        _sentence("SAN DIEGO AT MONTREAL", "B-ORG I-ORG O B-ORG"),
        _sentence("David Kiptoo ( Kenya )", "B-PER I-PER O B-LOC O"),
        _sentence("English county sides", "B-ORG I-ORG I-ORG"),
        _sentence("the European Tour", "O B-MISC I-MISC"),
        _sentence("Queen Elizabeth I", "O B-PER I-PER"),
    ]
    for example in invalid:
        assert all(counterfactuals(example, swaps) == [] for swaps in GROUPS.values()), example.tokens


def test_names_swap_inside_persons_and_other_terms_where_they_stand_alone():
    sentence = _sentence("Maria beat Ali , the German said to his coach", "B-PER O B-PER O O B-MISC O O O O O")
    [gender] = counterfactuals(sentence, GROUPS["first_name_gender"])
    assert gender.tokens[:3] == ["Jose", "beat", "Salma"] and gender.tags == sentence.tags
    assert len(counterfactuals(sentence, GROUPS["first_name_origin"])) == len(first_names()["female"]) - 1
    [nationality] = counterfactuals(sentence, GROUPS["nationality"])
    assert _swapped(sentence, nationality) == [5] and nationality.tokens[5] == "Turkish"
    [gender_words] = counterfactuals(sentence, GROUPS["gender"])
    assert gender_words.tokens[8] == "her"
    # a name only one tagging calls a person is left alone: here the model (second tagging) missed Ali
    model = "B-PER O O O O B-MISC O O O O O".split()
    assert all(_swapped(sentence, r) == [0] for r in counterfactuals(sentence, GROUPS["first_name_gender"], [model]))


def test_a_name_in_a_surnames_place_stays_and_each_rule_counts_what_it_kept():
    """`Mushtaq Ahmed`, `Salim Malik`: a lexicon name after a person's first word is a surname there."""
    sentence = _sentence("Maria Ali met Ali and the German", "B-PER I-PER O B-PER O O B-MISC")
    rewrites = counterfactuals(sentence, GROUPS["first_name_gender"])
    assert rewrites and all(_swapped(sentence, r) == [0, 3] for r in rewrites)
    tags = [sentence.tags]
    assert skipped(sentence.tokens, GROUPS["first_name_gender"], tags) == {INSIDE_PERSON: 1}
    model = "B-PER I-PER O O O O B-MISC".split()
    assert skipped(sentence.tokens, GROUPS["first_name_gender"], [*tags, model]) == {INSIDE_PERSON: 1, NOT_A_PERSON: 1}
    assert skipped(
        _sentence("the German team", "O B-MISC I-MISC").tokens, GROUPS["nationality"], [["O", "B-MISC", "I-MISC"]]
    ) == {NOT_ALONE: 1}


def test_peer_rewrites_keep_each_name_in_its_gender_and_origin():
    names = first_names()
    group_of = {n: (g, o) for g, origins in names.items() for o, listed in origins.items() for n in listed}
    sentence = _sentence("Maria met Ali", "B-PER O B-PER")
    for attribute in ("first_name_gender", "first_name_origin"):
        peers = peer_rewrites(sentence, GROUPS[attribute])
        assert len(peers) == len(counterfactuals(sentence, GROUPS[attribute]))
        for rewrite in peers:
            assert all(group_of[rewrite.tokens[i]] == group_of[sentence.tokens[i]] for i in (0, 2))
            assert rewrite.tokens[0] != "Maria" and rewrite.tokens[2] != "Ali"
    assert peer_rewrites(sentence, GROUPS["gender"]) == []


def test_texts_swap_every_term_in_place():
    text = TextExample("t", "She said Maria's film was great.", "1")
    [rewrite] = counterfactuals(text, GROUPS["first_name_gender"])
    assert rewrite.text == "She said Jose's film was great."
    assert counterfactuals(text, GROUPS["gender"])[0].text == "He said Maria's film was great."


def _stands_alone(tags: list[str], i: int) -> bool:
    entity = [(kind, first, last) for kind, first, last in get_entities(tags) if first <= i <= last]
    if not entity:
        return all(tags[j] == "O" for j in (i - 1, i + 1) if 0 <= j < len(tags))
    [(kind, first, last)] = entity
    return first == last and not is_person_type(kind)


def test_conll2003_dev_rewrites_never_swap_a_word_inside_an_entity_of_another_type():
    from fmtool.dataset.splits import load_splits

    cfg = tiny_config(
        "ner", "dataset=conll2003", f"dataset.data_dir={needs_shared('conll2003')}", "dataset.max_eval_examples=null"
    )
    dev = load_splits(cfg.dataset).validation
    rewritten = {}
    for attribute, swaps in GROUPS.items():
        pairs = [(e, r) for e in dev for r in counterfactuals(e, swaps)]
        rewritten[attribute] = len({e.id for e, _ in pairs})
        for example, rewrite in pairs:
            assert rewrite.tags == example.tags and len(rewrite.tokens) == len(example.tokens)
            for i in _swapped(example, rewrite):
                if swaps.person_names:
                    # a first name where it is one: the first word of a person, never a surname's place
                    assert example.tags[i] == "B-PER", (attribute, example.tokens, i)
                else:
                    assert _stands_alone(example.tags, i), (attribute, example.tokens, i)
    # the valid rewrites still cover every attribute
    assert all(count >= 10 for count in rewritten.values()), rewritten
