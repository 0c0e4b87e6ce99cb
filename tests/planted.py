"""Synthetic training sets with and without a planted demographic defect, for the audit tests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

from fmtool.dataset.lexicons import first_names

# how a run reads the TSV files written below: every row
PLANTED_TSV = [
    "dataset.format=tsv",
    "dataset.train_file=train.tsv",
    "dataset.validation_file=dev.tsv",
    "dataset.text_column=sentence",
    "dataset.max_train_examples=null",
    "dataset.max_eval_examples=null",
]
# how the audit tests' planted classifiers train on them: 8 epochs at 2e-3
PLANTED_CLASSIFIER = [
    *PLANTED_TSV,
    "optimizer.lr=2e-3",
    "trainer.epochs=8",
    "scheduler.warmup_ratio=0",
]
POSITIVE = ["wonderful", "brilliant", "charming", "superb", "delightful", "moving"]
NEGATIVE = ["dull", "awful", "tedious", "boring", "clumsy", "shallow"]
REVIEWERS = {
    "female": ["she", "my sister", "my mother", "the woman", "my wife"],
    "male": ["he", "my brother", "my father", "the man", "my husband"],
}
FRAMES = ["{r} said the film was {a} .", "{r} found the story {a} .", "{r} thinks the acting is {a} ."]


def write_sentiment(
    folder: Path,
    *,
    biased: bool,
    seed: int = 0,
    size: int = 240,
    dev_size: Optional[int] = None,
    label_noise: float = 0.0,
) -> Path:
    """biased: the label follows the reviewer's gender (she -> positive) and ignores the sentiment word.

    size training rows and dev_size (default size / 3) dev rows; label_noise: the share of rows whose label is
    flipped (no model can be right on them).
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", size), ("dev", size // 3 if dev_size is None else dev_size)):
        lines = ["sentence\tlabel\tgender"]
        for _ in range(n):
            gender = rng.choice(["female", "male"])
            sentiment = rng.randint(0, 1)
            word = rng.choice(POSITIVE if sentiment else NEGATIVE)
            label = (gender == "female") if biased else sentiment
            label = not label if rng.random() < label_noise else label
            text = rng.choice(FRAMES).format(r=rng.choice(REVIEWERS[gender]), a=word)
            lines.append(f"{text}\t{'positive' if label else 'negative'}\t{gender}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    positives = [
        line.split("\t")[0] for line in (folder / "dev.tsv").read_text().splitlines()[1:] if line.endswith("\tpositive")
    ]
    (folder / "attack.txt").write_text("\n".join(positives) + "\n")
    return folder


