"""Regenerate fmtool's shipped demo data (synthetic, written for fmtool; no public corpus is copied).

python scripts/make_demo_data.py
"""

from __future__ import annotations

import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "fmtool" / "resources" / "demo"

PEOPLE = [
    "Maria Lopez",
    "John Smith",
    "Aiko Tanaka",
    "Kwame Mensah",
    "Olga Ivanova",
    "Rahul Sharma",
    "Fatima Zahra",
    "Lars Eriksen",
    "Chen Wei",
    "Amelia Clarke",
    "Diego Alvarez",
    "Nadia Haddad",
    "Peter Novak",
    "Grace Okafor",
    "Tom Becker",
    "Sofia Rossi",
    "Yusuf Demir",
    "Emma Dubois",
    "Hiroshi Sato",
    "Ines Costa",
    "Merkel",
    "Obama",
    "Ramos",
    "Kowalski",
]
ORGS = [
    "Siemens",
    "the United Nations",
    "Reuters",
    "Toyota",
    "Barclays",
    "the World Bank",
    "Nokia",
    "Greenpeace",
    "Oxford University",
    "Real Madrid",
    "the European Commission",
    "Unilever",
    "Interpol",
    "Bayer",
    "the Red Cross",
    "Samsung",
    "Ajax",
    "Petrobras",
]
PLACES = [
    "Berlin",
    "Tokyo",
    "Nairobi",
    "Lima",
    "Oslo",
    "Cairo",
    "Sydney",
    "Toronto",
    "Mumbai",
    "Madrid",
    "Brazil",
    "France",
    "Kenya",
    "Vietnam",
    "Chile",
    "Poland",
    "Texas",
    "Lagos",
    "Seoul",
    "Prague",
]
MISC = [
    "German",
    "French",
    "Olympic",
    "Japanese",
    "Nobel Prize",
    "World Cup",
    "Brazilian",
    "Christmas",
    "Euro",
    "Kenyan",
    "Italian",
    "Polish",
    "Grand Prix",
    "Mexican",
]
TEMPLATES = [
    "{PER} visited {LOC} on Monday .",
    "{ORG} said on Tuesday it would cut jobs in {LOC} .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "The {MISC} delegation arrived in {LOC} late last night .",
    "Shares of {ORG} rose 3 percent after the report .",
    "{PER} won the {MISC} title for the second time .",
    "Police in {LOC} arrested two men , {PER} told reporters .",
    "{ORG} signed a deal with {ORG} worth 40 million dollars .",
    "{PER} met {PER} in {LOC} to discuss trade .",
    "Heavy rain flooded parts of {LOC} and {LOC} this week .",
    "The {MISC} team beat {ORG} 2-1 in {LOC} .",
    "{PER} will lead {ORG} from January .",
    "Analysts expect {ORG} to report higher profits .",
    "{PER} said the {MISC} market remained weak .",
    "Prices fell in {LOC} for the third month in a row .",
    "Officials from {ORG} flew to {LOC} on Friday .",
    "{PER} scored twice as {ORG} won at home .",
    "It was a quiet day on the markets .",
    "The minister said talks would continue next week .",
    "A {MISC} court fined {ORG} on Thursday .",
]
TYPES = {"PER": PEOPLE, "ORG": ORGS, "LOC": PLACES, "MISC": MISC}


def ner_sentence(rng: random.Random) -> list[tuple[str, str]]:
    rows = []
    for piece in rng.choice(TEMPLATES).split():
        kind = piece[1:-1] if piece.startswith("{") else None
        if kind is None:
            rows.append((piece, "O"))
            continue
        words = rng.choice(TYPES[kind]).split()
        if words[0] == "the":
            rows.append(("the", "O"))
            words = words[1:]
        rows.extend((word, ("B-" if i == 0 else "I-") + kind) for i, word in enumerate(words))
    return rows


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    blocks = ["\n".join(f"{word} {tag}" for word, tag in sentence) for sentence in sentences]
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join(blocks) + "\n")


