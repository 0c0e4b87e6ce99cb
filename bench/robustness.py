"""fmtool's `robustness` audit side by side with LangTest on the same NER model and sentences.

    python -m bench.robustness RUN_DIR                  # a fine-tuned NER run (CoNLL-2003 in the README)
    python -m bench.robustness RUN_DIR --examples 500 --langtest-python .venv-langtest/bin/python

LangTest runs in its own environment: its Harness with the Hugging Face hub on the run's model directory and
the first --examples sentences of the run's validation split written as a CoNLL file, for the tests both tools
name alike. fmtool runs its audit on the same sentences. Both pass a case when the prediction on the
perturbed text equals the model's own prediction on the original; they differ in the edits' details (each
tool's typo tables, which words it touches) and in how NER predictions are compared after an edit changes
words: fmtool carries the original's entities through the edit, LangTest compares entity lists. Prints one
table: pass rate and number of cases per test, and each tool's wall time from loading the model to its report;
then how much of fmtool's time the model's own predictions take (the distinct inputs it read), and the least
those forward passes could take: their arithmetic (2 x non-embedding parameters x tokens) at the matrix-multiply
throughput this machine reaches, measured here.

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

import torch
import transformers
from rich.console import Console
from rich.table import Table

from fmtool.auditing import audit_loaded
from fmtool.predict import LoadedRun
from fmtool.runs import RunDir

SIDE = Path(__file__).resolve().parent / "langtest_side.py"
SHARED_TESTS = [
    "uppercase",
    "lowercase",
    "titlecase",
    "add_typo",
    "add_ocr_typo",
    "add_punctuation",
    "strip_punctuation",
    "add_contraction",
    "number_to_word",
    "american_to_british",
    "swap_entities",
]


def matmul_flops_per_second(repeats: int = 100) -> float:
    """Floating-point operations per second of a feed-forward-sized fp32 matrix product here, with torch's threads."""
    rows, inner, cols = 2048, 384, 1536
    left, right = torch.randn(rows, inner), torch.randn(inner, cols)
    for _ in range(5):
        left @ right
    started = time.perf_counter()
    for _ in range(repeats):
        left @ right
    return 2 * rows * inner * cols * repeats / (time.perf_counter() - started)


class TimedPredictions:
    """Wraps LoadedRun.predict_each: the inputs the audited model read and the seconds it took."""

    def __init__(self, predict_each) -> None:
        self.predict_each, self.examples, self.seconds = predict_each, [], 0.0

    def __call__(self, examples, model=None):
        if model is not None:
            return self.predict_each(examples, model)
        started = time.perf_counter()
        predicted = self.predict_each(examples)
        self.seconds += time.perf_counter() - started
        self.examples.extend(examples)
        return predicted


def forward_flops(loaded: LoadedRun, examples) -> float:
    """2 x parameters x tokens: the encoder's and head's weight products, a lower bound (the attention scores' own
    products are left out, and embedding lookups cost none)."""
    tokens = sum(
        len(ids)
        for ids in loaded.tokenizer(
            [list(e.tokens) for e in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=loaded.cfg.trainer.max_length,
        )["input_ids"]
    )
    products = sum(p.numel() for name, p in loaded.model.named_parameters() if "embeddings" not in name)
    return 2.0 * products * tokens


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
        done = subprocess.run(
            [args.langtest_python, str(SIDE), str(args.run_dir / "model"), str(conll), *args.tests],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"LangTest failed:\n{done.stderr[-3000:]}")
        langtest = json.loads(done.stdout.strip().splitlines()[-1])
        # both sides' times include loading the model, as LangTest's Harness does
        started = time.perf_counter()
        loaded = LoadedRun.load(args.run_dir)
        timed = loaded.predict_each = TimedPredictions(loaded.predict_each)
        entry = audit_loaded(
            loaded, {"robustness": {"tests": args.tests, "max_examples": args.examples}}, Path(scratch) / "fmtool"
        )["audits"][0]
        fmtool_seconds = time.perf_counter() - started
    ours = {row["test"]: row for row in entry["tables"]["tests"]}
    table = Table(title=f"{args.run_dir.name}: the first {len(sentences)} validation sentences; pass rate (cases)")
    for column in ("test", "fmtool", "LangTest"):
        table.add_column(column, justify="right")
    for name in args.tests:
        mine, theirs = ours.get(name), langtest["tests"].get(name)
        table.add_row(
            name,
            f"{mine['pass_rate']:.3f} ({mine['applicable']})" if mine and mine["applicable"] else "n/a",
            f"{theirs['passed'] / theirs['cases']:.3f} ({theirs['cases']})" if theirs and theirs["cases"] else "n/a",
        )
    table.add_row("wall seconds", f"{fmtool_seconds:.1f}", f"{langtest['seconds']:.1f}")
    table.add_row(f"of which the model's predictions ({len(timed.examples)} inputs)", f"{timed.seconds:.1f}", "")
    peak = matmul_flops_per_second()
    table.add_row(
        f"those at {peak / 1e9:.0f} GFLOP/s (peak matmul)", f"{forward_flops(loaded, timed.examples) / peak:.1f}", ""
    )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
