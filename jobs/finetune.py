"""The fine-tuning job: check data, train (LoRA adapter + head, or --full), evaluate, and either
write a model directory (--out) or register a version and promote it if it is better (--registry).

    python -m jobs.finetune --train labeled/ --validation dev.parquet --base default \\
        --registry models/ --name sentiment

The recipe and the loop are jobs/train.py; a killed run resumes from its last checkpoint
(jobs/checkpoint.py) when started again with the same arguments.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

import scorer  # noqa: F401  (environment defaults before TensorFlow loads)
from jobs import data as data_mod
from jobs import gate, metrics
from jobs import report as report_mod
from jobs.base import base_checkpoint_record, resolve_base
from jobs.data import LabeledData
from jobs.errors import fail
from jobs.train import DEFAULT_LR, LORA_TARGETS, TrainConfig, TrainResult, train
from scorer import api, fileio, modeldir, modelspec, registry
from scorer.errors import ConfigError, ScorerError
from scorer.version import __version__


@dataclass
class JobArgs:
    """What the job reads and where its model goes (how it trains is TrainConfig)."""

    train: list[str]
    name: str
    validation: list[str] = field(default_factory=list)  # none: a split of train
    test: list[str] = field(default_factory=list)
    base: str = "default"
    text_column: str = "text"
    label_column: str = "label"
    label_names: list[str] | None = None  # for integer labels 0, 1, ...
    registry: Path | None = None  # exactly one of registry and out
    out: Path | None = None
    work_dir: Path | None = None
    min_improvement: float = 0.0
    min_metric: dict[str, float] = field(default_factory=dict)  # promotion floors


@dataclass
class JobData:
    names: list[str]
    train: LabeledData
    validation: LabeledData
    test: LabeledData | None
    report: dict  # what reading and checking found, kept in the spec


def read_data(cfg: TrainConfig, args: JobArgs) -> JobData:
    """Read, check and report the labelled data; without --validation, split it off --train."""
    report: dict = {}

    def read(role: str, paths: list[str],
             names: list[str] | None) -> tuple[LabeledData, list[str]]:
        raw = data_mod.read_raw(paths, args.text_column, args.label_column)
        names = names or data_mod.label_set(raw, cfg.multi_label)
        return data_mod.prepare(raw, names, cfg.multi_label, role, report), names

    train_data, names = read("train", args.train, args.label_names)
    if args.validation:
        val_data, _ = read("validation", args.validation, names)
    else:
        train_data, val_data = data_mod.split(train_data, cfg.validation_fraction, cfg.seed)
        report["validation"] = {"split_from_train": cfg.validation_fraction, "seed": cfg.seed,
                                "rows_used": len(val_data.texts)}
    data_mod.check(train_data, val_data, names, cfg.multi_label, report)
    test_data = read("test", args.test, names)[0] if args.test else None
    return JobData(names, train_data, val_data, test_data, report)


def registry_dir(args: JobArgs) -> Path | None:
    return args.registry / args.name if args.registry else None


def work_dir_of(cfg: TrainConfig, args: JobArgs, base: dict, data: JobData) -> Path:
    """Where the checkpoint lives: named by everything that decides the run, so the same
    command finds it again after a kill."""
    if args.work_dir:
        return args.work_dir
    run_key = hashlib.sha256(json.dumps([asdict(cfg), base, data.names, data.train.fingerprint,
                                         data.validation.fingerprint, args.name]).encode()).hexdigest()[:16]
    runs = registry_dir(args) / "_runs" if args.registry else args.out.parent / ".finetune-runs"
    return runs / run_key


def complete_spec(cfg: TrainConfig, args: JobArgs, base: dict, data: JobData,
                  result: TrainResult, evaluated: dict) -> None:
    """The spec's metrics, drift reference and record of how the model was made."""
    spec = result.spec
    spec.metrics = {split: metrics.summary_metrics(m) for split, m in evaluated.items()}
    spec.reference = result.reference
    spec.training.update({
        "command": "python -m jobs.finetune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config": asdict(cfg), "base": args.base, "data_report": data.report,
        "base_checkpoint": base_checkpoint_record(base),
        "train_data": data.train.fingerprint, "validation_data": data.validation.fingerprint,
        "test_data": data.test.fingerprint if data.test else None,
        "scorer_version": __version__,
        "finished": fileio.utc_timestamp(),
    })


def write_report(path: Path, result: TrainResult, evaluated: dict, title: str, log) -> None:
    """report.png, when matplotlib is installed (the `report` extra); else one line says so."""
    try:
        report_mod.write_png(path, result.state, evaluated, result.spec.labels, title)
    except ConfigError as e:
        log(f"warning: {path.name} not written: {e}")


