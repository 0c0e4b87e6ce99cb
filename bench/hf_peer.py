"""The peer recipe, in a child process: HF Trainer (run_ner.py style) and pipeline("token-classification").

Prints one JSON line: train samples/s and seconds, eval sentences/s, dev F1, predict sentences/s and the
predicted entities (for the agreement check), peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
from seqeval.metrics import f1_score
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)

from bench.common import read_sentences


def align(tokenizer, sentences, label2id, max_length):
    encoded = tokenizer([s.tokens for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    rows = []
    for i, sentence in enumerate(sentences):
        word_ids, previous, labels = encoded.word_ids(i), None, []
        for word in word_ids:
            # first sub-token of each word carries the label; -100 elsewhere (run_ner.py, label_all_tokens=False)
            labels.append(-100 if word is None or word == previous else label2id[sentence.tags[word]])
            previous = word
        rows.append(
            {"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i], "labels": labels}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-dev", type=int, default=None)
    parser.add_argument("--predict-model", required=True, help="model directory the pipeline predicts with")
    parser.add_argument("--predict-sentences", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--sampler", choices=["group_by_length", "random"], default="group_by_length")
    parser.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa")
    args = parser.parse_args()

    train = read_sentences(args.train)[: args.limit_train]
    dev = read_sentences(args.dev)[: args.limit_dev]
    labels = sorted({t for s in train for t in s.tags}, key=lambda t: (t != "O", t[2:], t))
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label2id,
        attn_implementation=args.attention,
    )
    training_args = TrainingArguments(
        output_dir="/tmp/fmtool-bench-hf",
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        weight_decay=0.01,
        seed=args.seed,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        train_sampling_strategy=args.sampler,
        bf16=args.precision == "bf16",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    train_rows, dev_rows = align(tokenizer, train, label2id, 128), align(tokenizer, dev, label2id, 128)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_rows,
        eval_dataset=dev_rows,
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    output = trainer.train()
    started = time.perf_counter()
    trainer.evaluate(dev_rows)
    eval_seconds = time.perf_counter() - started
    # with group_by_length, transformers 5 also batches evaluation by length in shuffled order, which scrambles
    # trainer.predict's rows; F1 comes from a second, sequential pass (untimed) whose rows match the sentences
    trainer.args.train_sampling_strategy = "random"
    prediction = trainer.predict(dev_rows)
    predicted = np.argmax(prediction.predictions, axis=-1)
    # the rows' own labels mark the first sub-tokens (the returned label_ids are padded with 0, not -100)
    y_pred = [
        [labels[p] for p, gold_id in zip(row, gold["labels"]) if gold_id != -100]
        for row, gold in zip(predicted, dev_rows)
    ]
    y_true = [s.tags[: len(p)] for s, p in zip(dev, y_pred)]

    texts = [" ".join(s.tokens) for s in read_sentences(args.dev)[: args.predict_sentences]]
    tagger = pipeline("token-classification", model=args.predict_model, aggregation_strategy="first", device=-1)
    started = time.perf_counter()
    tagged = tagger(texts, batch_size=32)
    predict_seconds = time.perf_counter() - started
    entities = [[[e["entity_group"], int(e["start"]), int(e["end"])] for e in row] for row in tagged]
    print(
        json.dumps(
            {
                "train_seconds": output.metrics["train_runtime"],
                "train_samples_per_second": len(train) * args.epochs / output.metrics["train_runtime"],
                "eval_sentences_per_second": len(dev) / eval_seconds,
                "dev_f1": f1_score(y_true, y_pred),
                "predict_sentences_per_second": len(texts) / predict_seconds,
                "entities": entities,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
