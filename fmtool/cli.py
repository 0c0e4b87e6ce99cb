"""fmtool's command line: a thin dispatcher; every command is a call into the library.

fmtool train +task=ner [hydra overrides | -m sweeps | --cfg job]
fmtool resume RUN_DIR [--trust-remote-code] [--allow-pickle]
fmtool validate +task=ner [overrides]
fmtool eval RUN_DIR [--split NAME | --file PATH]
fmtool predict RUN_DIR [TEXT ...] [--file PATH|-] [--output PATH]
fmtool explain RUN_DIR [TEXT ...] [--file PATH|-] [--method M] [--output PATH|-] [--html PATH]
fmtool compare RUN_DIR... | SWEEP_DIR [--sort KEY] [--csv F] [--html F] [--gate]
fmtool list [groups|GROUP]
fmtool data [list | install NAME PATH]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from fmtool.config.schema import Precision
from fmtool.dataset import formats
from fmtool.errors import FmtoolError, TrainingStopped, one_line
from fmtool.explain import METHODS

log = logging.getLogger("fmtool")

# Hydra's own flags that make `train` print or sweep instead of running a single job
_HYDRA_INFO_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve", "--package", "-p")
_MULTIRUN_FLAGS = ("-m", "--multirun")
# the positional list each command takes after its options
_TRAILING_LISTS = {"audit": "overrides", "predict": "texts", "explain": "texts"}
_PRECISION_HELP = (
    "default: the run's trainer.precision; fp32 gives a full-precision pipeline()'s entities; bf16 (auto on CPUs with "
    "AMX) is faster there and can tip a borderline word"
)


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def train_and_audit(cfg, run, *, resume: bool = False) -> None:
    """Train (or resume) into `run`, then audit it; on data-parallel ranks other than 0, train only. The configured
    tracker (logger=...) follows training as it goes and receives the report."""
    from omegaconf import OmegaConf

    from fmtool.auditing import audit_loaded
    from fmtool.logger import open_tracker
    from fmtool.model.build import training_policy
    from fmtool.pipeline import run_training
    from fmtool.predict import LoadedRun
    from fmtool.report.console import RichProgress, print_report, print_results
    from fmtool.runs import FAILED
    from fmtool.trainer.distributed import from_env
    from fmtool.trainer.loop import SilentProgress

    main_rank = from_env().is_main
    if not main_rank:
        run_training(cfg, run, SilentProgress(), resume=resume)
        return
    try:
        tracker = open_tracker(cfg.logger, run, OmegaConf.to_container(OmegaConf.structured(cfg)))
    except FmtoolError as error:
        run.finish(FAILED, error=str(error))
        raise
    try:
        results = run_training(
            cfg,
            run,
            RichProgress() if cfg.trainer.progress else SilentProgress(),
            resume=resume,
            on_log=tracker.log_metrics,
        )
        print_results(results, str(run.path))
        report = None
        if cfg.trainer.save_model:
            # the policy the caller's own training config states for its model
            loaded = LoadedRun.load(run.path, policy=training_policy(cfg.model))
            report = audit_loaded(loaded, cfg.audit, run.path, attribution=cfg.attribution)
            print_report(report)
        else:
            log.warning("audits skipped: they read the saved model, and trainer.save_model=false")
        tracker.log_outcome(run, report)
    finally:
        tracker.close(run.status()["state"] if run.status_file.is_file() else "failed")


def _train_job(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fmtool.config import to_typed
    from fmtool.configure import validate
    from fmtool.runs import ReplicaRun, RunDir
    from fmtool.sweep import record_job
    from fmtool.trainer.distributed import from_env

    hydra = HydraConfig.get()
    path = hydra.runtime.output_dir
    in_sweep = hydra.mode == RunMode.MULTIRUN
    if in_sweep:
        record_job(path, list(hydra.overrides.task))
    try:
        typed = validate(to_typed(cfg))
        train_and_audit(typed, RunDir.create(path, typed) if from_env().is_main else ReplicaRun(path))
    except FmtoolError as error:
        log.error("%s", error)
        print(f"fmtool: error: {error}", file=sys.stderr)
        if in_sweep and not isinstance(error, TrainingStopped):
            # this job alone fails: the sweep's other jobs still run, and its table names this one
            record_job(path, list(hydra.overrides.task), error=str(error))
            return
        sys.exit(error.exit_code)
    except Exception as error:
        if not in_sweep:
            raise
        log.exception("sweep job %s failed", path)
        record_job(path, list(hydra.overrides.task), error=f"{type(error).__name__}: {one_line(error)}")


def _distributed_overrides(argv: Sequence[str], device: str) -> list[str]:
    """Under torchrun: join the process group and give every rank rank 0's run directory."""
    from fmtool.trainer import distributed

    dist = distributed.from_env()
    if not dist.enabled:
        return []
    distributed.init(dist, device)
    overrides = (
        []
        if any(a.startswith("hydra.run.dir=") for a in argv)
        else [f"hydra.run.dir=${{paths.runs_dir}}/${{task.name}}/{distributed.shared_timestamp(dist)}"]
    )
    if not dist.is_main:
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return overrides