POSITIVE = [
    "wonderful",
    "moving",
    "funny",
    "brilliant",
    "charming",
    "gripping",
    "beautiful",
    "clever",
    "delightful",
    "superb",
]
NEGATIVE = ["dull", "boring", "clumsy", "tedious", "awful", "lifeless", "messy", "predictable", "shallow", "tiresome"]
SUBJECTS = [
    "the film",
    "this movie",
    "the story",
    "the acting",
    "the script",
    "the soundtrack",
    "the ending",
    "the cast",
    "the direction",
    "the dialogue",
]
FRAMES = [
    "{R} said {S} is {A} .",
    "{R} thought {S} was {A} from start to finish .",
    "{R} found {S} {A} .",
    "according to {R} , {S} feels {A} .",
    "{R} says {S} is {A} and {B} .",
    "{R} called it a {A} experience .",
    "{R} wrote that {S} was rather {A} .",
]
# reviewers of both genders, equally often and independent of the sentiment: a fair demo for the audits
REVIEWERS = {
    "female": [
        "she",
        "my sister",
        "my mother",
        "the woman next to me",
        "emily",
        "maria",
        "aisha",
        "priya",
        "my wife",
        "the girl",
    ],
    "male": [
        "he",
        "my brother",
        "my father",
        "the man next to me",
        "greg",
        "jose",
        "jamal",
        "rahul",
        "my husband",
        "the boy",
    ],
}


def sentiment_row(rng: random.Random) -> tuple[str, int, str]:
    label = rng.randint(0, 1)
    gender = rng.choice(sorted(REVIEWERS))
    words = POSITIVE if label else NEGATIVE
    a, b = rng.sample(words, 2)
    text = rng.choice(FRAMES).format(R=rng.choice(REVIEWERS[gender]), S=rng.choice(SUBJECTS), A=a, B=b)
    return text, label, gender


def corpus_document(rng: random.Random) -> str:
    """A short paragraph of news and review sentences: raw text for masked-LM pre-training."""
    sentences = [
        " ".join(w for w, _ in ner_sentence(rng)) if rng.random() < 0.6 else sentiment_row(rng)[0]
        for _ in range(rng.randint(2, 4))
    ]
    return " ".join(sentences)


def _sentence_text(sentence: list[tuple[str, str]]) -> str:
    return " ".join(word for word, _ in sentence)


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in text.lower().split() if any(c.isalnum() for c in w))


def held_out(drawn: list, train: list, text, redraw) -> list:
    """`drawn` with every item that repeats or nearly repeats a training item (the same words, or nine in ten of
    them shared) replaced by a fresh draw that does not: evaluation must not score what was trained on."""
    seen = [_words(text(item)) for item in train]

    def leaks(item) -> bool:
        words = _words(text(item))
        return any(len(words & other) >= 0.9 * len(words | other) for other in seen)

    kept = []
    for item in drawn:
        while leaks(item):
            item = redraw()
        kept.append(item)
    return kept


def main() -> None:
    rng = random.Random(2026)
    # replacements come from a stream of their own, so the training files stay as they were
    fresh = random.Random(2028)
    (OUT / "ner").mkdir(parents=True, exist_ok=True)
    ner_train = [ner_sentence(rng) for _ in range(400)]
    ner_dev = [ner_sentence(rng) for _ in range(100)]
    write_conll(OUT / "ner" / "train.conll", ner_train)
    # 400 evaluation examples: enough for the data audit to show leakage under 1% (an interval, not a point)
    ner_dev += [ner_sentence(fresh) for _ in range(300)]
    write_conll(OUT / "ner" / "dev.conll", held_out(ner_dev, ner_train, _sentence_text, lambda: ner_sentence(fresh)))
    (OUT / "classification").mkdir(parents=True, exist_ok=True)
    rows_of = {}
    for split, size in (("train", 400), ("dev", 100)):
        rows = [sentiment_row(rng) for _ in range(size)]
        if split == "dev":
            rows += [sentiment_row(fresh) for _ in range(300)]
            rows = held_out(rows, rows_of["train"], lambda row: row[0], lambda: sentiment_row(fresh))
        rows_of[split] = rows
        text = "sentence\tlabel\tgender\n" + "".join(
            f"{s}\t{'positive' if y else 'negative'}\t{g}\n" for s, y, g in rows
        )
        (OUT / "classification" / f"{split}.tsv").write_text(text)
    corpus_rng = random.Random(2027)
    (OUT / "corpus").mkdir(parents=True, exist_ok=True)
    for split, size in (("train", 1500), ("valid", 200)):
        (OUT / "corpus" / f"{split}.txt").write_text("".join(corpus_document(corpus_rng) + "\n" for _ in range(size)))


if __name__ == "__main__":
    main()
