"""fmtool's `robustness` audit side by side with LangTest on the same NER model and sentences.

    python -m bench.robustness RUN_DIR                  # a fine-tuned NER run (CoNLL-2003 in the README)
    python -m bench.robustness RUN_DIR --examples 500 --langtest-python .venv-langtest/bin/python

LangTest runs in its own environment: its Harness with the Hugging Face hub on the run's model directory and
the first --examples sentences of the run's validation split written as a CoNLL file, for the tests both tools
name alike. fmtool runs its audit on the same sentences. Both pass a case when the prediction on the
perturbed text equals the model's own prediction on the original; they differ in the edits' details (each
tool's typo tables, which words it touches) and in how NER predictions are compared after an edit changes
words: fmtool carries the original's entities through the edit, LangTest compares entity lists. Prints one
table: pass rate and number of cases per test, and each tool's wall time from loading the model to its report.

LangTest's environment, once:
    python -m venv .venv-langtest && .venv-langtest/bin/pip install langtest transformers torch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import transformers
from rich.console import Console
from rich.table import Table

from fmtool.pipeline import audit_loaded
from fmtool.predict import LoadedRun
from fmtool.runs import RunDir

SIDE = Path(__file__).resolve().parent / "langtest_side.py"
SHARED_TESTS = ["uppercase", "lowercase", "titlecase", "add_typo", "add_ocr_typo", "add_punctuation", "strip_punctuation", "add_contraction",
                "number_to_word", "american_to_british", "swap_entities"]


def write_conll(examples, path: Path) -> None:
    blocks = ["\n".join(f"{token} -X- -X- {tag}" for token, tag in zip(e.tokens, e.tags)) for e in examples]
    path.write_text("-DOCSTART- -X- -X- O\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--tests", nargs="+", default=SHARED_TESTS)
    parser.add_argument("--langtest-python", default=os.environ.get("LANGTEST_PYTHON", ".venv-langtest/bin/python"))
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    sentences = RunDir.open(args.run_dir).load_split("validation")[: args.examples]
    with tempfile.TemporaryDirectory() as scratch:
        conll = Path(scratch) / "sentences.conll"
        write_conll(sentences, conll)
        done = subprocess.run([args.langtest_python, str(SIDE), str(args.run_dir / "model"), str(conll), *args.tests], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"LangTest failed:\n{done.stderr[-3000:]}")
        langtest = json.loads(done.stdout.strip().splitlines()[-1])
        # both sides' times include loading the model, as LangTest's Harness does
        started = time.perf_counter()
        loaded = LoadedRun.load(args.run_dir)
        entry = audit_loaded(loaded, {"robustness": {"tests": args.tests, "max_examples": args.examples}}, Path(scratch) / "fmtool")["audits"][0]
        fmtool_seconds = time.perf_counter() - started
    ours = {row["test"]: row for row in entry["tables"]["tests"]}
    table = Table(title=f"{args.run_dir.name}: the first {len(sentences)} validation sentences; pass rate (cases)")
    for column in ("test", "fmtool", "LangTest"):
        table.add_column(column, justify="right")
    for name in args.tests:
        mine, theirs = ours.get(name), langtest["tests"].get(name)
        table.add_row(name, f"{mine['pass_rate']:.3f} ({mine['applicable']})" if mine and mine["applicable"] else "n/a",
                      f"{theirs['passed'] / theirs['cases']:.3f} ({theirs['cases']})" if theirs and theirs["cases"] else "n/a")
    table.add_row("wall seconds", f"{fmtool_seconds:.1f}", f"{langtest['seconds']:.1f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
