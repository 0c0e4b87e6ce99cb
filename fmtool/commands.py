"""The non-Hydra subcommands (eval, predict, explain, audit, compare, list): argument handling and output at the
edge."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from fmtool.errors import FmtoolError


def _file_format(explicit: str | None, path: Path, run_format: str) -> str:
    """--format if given; else the run's own format when it reads one example per line; else the suffix's."""
    from fmtool.dataset.formats import FORMATS

    if explicit:
        return explicit
    if FORMATS.get(run_format).suffixes:
        return run_format
    return _format_by_suffix(
        path, "eval", f"; or pass --format ({', '.join(name for name in FORMATS if FORMATS.get(name).suffixes)})"
    )


def _format_by_suffix(path: Path, what: str, advice: str = "") -> str:
    from fmtool.dataset.formats import FORMATS, format_of_file

    by_suffix = format_of_file(path)
    if by_suffix is None:
        suffixes = sorted({suffix for name in FORMATS for suffix in FORMATS.get(name).suffixes})
        raise FmtoolError(f"{what}: cannot tell the format of {path} from its suffix ({', '.join(suffixes)}){advice}")
    return by_suffix


def _examples_in(path: Path, fmt: str, dataset, what: str) -> list:
    """The labelled examples of a file given on the command line, read as `fmt` with `dataset`'s column settings."""
    from fmtool.config.schema import DataFormat
    from fmtool.dataset.formats import read_examples

    if not path.is_file():
        raise FmtoolError(f"{what}: {path} not found")
    examples = read_examples(
        replace(dataset, format=DataFormat(fmt), data_dir=None, train_file=str(path)), "train_file"
    )
    if not examples:
        raise FmtoolError(f"{what}: {path} holds no examples")
    return examples


def load_policy(args: argparse.Namespace):
    """What loading a received run or model directory may do: the command's own flags decide, never a saved config."""
    from fmtool.model.load import LoadPolicy

    return LoadPolicy(trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)


def eval_command(args: argparse.Namespace) -> int:
    from fmtool.dataset.splits import to_model_labels
    from fmtool.predict import LoadedRun
    from fmtool.report.console import print_metrics
    from fmtool.runs import write_json
    from fmtool.task.base import headline

    loaded = LoadedRun.load(
        args.run_dir, policy=load_policy(args), batch_size=args.batch_size, precision=args.precision
    )
    if loaded.task.language_model:
        return _eval_language_model(loaded, args)
    if args.file is not None:
        fmt = _file_format(args.format, args.file, loaded.cfg.dataset.format.value)
        examples = _examples_in(args.file, fmt, loaded.cfg.dataset, "eval")
        examples = to_model_labels(
            f"eval --file {args.file}", examples, loaded.labels, dict(loaded.cfg.dataset.label_map)
        )
        name = args.file.stem
    else:
        name = args.split or "validation"
        examples = to_model_labels(f"eval --split {name}", loaded.run.load_split(name), loaded.labels, {})
    metrics, _ = loaded.evaluate(examples)
    out = loaded.run.eval_file(name)
    write_json(out, {"source": str(args.file or name), "examples": len(examples), "metrics": metrics})
    print_metrics(f"{loaded.run.path} · {name} ({len(examples)} examples)", metrics)
    print(json.dumps(headline(metrics)))
    return 0


def _eval_language_model(loaded, args: argparse.Namespace) -> int:
    """Held-out loss and perplexity (the task's objective) on the run's validation documents or a text file (one
    document per line)."""
    from fmtool.config.schema import DataFormat, DatasetConfig
    from fmtool.dataset.formats import iter_documents
    from fmtool.dataset.mlm import pack_blocks
    from fmtool.report.console import print_metrics
    from fmtool.runs import write_json
    from fmtool.task.base import headline

    path = args.file or loaded.run.documents_file(args.split or "validation")
    if not Path(path).is_file():
        raise FmtoolError(f"eval: {path} not found")
    documents = list(
        iter_documents(DatasetConfig(name="eval", format=DataFormat.text, train_file=str(path)), "train_file")
    )
    if not documents:
        raise FmtoolError(f"eval: {path} holds no text")
    tokenizer, cfg = loaded.tokenizer, loaded.cfg
    objective = loaded.task.objective(cfg.task, cfg.seed, tokenizer)
    blocks = list(pack_blocks(documents, tokenizer, cfg.trainer.max_length, objective.packing))
    metrics = objective.held_out(loaded.model, blocks, loaded.runtime)
    name = Path(path).stem
    write_json(loaded.run.eval_file(name), {"source": str(path), "documents": len(documents), "metrics": metrics})
    print_metrics(f"{loaded.run.path} · {name} ({len(documents)} documents)", metrics)
    print(json.dumps(headline(metrics)))
    return 0


