"""fmtool's `attack` audit side by side with TextAttack on the same classifier, sentences and query budget.

    python -m bench.attack RUN_DIR                      # a fine-tuned classification run (SST-2 in the README)
    python -m bench.attack RUN_DIR --examples 100 --query-budget 200 --textattack-python .venv-textattack/bin/python

TextAttack runs in its own environment (it pins older transformers and flair): its DeepWordBug recipe
(Gao et al. 2018: character swaps, substitutions, deletions and insertions on words ranked by replacing them
with the unknown token, at most 30 character edits, stopwords untouched) as shipped, through
bench/textattack_side.py. fmtool runs its character attack (the same DeepWordBug edits, words ranked by
deletion) with no cap on the share of words changed, as DeepWordBug has none, and its default audit (character
and embedding-neighbour word substitutions, at most 20% of the words). Every attack sees the same
--examples dev sentences (the audit's own seeded sample) and stops at --query-budget model queries per
sentence. Prints one table of TextAttack's figures and the wall time of each.

TextAttack's environment, once:
    python -m venv .venv-textattack && .venv-textattack/bin/pip install textattack
    .venv-textattack/bin/python -m nltk.downloader stopwords
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import transformers
from rich.console import Console
from rich.table import Table

from fmtool.auditing import audit_loaded
from fmtool.predict import LoadedRun

SIDE = Path(__file__).resolve().parent / "textattack_side.py"
_FIGURES = (
    "original_accuracy",
    "accuracy_under_attack",
    "attack_success_rate",
    "average_words_perturbed",
    "average_queries",
)


def fmtool_attack(loaded: LoadedRun, settings: dict, out: Path) -> dict:
    started = time.perf_counter()
    entry = audit_loaded(loaded, {"attack": settings}, out)["audits"][0]
    return {**entry["summary"], "seconds": time.perf_counter() - started}


def textattack_attack(python: str, model_dir: Path, sample: list, budget: int, scratch: Path) -> dict:
    examples = scratch / "examples.jsonl"
    examples.write_text(
        "".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in sample), encoding="utf-8"
    )
    done = subprocess.run(
        [python, str(SIDE), str(model_dir), str(examples), "--query-budget", str(budget)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"TextAttack failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--query-budget", type=int, default=200)
    parser.add_argument(
        "--textattack-python", default=os.environ.get("TEXTATTACK_PYTHON", ".venv-textattack/bin/python")
    )
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    loaded = LoadedRun.load(args.run_dir)
    dev = loaded.run.load_split("validation")
    # the attack audit's own sample (fmtool/audit/attack.py), so both tools attack the same sentences
    sample = random.Random(f"{loaded.cfg.seed}:attack").sample(dev, min(args.examples, len(dev)))
    budget = args.query_budget
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        rows.append(
            (
                "TextAttack DeepWordBug",
                textattack_attack(args.textattack_python, args.run_dir / "model", sample, budget, Path(scratch)),
            )
        )
        rows.append(
            (
                "fmtool char (no word cap)",
                fmtool_attack(
                    loaded,
                    {
                        "methods": ["char"],
                        "max_examples": args.examples,
                        "max_queries": budget,
                        "max_words_changed": 1.0,
                    },
                    Path(scratch) / "char",
                ),
            )
        )
        rows.append(
            (
                "fmtool char + word (default)",
                fmtool_attack(
                    loaded, {"max_examples": args.examples, "max_queries": budget}, Path(scratch) / "default"
                ),
            )
        )
    table = Table(
        title=f"{args.run_dir.name}: {len(sample)} dev sentences, at most {budget} queries each, 2 CPU threads"
    )
    for column in (
        "attack",
        "original acc",
        "acc under attack",
        "success rate",
        "% words perturbed",
        "avg queries",
        "seconds",
    ):
        table.add_column(column, justify="right")
    for name, figures in rows:
        table.add_row(
            name,
            *[f"{figures[k]:.3f}" if k != "average_words_perturbed" else f"{100 * figures[k]:.1f}" for k in _FIGURES],
            f"{figures['seconds']:.1f}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