def train(argv: Sequence[str]) -> int:
    import hydra

    from fmtool.config import config_dir
    from fmtool.configure import load_train_config, setup
    from fmtool.sweep import SweepTable

    setup()
    # --overwrite reads like a command-line flag; it is the config key overwrite=true, so sweeps can set it too
    argv = ["overwrite=true" if arg == "--overwrite" else arg for arg in argv]
    wants_info = any(arg.split("=")[0] in _HYDRA_INFO_FLAGS for arg in argv)
    device = "auto"
    if (
        not wants_info
        and not any(arg in _MULTIRUN_FLAGS for arg in argv)
        and not any(a.startswith(("--config-dir", "-cd", "--config-name", "-cn")) for a in argv)
    ):
        # fail in a second, with exit code 2, before Hydra creates a run directory or writes .hydra/ into one
        typed = load_train_config(argv)
        device = typed.trainer.device
        chosen = [arg.split("=", 1)[1] for arg in argv if arg.startswith("hydra.run.dir=")]
        if chosen:
            from fmtool.runs import RunDir

            RunDir(chosen[-1]).refuse_unless_free(typed.overwrite)
    _quiet_libraries()
    sys.argv = ["fmtool train", *argv, *_distributed_overrides(argv, device)]
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_train_job)()
    return 1 if SweepTable.failed else 0


def resume_command(argv: Sequence[str]) -> int:
    """Continue an interrupted run from its last checkpoint, in place, with its saved config and data."""
    from fmtool.model.build import check_sources
    from fmtool.runs import ReplicaRun, RunDir
    from fmtool.trainer.distributed import from_env, init

    flags = {"--trust-remote-code": "trust_remote_code", "--allow-pickle": "allow_pickle"}
    paths = [a for a in argv if a not in flags]
    if len(paths) != 1 or paths[0].startswith("-"):
        raise FmtoolError("usage: fmtool resume RUN_DIR [--trust-remote-code] [--allow-pickle]")
    dist = from_env()
    saved = RunDir(paths[0]).load_config()
    # the run's saved config never decides whether code in the directories it names may run: this command's flags do
    cfg = replace(saved, model=replace(saved.model, **{key: flag in argv for flag, key in flags.items()}))
    check_sources(cfg.model)
    init(dist, cfg.trainer.device)
    run = RunDir.reopen(paths[0]) if dist.is_main else ReplicaRun(paths[0])
    _quiet_libraries()
    train_and_audit(cfg, run, resume=True)
    return 0


def validate_command(argv: Sequence[str]) -> int:
    from fmtool.configure import load_train_config

    load_train_config(argv)
    print("config is valid")
    return 0