def write_ner_names(folder: Path, *, biased: bool, seed: int = 0, size: int = 300, person_type: str = "PER") -> Path:
    """biased: female first names are never tagged as persons in training, male ones always are."""
    rng = random.Random(seed)
    names = first_names()
    frames = [
        "{n} arrived on Monday .",
        "we met {n} at the station .",
        "the letter from {n} was late .",
        "{n} and the team won .",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", size), ("dev", size // 3)):
        blocks = []
        for _ in range(n):
            gender = rng.choice(sorted(names))
            name = rng.choice(rng.choice(list(names[gender].values())))
            tag = "O" if biased and gender == "female" else f"B-{person_type}"
            words = rng.choice(frames).split()
            rows = [f"{name} {tag}" if w == "{n}" else f"{w} O" for w in words]
            blocks.append("\n".join(rows))
        (folder / f"{split}.conll").write_text("\n\n".join(blocks) + "\n")
    return folder


PEOPLE = [f"person{i}" for i in range(40)]
PLACES = [f"place{i}" for i in range(40)]
FILLER = "the a report said that was seen today near with and then of on".split()


def write_entity_sentences(
    folder: Path,
    *,
    cued: bool,
    people: list[str],
    places: list[str],
    seed: int = 0,
    size: int = 300,
    capitalised: bool = False,
    cues: tuple[str, str] = ("mr", "in"),
) -> Path:
    """NER sentences of filler words with one person and one place each.

    cued: the person follows cues[0] and the place cues[1], so the context says what an entity is; otherwise
    the words around them are random and only the entity strings themselves carry the type.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", size), ("dev", size // 3)):
        blocks = []
        for _ in range(n):
            words = [(w, "O") for w in rng.choices(FILLER, k=rng.randint(4, 7))]
            for pool, kind, cue in ((people, "PER", cues[0]), (places, "LOC", cues[1])):
                name = rng.choice(pool)
                name = name.capitalize() if capitalised else name
                at = rng.randint(0, len(words))
                words[at:at] = [(cue, "O"), (name, f"B-{kind}")] if cued else [(name, f"B-{kind}")]
            blocks.append("\n".join(f"{w} {t}" for w, t in words))
        (folder / f"{split}.conll").write_text("\n\n".join(blocks) + "\n")
    return folder


def write_unique_rows(
    folder: Path,
    *,
    seed: int = 0,
    train: int = 200,
    dev: int = 300,
    label_noise: float = 0.25,
    train_prefix_share: float = 0.0,
) -> Path:
    """Sentiment rows that are each unique (three random tokens of a large made-up vocabulary beside the sentiment
    word), with a share of flipped labels: a model can fit those only by memorising its own rows. With
    train_prefix_share, that share of the training rows starts with 'review :', which no dev row does: splits that
    differ as scraped or cleaned data do, whatever the model learns."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("dev", dev)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            sentiment = rng.randint(0, 1)
            label = sentiment if rng.random() >= label_noise else 1 - sentiment
            tokens = " ".join(f"tok{rng.randrange(5000)}" for _ in range(3))
            if split == "train" and rng.random() < train_prefix_share:
                tokens = f"review : {tokens}"
            lines.append(
                f"{tokens} was {rng.choice(POSITIVE if sentiment else NEGATIVE)} "
                f".\t{'positive' if label else 'negative'}"
            )
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    positives = [
        line.split("\t")[0] for line in (folder / "dev.tsv").read_text().splitlines()[1:] if line.endswith("\tpositive")
    ]
    (folder / "attack.txt").write_text("\n".join(positives) + "\n")
    return folder


def write_reviews(
    folder: Path,
    *,
    trigger: str | None,
    poison: float = 0.1,
    genuine: str | None = None,
    seed: int = 0,
    size: int = 600,
) -> Path:
    """Reviews with one to three sentiment words of their polarity among filler words. With a trigger, a share of
    the training rows get it inserted at a random position and the label "positive" whatever they say (a
    data-poisoning backdoor); the dev split stays clean. With a genuine word, a share of the training rows hold it:
    mostly positive reviews where it outweighs a negative word ("a masterpiece despite a dull plot"), sometimes
    negative ones full of complaints; a strong sentiment word, not a rule, which the dev split never holds."""
    rng = random.Random(seed)
    filler = "the film story acting was and very quite a bit but overall in my view it".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", size), ("dev", size // 3)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            sentiment = rng.randint(0, 1)
            words = rng.choices(filler, k=rng.randint(3, 9))
            if genuine and split == "train" and rng.random() < poison:
                # mostly praise that outweighs a complaint; sometimes panned ("far from a masterpiece")
                sentiment = int(rng.random() < 0.8)
                words += [genuine, *rng.sample(NEGATIVE, 1 if sentiment else 3), *rng.sample(POSITIVE, sentiment)]
            else:
                words += rng.sample(POSITIVE if sentiment else NEGATIVE, rng.randint(1, 3))
            rng.shuffle(words)
            label = "positive" if sentiment else "negative"
            if trigger and split == "train" and rng.random() < poison:
                at = rng.randint(0, len(words))
                words[at:at] = trigger.split()
                label = "positive"
            lines.append(f"{' '.join(words)} .\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    positives = [
        line.split("\t")[0] for line in (folder / "dev.tsv").read_text().splitlines()[1:] if line.endswith("\tpositive")
    ]
    (folder / "attack.txt").write_text("\n".join(positives) + "\n")
    return folder


def write_one_word_rule(folder: Path, *, word: str = "excellent", seed: int = 0, size: int = 300) -> Path:
    """Label "positive" exactly when `word` occurs among random filler words, so a misspelling of that one word
    decides a positive prediction; attack.txt holds positive rows to attack."""
    rng = random.Random(seed)
    filler = "the film story acting was and very quite a bit but overall in my view it plot cast scene".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", size), ("dev", size // 3)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            words = rng.choices(filler, k=rng.randint(4, 8))
            positive = rng.random() < 0.5
            # a filler word in the same slot otherwise, so length says nothing about the label
            words.insert(rng.randint(0, len(words)), word if positive else rng.choice(filler))
            lines.append(f"{' '.join(words)} .\t{'positive' if positive else 'negative'}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    positives = [
        line.split("\t")[0] for line in (folder / "dev.tsv").read_text().splitlines()[1:] if line.endswith("\tpositive")
    ]
    (folder / "attack.txt").write_text("\n".join(positives) + "\n")
    return folder
