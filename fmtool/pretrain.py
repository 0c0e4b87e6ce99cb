"""The language-model pre-training recipe: corpus -> (tokenizer) -> model -> held-out loss -> fit -> run directory.

The task says what is trained (its objective: masked LM for task=mlm, causal LM for task=clm): how documents are
packed into blocks, how a batch is made, the held-out loss. From scratch (model.random_init=true, optionally with
model.tokenizer_vocab_size to learn a vocabulary on the corpus) or continued, domain-adaptive pre-training of
model.name. The saved model/ is a language model that a fine-tuning run loads with model.name=RUN_DIR/model.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Callable, Optional

from fmtool.config.schema import TrainConfig
from fmtool.dataset.batching import InMemoryBatches
from fmtool.dataset.canaries import make_canaries, with_canaries
from fmtool.dataset.formats import iter_documents
from fmtool.dataset.mlm import StreamedBlocks, pack_blocks
from fmtool.dataset.splits import non_empty
from fmtool.model import build_model, load, load_tokenizer
from fmtool.model.build import special_token_ids, train_tokenizer, training_policy
from fmtool.runs import RunDir, environment
from fmtool.task import TASKS
from fmtool.trainer.checkpoint import checkpoint_step
from fmtool.trainer.distributed import from_env
from fmtool.trainer.loop import Progress, SilentProgress, fit
from fmtool.trainer.lora import is_adapted, merged
from fmtool.trainer.setup import finish_training, prepare_model, set_seed, training_figures, with_adapters

log = logging.getLogger(__name__)


def _documents(cfg: TrainConfig, file_key: str, limit):
    return itertools.islice(iter_documents(cfg.dataset, file_key), limit)


def _tokenizer(cfg: TrainConfig, run: RunDir, resume: bool):
    """model.tokenizer's, or with model.tokenizer_vocab_size one learnt on the corpus (kept in the run for resume)."""
    if not cfg.model.tokenizer_vocab_size:
        return load_tokenizer(cfg.model)
    if resume:
        return load.load_tokenizer(
            run.require(run.tokenizer_dir), training_policy(cfg.model), key=str(run.tokenizer_dir)
        )
    tokenizer = train_tokenizer(
        load_tokenizer(cfg.model),
        _documents(cfg, "train_file", cfg.dataset.max_train_examples),
        cfg.model.tokenizer_vocab_size,
    )
    log.info("tokenizer=<trained on %s> vocabulary=<%d>", cfg.dataset.name, len(tokenizer))
    run.save_tokenizer(tokenizer)
    return tokenizer


def pretrain_pipeline(
    cfg: TrainConfig,
    run: RunDir,
    progress: Progress = SilentProgress(),
    *,
    resume: bool = False,
    on_log: Optional[Callable[[dict[str, Any]], None]] = None,
) -> dict[str, Any]:
    set_seed(cfg.seed)
    dist = from_env()
    data = cfg.dataset
    tokenizer = _tokenizer(cfg, run, resume)
    task = TASKS.get(cfg.task.name)
    model = build_model(
        cfg.model,
        task.head,
        [],
        vocab_size=len(tokenizer),
        max_length=cfg.trainer.max_length,
        token_ids=special_token_ids(tokenizer),
    )
    model = with_adapters(model, cfg, task.peft_task_type)
    runtime, trainable = prepare_model(model, cfg)
    objective = task.objective(cfg.task, cfg.seed, tokenizer)

    validation_documents = non_empty(
        data, "validation_file", list(_documents(cfg, "validation_file", data.max_eval_examples)), "text"
    )
    validation = list(pack_blocks(validation_documents, tokenizer, cfg.trainer.max_length, objective.packing))
    if data.streaming:
        non_empty(data, "train_file", list(_documents(cfg, "train_file", 1)), "text")
        batches = StreamedBlocks(
            lambda: _documents(cfg, "train_file", data.max_train_examples),
            tokenizer,
            max_length=cfg.trainer.max_length,
            batch_size=cfg.trainer.batch_size,
            seed=cfg.seed,
            buffer_size=data.shuffle_buffer,
            packing=objective.packing,
        )
        corpus = {"train": {"source": data.train_file or data.hf_path, "streamed": True}}
    else:
        train_documents = non_empty(
            data, "train_file", list(_documents(cfg, "train_file", data.max_train_examples)), "text"
        )
        if cfg.task.canaries.repetitions:
            canaries = make_canaries(cfg.task.canaries, cfg.seed)
            train_documents = with_canaries(train_documents, canaries, cfg.seed)
            log.info("canaries=<%s> planted for the canary audit", ", ".join(f"x{c.repetitions}" for c in canaries))
        train_blocks = list(pack_blocks(train_documents, tokenizer, cfg.trainer.max_length, objective.packing))
        batches = InMemoryBatches(train_blocks, cfg.trainer.batch_size, seed=cfg.seed, grouped=False)
        corpus = {
            "train": {
                "documents": len(train_documents),
                "blocks": len(train_blocks),
                "tokens": sum(len(b.input_ids) for b in train_blocks),
                "canary_repetitions": list(cfg.task.canaries.repetitions),
            }
        }
    corpus["validation"] = {
        "documents": len(validation_documents),
        "blocks": len(validation),
        "tokens": sum(len(b.input_ids) for b in validation),
    }
    run.save_environment(environment(cfg.seed, str(runtime.device)))
    if not resume:
        if not data.streaming:
            run.save_documents("train", train_documents)
        run.save_documents("validation", validation_documents)
        run.save_corpus({"name": data.name, **corpus})

    def evaluate(trained) -> dict[str, Any]:
        """Held-out loss of the module fit trains (the model, or its sharded copy)."""
        progress.start("evaluate validation", len(validation))
        metrics = objective.held_out(trained, validation, runtime, progress.advance)
        progress.stop()
        return metrics

    if resume:
        before = run.load_results()["before"]
        run.truncate_metrics(after_step=checkpoint_step(run.checkpoint_dir))
    else:
        before = {"validation": evaluate(model)}
        run.save_results({"task": cfg.task.name, "before": before})
    run.drop_replaced()
    state = fit(
        objective.trained(model),
        batches,
        collate=objective.collate,
        loss_units=objective.loss_units,
        trainer=cfg.trainer,
        optimizer_cfg=cfg.optimizer,
        scheduler_cfg=cfg.scheduler,
        adversarial=cfg.adversarial,
        runtime=runtime,
        evaluate=evaluate,
        dist=dist,
        checkpoint_dir=run.checkpoint_dir,
        resume=resume,
        on_log=run.metrics_writer(on_log),
        progress=progress,
    )
    finish_training(model)
    after = {"validation": evaluate(model)}
    if cfg.trainer.save_model:
        if is_adapted(model):
            run.save_adapter(model)
        run.save_model(merged(model), tokenizer)
    results = {
        "task": cfg.task.name,
        "model": cfg.model.name or f"random-init {cfg.model.model_type}",
        "dataset": data.name,
        "labels": [],
        "data": corpus,
        "before": before,
        "after": after,
        "train": training_figures(state, cfg, trainable, dist.world_size),
    }
    run.save_results(results)
    return results
