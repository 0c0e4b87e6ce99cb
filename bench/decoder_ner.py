"""A small GPT pre-trained on CoNLL-2003's words, fine-tuned for CoNLL-2003 NER with causal and with bidirectional
attention, beside MiniLM fine-tuned the same way.

    python -m bench.decoder_ner --data ../shared/data                # full train and dev sets
    python -m bench.decoder_ner --data ../shared/data --quick        # a few hundred sentences: checks the script

The GPT (GPT-2 architecture, --layers x --width, a byte-level BPE vocabulary of --vocab learnt on the corpus) is
pre-trained from scratch with `+task=clm` on the training sentences' words, then fine-tuned for NER twice from that
checkpoint: with its causal mask (each token sees only the words before it) and with `model.bidirectional=true`.
Each run is the fmtool CLI in its own process. One table: dev F1, train seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def _train(folder: Path, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "fmtool", "train", *overrides, "trainer.progress=false", f"hydra.run.dir={folder}"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((folder / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the shared data folder (holds conll2003/)")
    parser.add_argument("--train", type=int, default=None, help="training sentences (default: all)")
    parser.add_argument("--dev", type=int, default=None, help="dev sentences (default: all)")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="NER fine-tuning epochs")
    parser.add_argument("--gpt-lr", type=float, default=3e-4, help="the GPT's learning rate, pre-training and NER")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.train, args.dev, args.pretrain_epochs, args.epochs = 300, 100, 1, 1
    conll = Path(args.data).resolve() / "conll2003"
    sizes = [
        *([f"dataset.max_train_examples={args.train}"] if args.train else []),
        *([f"dataset.max_eval_examples={args.dev}"] if args.dev else []),
        f"seed={args.seed}",
        "audit=none",
    ]
    ner = ["+task=ner", "dataset=conll2003", f"dataset.data_dir={conll}", f"trainer.epochs={args.epochs}", *sizes]
    gpt = [
        "model=tiny_gpt",
        f"model.config_overrides.n_embd={args.width}",
        f"model.config_overrides.n_layer={args.layers}",
        f"model.config_overrides.n_head={args.width // 64}",
        f"optimizer.lr={args.gpt_lr}",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        pretrained = _train(
            folder / "clm",
            [
                "+task=clm",
                "dataset=conll2003_words",
                f"dataset.data_dir={conll}",
                f"model.tokenizer_vocab_size={args.vocab}",
                f"trainer.epochs={args.pretrain_epochs}",
                *gpt,
                *sizes,
            ],
        )
        perplexity = pretrained["after"]["validation"]["perplexity"]
        rows.append(("GPT pre-training (clm)", "causal", f"perplexity {perplexity:.1f}", pretrained["train"]))
        start = f"model.name={folder / 'clm' / 'model'}"
        for attention, extra in (("causal", []), ("bidirectional", ["model.bidirectional=true"])):
            results = _train(folder / attention, [*ner, start, f"optimizer.lr={args.gpt_lr}", *extra])
            rows.append(("GPT -> NER", attention, f"F1 {results['after']['validation']['f1']:.3f}", results["train"]))
        minilm = _train(folder / "minilm", ner)
        rows.append(
            ("MiniLM -> NER", "bidirectional", f"F1 {minilm['after']['validation']['f1']:.3f}", minilm["train"])
        )
    print(f"{'model':24} {'attention':14} {'dev':18} {'train s':>8} {'parameters':>11}")
    for model, attention, figure, train in rows:
        print(f"{model:24} {attention:14} {figure:18} {train['seconds']:8.0f} {train['trainable_parameters']:11,}")


if __name__ == "__main__":
    main()