def publish(cfg: TrainConfig, args: JobArgs, data: JobData, result: TrainResult, log) -> dict:
    """Copy the model to --out, or register it and let the gate decide on promotion; returns
    the summary's fields for it."""
    if args.out:
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(result.model_dir, args.out)
        return {"model": str(args.out)}
    reg = registry_dir(args)
    version = registry.register(reg, result.model_dir)
    return {"version": version, "model": f"{reg}@{version}",
            **gate.decide(reg, version, data.validation, data.names, cfg, args.min_improvement,
                          args.min_metric, result.validation, log)}


def run_job(cfg: TrainConfig, args: JobArgs, log=print, progress=None) -> dict:
    """Everything after argument parsing: returns the JSON summary."""
    base, init_from = resolve_base(args.base)
    data = read_data(cfg, args)
    log("data: " + json.dumps(data.report))
    work_dir = work_dir_of(cfg, args, base, data)
    work_dir.mkdir(parents=True, exist_ok=True)

    result = train(cfg, data.names, base, init_from, data.train, data.validation, work_dir,
                   args.name, log, progress)
    evaluated = {"validation": result.validation}
    if data.test is not None:
        evaluated["test"] = metrics.evaluate(result.probabilities, data.test, data.names,
                                             cfg.multi_label)
    complete_spec(cfg, args, base, data, result, evaluated)
    spec = result.spec
    (result.model_dir / "metrics.json").write_text(
        json.dumps({**evaluated, "calibration": spec.training["calibration"]}, indent=2) + "\n")
    write_report(result.model_dir / "report.png", result, evaluated,
                 f"{args.name} ({'LoRA' if cfg.lora_rank else 'full'})", log)
    modelspec.write_spec(result.model_dir, spec)

    summary = {"name": args.name, "metrics": spec.metrics, "best_epoch": spec.training["best_epoch"],
               "train_seconds": spec.training["seconds"]}
    summary.update(publish(cfg, args, data, result, log))
    shutil.rmtree(work_dir, ignore_errors=True)  # finished: the checkpoint is no longer needed
    if not args.work_dir and not any(work_dir.parent.iterdir()):
        work_dir.parent.rmdir()
    return summary


def progress_bar(epoch: int, step: int, steps: int, loss: float, steps_per_second: float) -> None:
    """One terminal line, redrawn in place: the epoch's bar, running loss and time left."""
    width = 30
    done = width * step // steps
    left = (steps - step) / steps_per_second if steps_per_second > 0 else 0.0
    sys.stderr.write(f"\r\033[Kepoch {epoch} [{'#' * done}{'.' * (width - done)}] {step}/{steps} "
                     f"loss {loss:.4f} {steps_per_second:.1f} steps/s {left / 60:.0f} min left")
    sys.stderr.flush()


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--train", "train_paths", multiple=True, required=True,
              metavar="[NAME=]PATH", help="Labelled training data (Parquet / JSONL / CSV; "
              "repeatable). NAME names the source in the drift reference (default: the file's "
              "name, or its directory's for a split file: sst2/train.jsonl is sst2).")
@click.option("--validation", "validation_paths", multiple=True,
              help="Validation data (default: a stratified, seeded split of --train).")
@click.option("--validation-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Without --validation: the share of --train held out, stratified and seeded "
                   f"(default {TrainConfig.validation_fraction}).")
@click.option("--test", "test_paths", multiple=True, help="Held-out data scored once at the end.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--label-names", help="Comma-separated label names for integer labels 0, 1, ...")
@click.option("--base", default="default", show_default=True,
              help="default (packaged MiniLM), a scorer model directory or registry reference, "
                   "or a local Hugging Face checkpoint directory (an encoder or a classifier: "
                   "BERT, DistilBERT, RoBERTa, XLM-R, ALBERT, DeBERTa-v3).")
@click.option("--name", "model_name", required=True, help="Model name.")
@click.option("--registry", type=click.Path(path_type=Path),
              help="Registry root: registers NAME's next version and promotes it if better.")
@click.option("--out", type=click.Path(path_type=Path), help="Write a model directory here instead.")
@click.option("--work-dir", type=click.Path(path_type=Path),
              help="Checkpoints (default: under the registry or next to --out).")
@click.option("--full", is_flag=True, help="Fine-tune the whole encoder instead of a LoRA adapter.")
@click.option("--lora-rank", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lora-targets", type=click.Choice(list(LORA_TARGETS)), default="all",
              show_default=True, help="Layers that get an adapter: every projection, or query/value.")