def _texts(args: argparse.Namespace, command: str) -> list[str]:
    """The texts to run: positional arguments, --file PATH, or standard input (--file - or nothing)."""
    from fmtool.dataset.readers import decoded_lines, text_lines

    if args.texts and args.file:
        raise FmtoolError(f"{command}: give texts as arguments or --file, not both")
    if args.texts:
        texts = list(args.texts)
    elif args.file in (None, "-"):
        texts = [line.rstrip("\r\n") for _, line in decoded_lines(sys.stdin.buffer, "standard input")]
    else:
        path = Path(args.file)
        if not path.is_file():
            raise FmtoolError(f"{command}: --file {path} not found")
        texts = [line.rstrip("\r\n") for _, line in text_lines(path)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        source = (
            "the text arguments are blank"
            if args.texts
            else f"--file {args.file} held none"
            if args.file not in (None, "-")
            else "standard input held none"
        )
        raise FmtoolError(f"{command}: no text given ({source})")
    if args.output is not None and args.output.is_dir():
        raise FmtoolError(f"{command}: --output {args.output} is a directory; give a file path")
    return texts


def _write_jsonl(records, output: Path | None) -> None:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output is None:
        sys.stdout.write(lines)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(lines, encoding="utf-8")


def predict_command(args: argparse.Namespace) -> int:
    from fmtool.predict import LoadedRun

    texts = _texts(args, "predict")
    loaded = LoadedRun.load(
        args.run_dir, policy=load_policy(args), batch_size=args.batch_size, precision=args.precision
    )
    _write_jsonl(_with_generation_flags(loaded, args).predict_texts(texts), args.output)
    return 0


def _with_generation_flags(loaded, args: argparse.Namespace):
    """The run with predict's --max-new-tokens, --temperature and --top-p in place of its task settings."""
    from dataclasses import replace

    from fmtool.config.schema import range_problems

    given = {
        key: value
        for key, value in {
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
        }.items()
        if value is not None
    }
    if not given:
        return loaded
    if not loaded.task.generates:
        flags = ", ".join("--" + key.replace("_", "-") for key in given)
        raise FmtoolError(f"predict: {flags} continue text; a {loaded.task.name} run labels it")
    task = replace(loaded.cfg.task, **given)
    problems = range_problems(task, "task.")
    if problems:
        raise FmtoolError(f"predict: {'; '.join(problems)}")
    return replace(loaded, cfg=replace(loaded.cfg, task=task))


def explain_command(args: argparse.Namespace) -> int:
    """Word attributions for each prediction: coloured in the terminal, JSONL with --output (- for stdout only), HTML
    with --html."""
    from fmtool.config.schema import Precision
    from fmtool.explain import explainer_for, targets_for, to_html, to_rich
    from fmtool.predict import LoadedRun
    from fmtool.report.console import stdout_console

    texts = _texts(args, "explain")
    # full precision unless asked: integrated gradients add up many small gradients, which bf16 blurs
    loaded = LoadedRun.load(
        args.run_dir, policy=load_policy(args), batch_size=args.batch_size, precision=args.precision or Precision.fp32
    )
    explainer = explainer_for(loaded)
    examples = loaded.task.examples_from_texts(texts, loaded.labels)
    targets = targets_for(examples, loaded.predictions(examples), loaded.task.labels_each_word, explainer.label2id)
    explanations = explainer.explain(targets, method=args.method, steps=args.steps)
    to_stdout = args.output is not None and str(args.output) == "-"
    if not to_stdout:
        console = stdout_console()
        for explanation in explanations:
            console.print(to_rich(explanation))
        if not explanations:
            console.print("no entities found: nothing to explain")
    if args.output is not None:
        _write_jsonl([e.to_dict() for e in explanations], None if to_stdout else args.output)
    if args.html is not None:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(to_html(explanations) + "\n", encoding="utf-8")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from fmtool.config.compose import config_dir

    root = config_dir()
    groups = sorted(p.name for p in root.iterdir() if p.is_dir())
    if args.group is None or args.group == "groups":
        for group in groups:
            print(f"{group}: {', '.join(sorted(p.stem for p in (root / group).glob('*.yaml')))}")
        return 0
    if args.group not in groups:
        raise FmtoolError(f"list: unknown config group '{args.group}'; groups are: {', '.join(groups)}")
    for option in sorted((root / args.group).glob("*.yaml")):
        print(option.stem)
    return 0


def audit_config(saved: dict | None, task: str, overrides: list[str]) -> dict:
    """The run's saved audit settings (None: the task's defaults, as `fmtool train` would audit) with overrides;
    `audit=...` re-selects families from configs/audit/."""
    from fmtool.config.compose import resolved, with_dotlist
    from fmtool.configure import compose_train_config

    stray = [o for o in overrides if not o.startswith(("audit=", "audit."))]
    if stray:
        raise FmtoolError(
            f"audit: override '{stray[0]}' is not an audit setting; use audit=[family,...] or "
            "audit.<family>.<key>=value"
        )
    if saved is None or any(o.startswith("audit=") for o in overrides):
        return resolved(compose_train_config([f"+task={task}", *overrides]).audit)
    return resolved(with_dotlist(saved, overrides, "audit", prefix="audit."))


def family_configs_checked(audit: dict) -> dict:
    from fmtool.audit import family_configs

    family_configs(audit)
    return audit


def audit_command(args: argparse.Namespace) -> int:
    import datetime as dt

    from fmtool.auditing import audit_loaded, audit_pipeline, language_model_context
    from fmtool.predict import LoadedRun
    from fmtool.report.console import print_report
    from fmtool.runs import RunDir
    from fmtool.task import TASKS

    overrides = list(args.overrides)
    if RunDir(args.path).is_run():
        if args.split or args.base_model:
            raise FmtoolError(
                f"audit: {args.path} is a run, audited on its saved splits from its own starting point; --split "
                "and --base-model are for a model directory"
            )
        loaded = LoadedRun.load(args.path, policy=load_policy(args), batch_size=args.batch_size)
        audit = family_configs_checked(audit_config(loaded.cfg.audit, loaded.cfg.task.name, overrides))
        report = audit_loaded(loaded, audit, args.path, attribution=_attribution(args, loaded.cfg.attribution))
    else:
        if args.task is None:
            raise FmtoolError(
                f"audit: {args.path} is not a run directory; for a model directory give --task ner, "
                "classification or mlm"
            )
        out = args.output or Path("runs") / "audit" / args.path.name / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        task = TASKS.get(args.task)
        if task.language_model:
            if args.split or args.base_model:
                raise FmtoolError(
                    f"audit: a {task.name} model directory is audited on the language-model probes; --split and "
                    "--base-model are for models fine-tuned to label text"
                )
            if not (args.path / "config.json").is_file():
                raise FmtoolError(f"{args.path}: not a model directory (no config.json)")
            audit = family_configs_checked(audit_config({}, task.name, overrides or ["audit=[stereotype]"]))
            report = audit_pipeline(language_model_context(args.path, task, load_policy(args)), audit, out)
        else:
            loaded = LoadedRun.from_model_dir(
                args.path, args.task, policy=load_policy(args), batch_size=args.batch_size
            )
            reading = [o for o in overrides if o.startswith("dataset.")]
            splits = _split_files(args.split, _file_settings(reading), loaded.labels)
            audit = family_configs_checked(audit_config(None, args.task, [o for o in overrides if o not in reading]))
            report = audit_loaded(
                loaded,
                audit,
                out,
                splits=splits,
                base_model=args.base_model,
                attribution=_attribution(args, loaded.cfg.attribution),
            )
    print_report(report)
    failing = {"fail", "inconclusive"} if args.inconclusive == "fail" else {"fail"}
    return 1 if args.strict and report["status"] in failing else 0


def _attribution(args: argparse.Namespace, saved):
    """The run's attribution settings, with --attribute and --seeds in their place when given."""
    from fmtool.config.schema import range_problems

    chosen = replace(
        saved, enabled=saved.enabled or args.attribute, seeds=args.seeds if args.seeds is not None else saved.seeds
    )
    problems = range_problems(chosen, "attribution.")
    if problems:
        raise FmtoolError(f"audit: {'; '.join(problems)}")
    if args.seeds is not None and not chosen.enabled:
        raise FmtoolError("audit: --seeds is for --attribute")
    return chosen


def _file_settings(overrides: list[str]):
    """How --split files are read: dataset settings' defaults (columns text and label, the tag in the last CoNLL
    column) with dataset.<key>=value overrides."""
    from omegaconf import OmegaConf

    from fmtool.config.compose import with_dotlist
    from fmtool.config.schema import DatasetConfig

    return OmegaConf.to_object(
        with_dotlist(OmegaConf.structured(DatasetConfig(name="split files")), overrides, "audit", prefix="dataset.")
    )


def _split_files(given: list[str], dataset, labels: list[str]) -> dict[str, list]:
    """--split NAME=FILE options: labelled files that stand in a model directory's audit for a run's saved splits."""
    from dataclasses import fields

    from fmtool.dataset.splits import Splits, to_model_labels

    names = [f.name for f in fields(Splits)]
    splits: dict[str, list] = {}
    for option in given:
        name, _, file = option.partition("=")
        if name not in names or not file:
            raise FmtoolError(f"audit --split {option}: expected NAME=FILE with NAME one of {', '.join(names)}")
        if name in splits:
            raise FmtoolError(f"audit --split: {name} given twice")
        path, what = Path(file), f"audit --split {name}"
        examples = _examples_in(path, _format_by_suffix(path, what), dataset, what)
        splits[name] = to_model_labels(f"{what} ({path})", examples, labels, dict(dataset.label_map))
    return splits


def compare_command(args: argparse.Namespace) -> int:
    """A table of runs (a sweep folder stands for its runs) with the Pareto front; --gate PARENT CHILD exits 1 on a
    regression."""
    from fmtool.report import compare
    from fmtool.report.console import print_comparison, print_gate

    paths, left_out = compare.run_dirs(args.runs)
    runs = [compare.summarise(path) for path in paths]
    compare.one_task(runs)
    left_out_figures = compare.per_token_figures(runs)
    if left_out_figures:
        print(f"compare: {left_out_figures}", file=sys.stderr)
    if args.gate:
        if len(runs) != 2:
            raise FmtoolError(f"compare --gate: give exactly two runs, the parent then the child (got {len(runs)})")
        judged = compare.judge(
            runs[0],
            runs[1],
            metric_tolerance=args.metric_tolerance,
            check_tolerance=args.check_tolerance,
            margin=args.margin,
        )
        print_gate(runs[0].path, runs[1].path, judged)
        return 1 if any(j.regression for j in judged) else 0
    used = compare.pareto_front(runs)
    runs = compare.sort_runs(runs, args.sort)
    table = compare.rows(runs)
    print_comparison(table, used, left_out)
    for path, text in (
        (args.csv, lambda: compare.to_csv(table)),
        (args.html, lambda: compare.html_page(table, used, runs)),
        (args.markdown, lambda: compare.to_markdown(table)),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text(), encoding="utf-8")
    return 0


def data_command(args: argparse.Namespace) -> int:
    from fmtool.dataset import probes
    from fmtool.report.console import print_probes

    if args.action == "download":
        from fmtool.report.console import RichProgress

        if (args.name is None) == (not args.all):
            raise FmtoolError("data download: give one probe, or --all: fmtool data download NAME | --all")
        names = list(probes.PROBES) if args.all else [args.name]
        failed = []
        for name in names:
            try:
                location = probes.download(name, mirror=args.mirror, progress=RichProgress())
            except FmtoolError as error:
                if not args.all:
                    raise
                failed.append(name)
                print(f"{name}: not installed: {error}")
                continue
            print(f"{name}: downloaded, verified and installed at {location}")
        if failed:
            installed = [name for name in names if name not in failed]
            raise FmtoolError(
                f"data download --all: {', '.join(failed)} not installed (above); "
                f"installed: {', '.join(installed) or 'none'}"
            )
        return 0
    if args.action == "install":
        if args.name is None or args.source is None:
            raise FmtoolError("data install: give the probe and your copy of it: fmtool data install NAME PATH")
        location = probes.install(args.name, args.source)
        print(f"{args.name}: verified and installed at {location}")
        return 0
    print_probes(
        [
            {
                "probe": p.name,
                "problem": probes.problem(p),
                "location": str(p.location()),
                "licence": p.licence,
                "description": p.description,
            }
            for p in probes.PROBES.values()
        ]
    )
    return 0


COMMANDS = {
    "eval": eval_command,
    "predict": predict_command,
    "explain": explain_command,
    "compare": compare_command,
    "audit": audit_command,
    "list": list_command,
    "data": data_command,
}