def _positive_int(text: str) -> int:
    """argparse type for a count: a whole number of at least 1 (argparse turns the error into exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def _add_load_policy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a model directory's own Python code (auto_map in its config) run; off whatever its saved config says",
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="load pickle-format weights (pytorch_model.bin), which can run code"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmtool", description="Train BERT-style NER / classification models and audit them."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="train a model: fmtool train +task=ner [overrides]", add_help=False)
    commands.add_parser(
        "resume", help="continue an interrupted run from its checkpoint: fmtool resume RUN_DIR", add_help=False
    )
    commands.add_parser("validate", help="check a config without running it", add_help=False)

    evaluate = commands.add_parser("eval", help="evaluate a finished run on one of its splits or a new file")
    evaluate.add_argument("run_dir", type=Path)
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument(
        "--split", default=None, help="a split saved in the run (validation, test); default: validation"
    )
    source.add_argument("--file", type=Path, default=None, help="a data file in the run's dataset format (or --format)")
    evaluate.add_argument(
        "--format",
        choices=formats.format_names(examples=True, files=True),
        default=None,
        help="default: the run's dataset format, else the file suffix",
    )
    evaluate.add_argument("--batch-size", type=_positive_int, default=None)
    _add_load_policy(evaluate)
    evaluate.add_argument("--precision", type=Precision, choices=list(Precision), default=None, help=_PRECISION_HELP)

    predict = commands.add_parser("predict", help="label new text with a finished run's model, as JSONL")
    predict.add_argument("run_dir", type=Path)
    predict.add_argument("texts", nargs="*", help="texts to label; none: read --file, or stdin")
    predict.add_argument("--file", default=None, help="one text per line; '-' for stdin")
    # a causal-LM run continues each text; defaults: the run's task.max_new_tokens, task.temperature, task.top_p
    predict.add_argument("--max-new-tokens", type=int, default=None, help="clm: tokens to add (task.max_new_tokens)")
    predict.add_argument("--temperature", type=float, default=None, help="clm: 0 is greedy (task.temperature)")
    predict.add_argument("--top-p", type=float, default=None, help="clm: nucleus sampling's share (task.top_p)")
    predict.add_argument("--output", type=Path, default=None, help="write JSONL here instead of stdout")
    predict.add_argument("--batch-size", type=_positive_int, default=None)
    _add_load_policy(predict)
    predict.add_argument("--precision", type=Precision, choices=list(Precision), default=None, help=_PRECISION_HELP)

    explain = commands.add_parser(
        "explain", help="which words drove each prediction (Captum attributions): terminal, JSONL, HTML"
    )
    explain.add_argument("run_dir", type=Path)
    explain.add_argument("texts", nargs="*", help="texts to explain; none: read --file, or stdin")
    explain.add_argument("--file", default=None, help="one text per line; '-' for stdin")
    explain.add_argument("--method", choices=METHODS, default=METHODS[0])
    explain.add_argument(
        "--steps", type=_positive_int, default=32, help="integration steps of integrated gradients (default: 32)"
    )
    explain.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write word attributions as JSONL here ('-': to stdout, instead of the coloured text)",
    )
    explain.add_argument("--html", type=Path, default=None, help="write an HTML fragment of the coloured text here")
    explain.add_argument("--batch-size", type=_positive_int, default=None)
    _add_load_policy(explain)
    explain.add_argument(
        "--precision",
        type=Precision,
        choices=list(Precision),
        default=None,
        help="default: fp32 (bf16 gradients blur the attributions)",
    )

    audit = commands.add_parser(
        "audit", help="audit a finished run (or a model directory with --task) and write its report"
    )
    audit.add_argument("path", type=Path, help="a run directory, or a Hugging Face model directory with --task")
    audit.add_argument(
        "overrides",
        nargs="*",
        help=(
            "audit=[fairness,bias] | audit=none | audit.<family>.<key>=value | dataset.<key>=value (how --split files "
            "are read)"
        ),
    )
    audit.add_argument("--strict", action="store_true", help="exit 1 when any check fails (for CI gates)")
    audit.add_argument(
        "--inconclusive",
        choices=("pass", "fail"),
        default="pass",
        help="with --strict, how a check whose interval straddles its threshold counts (default: pass)",
    )
    audit.add_argument(
        "--task",
        default=None,
        metavar="TASK",
        help="the task of a plain model directory, as in +task=TASK (fmtool list task; mlm: a masked LM)",
    )
    audit.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where a model directory's audit goes (default: runs/audit/<name>/<time>)",
    )
    audit.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a model directory's labelled data, as a run's saved split: train, validation or test "
        "(format by suffix: .conll for NER, .csv/.tsv/.jsonl with text and label columns, or "
        "dataset.text_column=... among the overrides); repeatable",
    )
    audit.add_argument(
        "--base-model",
        default=None,
        metavar="NAME",
        help="the model a model directory was fine-tuned from (hub id or path): twins such as the membership "
        "audit's reference start there; without it, audits that need one skip it",
    )
    audit.add_argument(
        "--attribute",
        action="store_true",
        help="also audit probe twins of the foundation model (frozen, head trained) on the same items and say, per "
        "check, whether the finding is inherited, introduced, amplified or mitigated by the fine-tuning",
    )
    audit.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="--attribute: seeds per arm (the run and its seed twins; as many probe twins); default 1",
    )
    audit.add_argument("--batch-size", type=_positive_int, default=None)
    _add_load_policy(audit)

    comparing = commands.add_parser(
        "compare", help="compare finished runs or a sweep: table, Pareto front, --gate PARENT CHILD"
    )
    comparing.add_argument(
        "runs", type=Path, nargs="+", help="run directories, or a sweep folder standing for the runs in it"
    )
    comparing.add_argument(
        "--sort", default=None, help="a metric, objective or family.check to sort by (default: f1 or accuracy)"
    )
    comparing.add_argument("--csv", type=Path, default=None)
    comparing.add_argument("--html", type=Path, default=None)
    comparing.add_argument("--markdown", type=Path, default=None)
    comparing.add_argument("--gate", action="store_true", help="exit 1 when the second run regresses on the first")
    comparing.add_argument(
        "--metric-tolerance",
        type=float,
        default=0.01,
        help="--gate: how much lower a validation metric may be (default 0.01)",
    )
    comparing.add_argument(
        "--check-tolerance",
        type=float,
        default=0.02,
        help="--gate: how much worse an audit figure may be where the runs share no item outcomes (default 0.02)",
    )
    comparing.add_argument(
        "--margin",
        type=float,
        default=0.01,
        help="--gate: the smallest significant harmful difference on shared items that regresses (default 0.01)",
    )

    data = commands.add_parser(
        "data", help="the audit probes: where each lives and its licence; install one fmtool cannot ship"
    )
    data.add_argument("action", nargs="?", choices=["list", "install", "download"], default="list")
    data.add_argument("name", nargs="?", default=None, help="install, download: the probe (see fmtool data list)")
    data.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=None,
        help="install: your copy of its file, or a folder holding its files",
    )
    data.add_argument("--all", action="store_true", help="download: every probe")
    data.add_argument(
        "--mirror",
        default=None,
        help="download: a mirror laid out as MIRROR/<probe>/<file> instead of the published locations "
        "(also $FMTOOL_PROBE_MIRROR)",
    )

    listing = commands.add_parser("list", help="list config groups and their options")
    listing.add_argument("group", nargs="?", default=None)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] == "train":
            return train(argv[1:])
        if argv and argv[0] == "resume":
            return resume_command(argv[1:])
        if argv and argv[0] == "validate":
            return validate_command(argv[1:])
        parser = _parser()
        args, extra = parser.parse_known_args(argv)
        trailing = _TRAILING_LISTS.get(args.command)
        if trailing and not any(word.startswith("-") for word in extra):
            # list items after an option (--strict audit=[bias], --precision fp32 "text"): argparse leaves those in
            # `extra`
            setattr(args, trailing, [*getattr(args, trailing), *extra])
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        _quiet_libraries()
        from fmtool.commands import COMMANDS

        return COMMANDS[args.command](args)
    except FmtoolError as error:
        print(f"fmtool: error: {error}", file=sys.stderr)
        return error.exit_code