@click.option("--pooling", type=click.Choice(list(modelspec.POOLINGS)), default=TrainConfig.pooling,
              show_default=True, help="Text vector for the head: masked mean of the tokens, the "
              "first token, or BERT's pooler (dense + tanh on it; exportable with `scorer export`). "
              "A Hugging Face classifier --base keeps its own head.")
@click.option("--long-text", type=click.Choice(list(api.LONG_TEXT)), default=TrainConfig.long_text,
              show_default=True, help="A text over --max-length: trained on as one of its windows "
              "a epoch (drawn at random) and evaluated as all of them combined, as `scorer run` "
              "scores it; or cut there.")
@click.option("--multi-label", is_flag=True, help="Sigmoid outputs, binary cross-entropy; the "
              "label column holds lists.")
@click.option("--epochs", type=click.IntRange(1), default=TrainConfig.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=TrainConfig.batch_size, show_default=True)
@click.option("--learning-rate", type=float, help="Peak learning rate (default 1e-3 LoRA, 3e-5 full).")
@click.option("--max-length", type=click.IntRange(8), default=TrainConfig.max_length, show_default=True)
@click.option("--metric", type=click.Choice(["macro_f1", "accuracy"]), default="macro_f1",
              show_default=True, help="Early stopping and promotion metric.")
@click.option("--min-improvement", type=float, default=0.0, show_default=True,
              help="Promote only if the metric beats the champion's by at least this much.")
@click.option("--min-metric", multiple=True, metavar="NAME=VALUE",
              help="An absolute floor for promotion, e.g. accuracy=0.85 (repeatable).")
@click.option("--checkpoint-every", type=click.IntRange(0), default=TrainConfig.checkpoint_every,
              show_default=True, help="Steps between checkpoints (also at every epoch end).")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=TrainConfig.ema_decay,
              show_default=True, help="Keep a moving average of the weights from the end of warm-up "
              "on (e.g. 0.999) and evaluate and save it; 0: off.")
@click.option("--seed", type=int, default=0, show_default=True)
def main(train_paths, validation_paths, validation_fraction, test_paths, text_column, label_column,
         label_names, base, model_name, registry, out, work_dir, full, lora_rank, lora_targets,
         pooling, long_text, multi_label, epochs, batch_size, learning_rate, max_length, metric, min_improvement,
         min_metric, checkpoint_every, ema_decay, seed):
    """Fine-tune a classifier, evaluate it, and register (and maybe promote) or write it.

    Examples:

        python -m jobs.finetune --train labeled/ --validation dev.parquet --base default
        --registry models/ --name sentiment

        python -m jobs.finetune --train sst2=../shared/datasets/sst2/train.jsonl
        --test ../shared/datasets/sst2/dev.jsonl --label-names negative,positive
        --name sentiment --out scorer/models/default

    Prints a one-line JSON summary on stdout ("promoted": true/false); logs go to stderr, with a
    progress bar when stderr is a terminal.
    """
    if bool(registry) == bool(out):
        raise click.UsageError("give exactly one of --registry or --out")
    if validation_paths and validation_fraction is not None:
        raise click.UsageError("--validation-fraction splits --train: not with --validation")
    floors = {}
    for item in min_metric:
        name, _, value = item.partition("=")
        try:
            floors[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--min-metric")
    cfg = TrainConfig(lora_rank=0 if full else lora_rank, lora_targets=lora_targets, epochs=epochs,
                      batch_size=batch_size,
                      learning_rate=learning_rate or DEFAULT_LR["full" if full else "lora"],
                      max_length=max_length, metric=metric, checkpoint_every=checkpoint_every,
                      validation_fraction=validation_fraction or TrainConfig.validation_fraction,
                      ema_decay=ema_decay, seed=seed, multi_label=multi_label, pooling=pooling,
                      long_text=long_text)
    args = JobArgs(train=list(train_paths), validation=list(validation_paths), test=list(test_paths),
                   text_column=text_column, label_column=label_column,
                   label_names=label_names.split(",") if label_names else None, base=base,
                   name=model_name, registry=registry, out=out, work_dir=work_dir,
                   min_improvement=min_improvement, min_metric=floors)
    try:
        if stderr_is_terminal():  # a progress bar, which log lines overwrite and it redraws
            summary = run_job(cfg, args, progress=progress_bar,
                              log=lambda m: click.echo("\r\033[K" + m, err=True, color=True))
        else:
            summary = run_job(cfg, args, log=lambda m: click.echo(m, err=True))
    except ScorerError as e:
        fail(e)
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
