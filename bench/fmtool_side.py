"""fmtool's side of bench/speed.py, in a child process: train, evaluate, predict; one JSON line out."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from bench.common import read_sentences
from fmtool.config import to_typed
from fmtool.configure import compose_train_config, validate
from fmtool.pipeline import run_training
from fmtool.predict import LoadedRun
from fmtool.runs import RunDir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--predict-sentences", type=int, default=1000)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = validate(
        to_typed(
            compose_train_config(
                [
                    "+task=ner",
                    "dataset=conll2003",
                    f"dataset.data_dir={args.data_dir}",
                    "audit=none",
                    "trainer.progress=false",
                    *args.overrides,
                ]
            )
        )
    )
    run = RunDir.create(args.run_dir, cfg)
    results = run_training(cfg, run)
    loaded = LoadedRun.load(run.path)
    dev = run.load_split("validation")
    loaded.evaluate(dev[:64])  # warm-up, as the peer's evaluation follows its training in one process
    started = time.perf_counter()
    metrics, _ = loaded.evaluate(dev)
    eval_seconds = time.perf_counter() - started
    texts = [
        " ".join(s.tokens)
        for s in read_sentences(Path(args.data_dir) / cfg.dataset.validation_file)[: args.predict_sentences]
    ]
    started = time.perf_counter()
    records = loaded.predict_texts(texts)
    predict_seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "train_seconds": results["train"]["seconds"],
                "train_samples_per_second": results["train"]["samples_per_second"],
                "eval_sentences_per_second": len(dev) / eval_seconds,
                "dev_f1": metrics["f1"],
                "predict_sentences_per_second": len(texts) / predict_seconds,
                "entities": [[[e["type"], e["start"], e["end"]] for e in r["entities"]] for r in records],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": torch.get_num_threads(),
                "model_dir": str(run.model_dir),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
