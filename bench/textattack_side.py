"""TextAttack's side of bench/attack.py, run by the Python of TextAttack's own environment (its pins clash with
fmtool's): DeepWordBug (Gao et al. 2018) as TextAttack ships it, on a model directory and a JSONL of
{"text", "label"} rows, under a query budget. Prints one JSON object with TextAttack's figures and the time.

    python bench/textattack_side.py MODEL_DIR examples.jsonl --query-budget 200
"""

from __future__ import annotations

import argparse
import json
import time

import textattack
import transformers
from textattack.attack_recipes import DeepWordBugGao2018
from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("examples")
    parser.add_argument("--query-budget", type=int, default=200)
    args = parser.parse_args()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(args.model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model_dir)
    label_ids = {label: int(i) for label, i in model.config.label2id.items()}
    rows = [json.loads(line) for line in open(args.examples, encoding="utf-8")]
    dataset = textattack.datasets.Dataset([(row["text"], label_ids[row["label"]]) for row in rows])
    attack = DeepWordBugGao2018.build(textattack.models.wrappers.HuggingFaceModelWrapper(model, tokenizer))
    attack_args = textattack.AttackArgs(
        num_examples=len(rows), query_budget=args.query_budget, disable_stdout=True, silent=True, random_seed=42
    )
    started = time.perf_counter()
    results = textattack.Attacker(attack, dataset, attack_args).attack_dataset()
    seconds = time.perf_counter() - started
    succeeded = [r for r in results if isinstance(r, SuccessfulAttackResult)]
    attacked = [r for r in results if not isinstance(r, SkippedAttackResult)]
    perturbed = [
        len(r.original_result.attacked_text.all_words_diff(r.perturbed_result.attacked_text))
        / max(len(r.original_result.attacked_text.words), 1)
        for r in succeeded
    ]
    print(
        json.dumps(
            {
                "examples": len(results),
                "original_accuracy": len(attacked) / len(results),
                "accuracy_under_attack": sum(isinstance(r, FailedAttackResult) for r in results) / len(results),
                "attack_success_rate": len(succeeded) / max(len(attacked), 1),
                "average_words_perturbed": sum(perturbed) / max(len(perturbed), 1),
                "average_queries": sum(r.num_queries for r in attacked) / max(len(attacked), 1),
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
