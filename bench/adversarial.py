"""Robustness bought by adversarial training, judged by the attacks fmtool reports: clean dev accuracy, accuracy
under the `attack` audit's black-box attack (what a hostile user can do with queries), and accuracy under a
white-box PGD on the input embeddings (the perturbation the methods train against).

    python -m bench.adversarial                      # default model, SST-2 slice, none / fgm / pgd / freelb
    python -m bench.adversarial --train-examples 2000 --methods none pgd

Every method trains the same model on the same examples with the same seed, hyper-parameters and
number of updates. The black-box attack is the `attack` audit with its defaults (char + word substitutions,
at most 200 queries and 20% of the words per sentence) on the same --attack-examples dev sentences for
every model; the white-box attack is a PGD of --attack-steps steps on the input-embedding output,
L2-bounded per example by each --attack-epsilon. Prints one table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import transformers
from rich.console import Console
from rich.table import Table

from fmtool.adversarial import attack, perturbed_embeddings
from fmtool.auditing import audit_loaded
from fmtool.config import to_typed
from fmtool.configure import compose_train_config, validate
from fmtool.dataset.batching import collate, inference_batches
from fmtool.pipeline import run_training
from fmtool.predict import LoadedRun
from fmtool.runs import RunDir

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def accuracy_under_attack(loaded: LoadedRun, examples, epsilon: float, steps: int, batch_size: int = 64) -> float:
    """Share of examples still classified correctly after the PGD attack (epsilon 0: clean accuracy)."""
    label2id = {label: i for i, label in enumerate(loaded.labels)}
    features = loaded.task.encode(examples, loaded.tokenizer, label2id, loaded.cfg.trainer)
    model = loaded.model.eval()
    hidden = model.get_input_embeddings().embedding_dim
    correct = 0
    for indices in inference_batches([len(f.input_ids) for f in features], batch_size):
        batch = collate([features[i] for i in indices], loaded.tokenizer.pad_token_id)
        delta = None
        if epsilon > 0:

            def loss_with(perturbation, batch=batch):
                with perturbed_embeddings(model, perturbation):
                    return model(**batch).loss

            delta = attack(
                loss_with,
                torch.zeros(*batch["input_ids"].shape, hidden),
                batch["attention_mask"].unsqueeze(-1).float(),
                epsilon=epsilon,
                step_size=epsilon / 4,
                steps=steps,
            )
        with torch.inference_mode(), perturbed_embeddings(model, delta):
            correct += int((model(**batch).logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(SHARED))
    parser.add_argument("--methods", nargs="+", default=["none", "fgm", "pgd", "freelb"])
    parser.add_argument("--train-examples", type=int, default=4000)
    parser.add_argument("--eval-examples", type=int, default=872)
    parser.add_argument("--attack-epsilon", type=float, nargs="+", default=[0.1, 0.2, 0.5])
    parser.add_argument("--attack-steps", type=int, default=5)
    parser.add_argument(
        "--attack-examples",
        type=int,
        default=200,
        help="dev sentences the black-box attack tries (the same for every model)",
    )
    parser.add_argument("overrides", nargs="*", help="extra fmtool overrides for every method")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    table = Table(
        title=f"SST-2, default model, {args.train_examples} train examples, 1 epoch, seed 42; black-box attack on "
        f"{args.attack_examples} "
        f"dev sentences; PGD-{args.attack_steps} on embeddings"
    )
    for column in [
        "adversarial",
        "train s",
        "train samples/s",
        "clean acc",
        "black-box acc",
        "attack success",
        "queries",
        *[f"PGD acc @ eps {e}" for e in args.attack_epsilon],
    ]:
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods:
            cfg = validate(
                to_typed(
                    compose_train_config(
                        [
                            "+task=classification",
                            "dataset=sst2",
                            f"dataset.data_dir={args.data_dir}",
                            f"dataset.max_train_examples={args.train_examples}",
                            f"dataset.max_eval_examples={args.eval_examples}",
                            "trainer.epochs=1",
                            "trainer.progress=false",
                            "audit=none",
                            f"adversarial={method}",
                            *args.overrides,
                        ]
                    )
                )
            )
            run = RunDir.create(Path(scratch) / method, cfg)
            trained = run_training(cfg, run)["train"]
            loaded = LoadedRun.load(run.path)
            dev = run.load_split("validation")
            black_box = audit_loaded(
                loaded, {"attack": {"max_examples": args.attack_examples}}, Path(scratch) / f"{method}-audit"
            )["audits"][0]["summary"]
            white_box = [accuracy_under_attack(loaded, dev, e, args.attack_steps) for e in args.attack_epsilon]
            table.add_row(
                method,
                f"{trained['seconds']:.0f}",
                f"{trained['samples_per_second']:.1f}",
                f"{accuracy_under_attack(loaded, dev, 0.0, 0):.4f}",
                f"{black_box['accuracy_under_attack']:.4f}",
                f"{black_box['attack_success_rate']:.3f}",
                f"{black_box['average_queries']:.1f}",
                *[f"{s:.4f}" for s in white_box],
            )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
