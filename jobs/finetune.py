"""The fine-tuning job: check data, train (LoRA adapter + head, or --full), evaluate, and either
write a model directory (--out) or register a version and promote it if it is better (--registry).

    python -m jobs.finetune --train labeled/ --validation dev.parquet --base default \\
        --registry models/ --name sentiment

Recipe: AdamW, linear warm-up over 10% of the steps then linear decay, batch 32, dropout 0.1,
early stopping on the validation metric. Batches come from the scorer's own encoder and length
buckets, so training and scoring tokenize identically. A killed run resumes from its last
checkpoint when started again with the same arguments.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

import scorer
from jobs import data as data_mod
from jobs import metrics as metrics_mod
from jobs.data import LabeledData
from scorer import backbone as backbones
from scorer import classifier, drift, encode, modeldir, registry
from scorer import api
from scorer.errors import ScorerError
from scorer.hf import checkpoint as hf_checkpoint
from scorer.hf import convert

DEFAULT_LR = {"lora": 1e-3, "full": 3e-5}
# LoRA on every projection of every BERT layer (attention q/k/v/output and both FFN matrices):
# measured on SST-2, LoRA on query/value alone reached 0.878 dev accuracy after 3 epochs.
LORA_TARGETS = {
    "all": ["query", "key", "value", "attention_output", "feedforward_intermediate_dense",
            "feedforward_output_dense"],
    "attention": ["query", "value"],
}


@dataclass
class TrainConfig:
    lora_rank: int = 8  # 0: full fine-tune of the whole encoder
    lora_targets: str = "all"  # a LORA_TARGETS key
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = DEFAULT_LR["lora"]
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    pooling: str = "mean"
    dropout: float = 0.1
    patience: int = 1  # epochs without improvement before stopping
    metric: str = "macro_f1"  # early stopping and promotion metric
    validation_fraction: float = 0.1  # held out of --train when no --validation is given
    checkpoint_every: int = 500  # steps, besides every epoch end
    seed: int = 0
    # > 0: an exponential moving average of the weights from the end of warm-up on, which is what
    # is evaluated, early-stopped on and saved
    ema_decay: float = 0.0
    multi_label: bool = False
    # A text over max_length: trained on as one of its windows (drawn anew each epoch) and
    # evaluated as all of them, combined as scoring combines them ("window"); or cut ("truncate").
    long_text: str = "window"


# ----------------------------------------------------------------------------- base encoders

def resolve_base(base: str) -> tuple[dict, Path | None]:
    """--base -> (the spec's base, a model directory of ours to start from, or None)."""
    base = str(base)
    if base == "default":
        return {"kind": "packaged", "id": "all-minilm-l6-v2"}, None
    if base in backbones.PACKAGED:
        return {"kind": "packaged", "id": base}, None
    path = Path(base)
    if "@" in path.name or (path.is_dir() and (path / modeldir.SPEC_FILE).exists()) or \
            registry.is_registry(path):
        ours = modeldir.read(base)
        return ours.spec.base, ours.path
    if (path / "config.json").is_file():
        # The checksums of its config and weights, checked whenever the model loads (backbone).
        sha256 = hf_checkpoint.read(path, classifier=False).checksums
        return {"kind": "hf_dir", "path": str(path.resolve()), "sha256": sha256}, None
    raise ScorerError(f"--base {base}: not 'default', a packaged encoder id, a scorer model "
                      "directory, or a Hugging Face checkpoint directory (config.json)")


def start_from(model, spec: modeldir.ModelSpec, start: modeldir.ModelDir) -> None:
    """Initialise from a model of ours: its encoder weights (and adapter when the modes match);
    its head only when the label set is the same."""
    if bool(start.spec.lora_rank) != bool(spec.lora_rank) and start.spec.base["kind"] != "config":
        raise ScorerError(f"--base {start.path} was trained with "
                          f"{'LoRA' if start.spec.lora_rank else 'a full fine-tune'}: continue in the "
                          "same mode, or start from its base encoder")
    tensors = classifier.read_weights(start.path / start.spec.weights_file)
    wanted = {v.path for v in model.weights}
    if start.spec.labels != spec.labels:
        wanted -= {p for p in wanted if p.startswith(classifier.HEAD_NAME + "/")}
    classifier.assign_weights(model, {k: v for k, v in tensors.items() if k in wanted},
                              str(start.path))


def hf_classifier(base: dict) -> "hf_checkpoint.Checkpoint | None":
    """The Hugging Face classifier checkpoint a base is, if it is one (not a bare encoder)."""
    if base["kind"] != "hf_dir":
        return None
    ckpt = backbones.hf_base(base)
    return ckpt if ckpt.is_classifier else None


def base_checkpoint_record(base: dict) -> dict | None:
    """What a model trained from a Hugging Face checkpoint records of it."""
    if base["kind"] != "hf_dir":
        return None
    ckpt = backbones.hf_base(base)
    return {"path": str(ckpt.path), "architecture": ckpt.architecture, "checksums": ckpt.checksums}


def start_from_checkpoint(model, spec: modeldir.ModelSpec,
                          ckpt: "hf_checkpoint.Checkpoint") -> str:
    """Start from a Hugging Face classifier's head: its dense layer always, its classifier layer
    when the label names are the same (else a new one). Returns what it did, for the log."""
    head = convert.head_weights(ckpt, ckpt.tensors())
    same = ckpt.labels == spec.labels
    if not same:
        head = {k: v for k, v in head.items() if k.startswith(classifier.HEAD_DENSE + "/")}
    classifier.assign_weights(model, head, str(ckpt.path))
    return (f"head: {ckpt.architecture}'s, labels {ckpt.labels}" if same else
            f"head: {ckpt.architecture}'s dense layer; a new classifier layer, since its labels "
            f"{ckpt.labels} are not {spec.labels}")


# ----------------------------------------------------------------------------- batches

@dataclass
class TrainingRows:
    """The training texts as token sequences: one per text, or a text's windows
    (encode.BatchEncoder.tokenize_windows) of which each epoch trains on one."""

    ids: list  # [sequences] token ids
    lengths: np.ndarray  # [sequences]
    first: np.ndarray  # [texts] index of each text's first sequence
    count: np.ndarray  # [texts] its sequences

    @classmethod
    def of(cls, encoder: encode.BatchEncoder, texts: list[str]) -> "TrainingRows":
        if encoder.window_overlap is None:
            ids, lengths, _ = encoder.tokenize(texts)
            count = np.ones(len(texts), dtype=np.int64)
        else:
            ids, _, count, _ = encoder.tokenize_windows(texts)
            lengths = np.fromiter((len(i) for i in ids), dtype=np.int32, count=len(ids))
        first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        return cls(ids, lengths, first, count.astype(np.int64))

    def epoch(self, seed: int, epoch: int) -> np.ndarray:
        """[texts] the sequence each text is trained on in this epoch (seeded: a resumed epoch
        draws the same windows). A window is labelled with its text's label; one window a text
        per epoch keeps an epoch's cost at one sequence per text."""
        rng = np.random.default_rng([seed, epoch, 1])
        return self.first + (rng.random(len(self.first)) * self.count).astype(np.int64)


def training_batches(encoder: encode.BatchEncoder, ids, lengths, targets, batch_size, rng):
    """Shuffled batches of batch_size rows, each padded to its bucket length.

    Rows are shuffled within a bucket and batches across buckets; a bucket's last short batch
    is padded with weight-0 rows so every step has one of a few fixed shapes.
    """
    buckets = encoder.bucket_of(lengths)
    batches = []
    for b, length in enumerate(encoder.buckets):
        rows = rng.permutation(np.flatnonzero(buckets == b))
        for start in range(0, len(rows), batch_size):
            take = rows[start:start + batch_size]
            batch = encoder.pad(ids, lengths, take, length, batch_size)
            y = np.zeros((batch_size,) + targets.shape[1:], targets.dtype)
            y[: len(take)] = targets[take]
            weight = np.zeros(batch_size, np.float32)
            weight[: len(take)] = 1.0
            batches.append((batch, y, weight))
    return [batches[i] for i in rng.permutation(len(batches))]


def evaluate(probabilities, data: LabeledData, names: list[str], multi_label: bool,
             threshold: float = 0.5) -> dict:
    """Metrics of a probabilities(texts) -> [n, labels] function on labelled data."""
    probs = probabilities(data.texts)
    if multi_label:
        return metrics_mod.multilabel_metrics(data.targets, probs, names, threshold)
    return metrics_mod.classification_metrics(data.targets, probs, names)


def summary_metrics(metrics: dict) -> dict:
    """The scalar metrics, without the per-class table and the confusion matrix."""
    return {k: v for k, v in metrics.items() if k not in ("per_class", "confusion_matrix")}


def warmup_linear_decay(peak: float, total_steps: int, warmup_steps: int):
    import keras

    class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            from keras import ops

            step = ops.cast(step, "float32")
            warm = peak * step / max(1, warmup_steps)
            decay = peak * ops.maximum(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
            return ops.where(step < warmup_steps, warm, decay)

    return WarmupLinearDecay()


# ----------------------------------------------------------------------------- training

class Checkpoint:
    """Trainable weights, optimizer state and loop position, under the run's work directory."""

    def __init__(self, work_dir: Path):
        self.dir = work_dir / "checkpoint"

    def exists(self) -> bool:
        return (self.dir / "state.json").is_file()

    @staticmethod
    def numbered(optimizer, averages) -> list:
        """(file, variables) stored by position: optimizer state, and weight averages if any."""
        return [("optimizer", optimizer.variables)] + ([("averages", averages)] if averages else [])

    def save(self, model, optimizer, averages, state: dict, best_weights: dict | None) -> None:
        from safetensors.numpy import save_file

        tmp = self.dir.with_name("checkpoint.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        classifier.save_weights(model, tmp / "weights.safetensors", scope="trainable")
        for file, variables in self.numbered(optimizer, averages):
            save_file({f"{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)},
                      str(tmp / f"{file}.safetensors"))
        if best_weights is not None:
            save_file(best_weights, str(tmp / "best.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state))
        old = self.dir.with_name("checkpoint.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)  # the checkpoint switches in one rename
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model, optimizer, averages) -> tuple[dict, dict | None]:
        from safetensors.numpy import load_file

        classifier.load_weights(model, self.dir / "weights.safetensors")
        for file, variables in self.numbered(optimizer, averages):
            saved = load_file(str(self.dir / f"{file}.safetensors"))
            for i, v in enumerate(variables):
                v.assign(saved[f"{i}"])
        best = self.dir / "best.safetensors"
        return json.loads((self.dir / "state.json").read_text()), (
            load_file(str(best)) if best.is_file() else None)


def train(cfg: TrainConfig, names: list[str], base: dict, init_from: Path | None,
          train_data: LabeledData, val_data: LabeledData, work_dir: Path, model_name: str,
          log=print, progress=None) -> tuple[Path, dict]:
    """Train into work_dir/model (a complete model directory); returns it and the history.

    progress(epoch, step, steps, loss, steps_per_second) is called after every step."""
    policy = classifier.choose_device()  # starts TensorFlow quietly, before keras is imported
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    hf_head = hf_classifier(base)
    spec = modeldir.ModelSpec(
        name=model_name, labels=names, base=base, max_length=cfg.max_length,
        pooling="cls" if hf_head else cfg.pooling,
        head_activation=convert.head_activation(hf_head) if hf_head else None,
        dropout=cfg.dropout, lora_rank=cfg.lora_rank or None,
        lora_targets=LORA_TARGETS[cfg.lora_targets] if cfg.lora_rank else None,
        problem_type="multi_label" if cfg.multi_label else "single_label")
    model = classifier.build_from_spec(spec, dtype=policy.dtype)
    if hf_head:
        log(start_from_checkpoint(model, spec, hf_head))
    tokenizer_file = None  # a tokenizer.json the new model directory must carry itself
    if init_from is not None:
        start = modeldir.read(init_from)
        start_from(model, spec, start)
        if start.spec.tokenizer_file:
            tokenizer_file = start.path / start.spec.tokenizer_file
    if tokenizer_file is not None:
        tokenizer, pad_id = encode.load_tokenizer(tokenizer_file, cfg.max_length), None
    else:
        tokenizer, pad_id = backbones.base_tokenizer(base, cfg.max_length)
    windowed = cfg.long_text == "window"
    encoder = encode.BatchEncoder(tokenizer, cfg.max_length, pad_id=pad_id,
                                  window_overlap=api.window_overlap(cfg.max_length) if windowed else None)
    rows = TrainingRows.of(encoder, train_data.texts)

    def epoch_steps(epoch: int) -> int:
        buckets = encoder.bucket_of(rows.lengths[rows.epoch(cfg.seed, epoch)])
        return sum(-(-int(np.sum(buckets == b)) // cfg.batch_size) for b in range(len(encoder.buckets)))

    steps = [epoch_steps(e) for e in range(1, cfg.epochs + 1)]
    steps_per_epoch, total = steps[0], sum(steps)
    warmup_steps = int(total * cfg.warmup_fraction)
    optimizer = keras.optimizers.AdamW(
        learning_rate=warmup_linear_decay(cfg.learning_rate, total, warmup_steps),
        weight_decay=cfg.weight_decay)
    if policy.mixed:
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    loss_fn = (keras.losses.BinaryCrossentropy(from_logits=True) if cfg.multi_label
               else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    variables = model.trainable_variables
    optimizer.build(variables)
    # Averages start from the weights at the end of warm-up: until then they just copy them.
    averages = [tf.Variable(v.value, trainable=False) for v in variables] if cfg.ema_decay else None
    log(f"training {sum(int(np.prod(v.shape)) for v in variables):,} parameters "
        f"({'LoRA rank %d + head' % cfg.lora_rank if cfg.lora_rank else 'full fine-tune'}) on "
        f"{len(train_data.texts):,} rows ({len(rows.ids):,} windows), {steps_per_epoch} steps/epoch, "
        f"up to {cfg.epochs} epochs")

    @tf.function(jit_compile=True, reduce_retracing=False, autograph=False)
    def train_step(token_ids, padding_mask, y, weight):
        with tf.GradientTape() as tape:
            logits = model({"token_ids": token_ids, "padding_mask": padding_mask}, training=True)
            loss = loss_fn(y, logits, sample_weight=weight)
            scaled = optimizer.scale_loss(loss) if policy.mixed else loss
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables))
        if averages:
            decay = tf.where(optimizer.iterations > warmup_steps, cfg.ema_decay, 0.0)
            for average, v in zip(averages, variables):
                average.assign(decay * average + (1.0 - decay) * v)
        return loss

    predictor = classifier.Predictor(model, spec.problem_type, policy, pooling=spec.pooling)

    def probabilities(texts):  # as scoring computes them: a long text's windows combined
        return api.chunk_probabilities(predictor, encoder.encode(texts), len(names), cfg.multi_label)

    metric = "subset_accuracy" if cfg.multi_label and cfg.metric == "accuracy" else cfg.metric
    checkpoint = Checkpoint(work_dir)
    state = {"epoch": 1, "step": 0, "history": [], "step_losses": [], "best": None,
             "best_epoch": None, "bad_epochs": 0, "seconds": 0.0}
    best_weights = None
    if checkpoint.exists():
        state, best_weights = checkpoint.load(model, optimizer, averages)
        log(f"resuming from the checkpoint at epoch {state['epoch']}, step {state['step']}")
    started = time.time() - state["seconds"]

    def save():
        state["seconds"] = round(time.time() - started, 1)
        checkpoint.save(model, optimizer, averages, state, best_weights)

    while state["epoch"] <= cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        rng = np.random.default_rng([cfg.seed, epoch])  # the same batches when resumed
        picked = rows.epoch(cfg.seed, epoch)  # [texts] a sequence of each
        ids = [rows.ids[i] for i in picked]
        batches = training_batches(encoder, ids, rows.lengths[picked], train_data.targets,
                                   cfg.batch_size, rng)
        t0, first_step, losses = time.time(), state["step"], []
        every = max(1, min(100, len(batches) // 10))  # loss curve points and log lines
        for step in range(state["step"], len(batches)):
            batch, y, weight = batches[step]
            with tf.device(policy.device):
                losses.append(float(train_step(batch.token_ids, batch.padding_mask, y, weight)))
            state["step"] = step + 1
            if progress is not None:
                progress(epoch, state["step"], len(batches), float(np.mean(losses[-every:])),
                         (state["step"] - first_step) / max(time.time() - t0, 1e-9))
            if state["step"] % every == 0:
                global_step = (epoch - 1) * len(batches) + state["step"]
                state["step_losses"].append([global_step, float(np.mean(losses[-every:]))])
                log(f"epoch {epoch} step {state['step']}/{len(batches)} "
                    f"loss {np.mean(losses[-every:]):.4f} ({time.time() - t0:.0f}s)")
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                save()
        val = evaluate(probabilities, val_data, names, cfg.multi_label)
        entry = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                 "validation": summary_metrics(val)}
        if averages:  # the raw weights' figures stay in the history, for comparison
            raw_weights = [np.asarray(v.numpy()) for v in variables]
            entry["validation_raw_weights"] = entry["validation"]
            for v, average in zip(variables, averages):
                v.assign(average)
            val = evaluate(probabilities, val_data, names, cfg.multi_label)
            entry["validation"] = summary_metrics(val)
        score = val[metric]
        state["history"].append(entry)
        log(f"epoch {epoch}: validation {metric} {score:.4f}, accuracy {val.get('accuracy', 0):.4f}"
            + (f" (averaged weights; raw weights {entry['validation_raw_weights'][metric]:.4f})"
               if averages else ""))
        if state["best"] is None or score > state["best"]:
            state.update(best=score, best_epoch=epoch, bad_epochs=0)
            best_weights = {v.path: np.asarray(v.numpy()) for v in variables}
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= cfg.patience:
                log(f"early stop: no validation improvement for {state['bad_epochs']} epoch(s)")
        if averages:  # training goes on from the raw weights
            for v, value in zip(variables, raw_weights):
                v.assign(value)
        state["epoch"], state["step"] = epoch + 1, 0
        save()

    by_path = {v.path: v for v in variables}
    for name, value in best_weights.items():
        by_path[name].assign(value)
    out = work_dir / "model"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    classifier.save_weights(model, out / spec.weights_file, scope=classifier.weights_scope(spec))
    if tokenizer_file is not None:
        shutil.copy(tokenizer_file, out / "tokenizer.json")
        spec.tokenizer_file = "tokenizer.json"
    spec.training = {"history": state["history"], "best_epoch": state["best_epoch"],
                     "seconds": round(time.time() - started, 1)}
    spec.temperature, calibration, calibrated = calibrate(probabilities, val_data, cfg.multi_label)
    spec.training["calibration"] = calibration
    final = evaluate(calibrated, val_data, names, cfg.multi_label)
    return out, {"spec": spec, "validation": final, "state": state, "probabilities": calibrated,
                 "reference": validation_reference(encoder, calibrated, val_data, names)}


def calibrate(probabilities, data: LabeledData, multi_label: bool):
    """Fit the temperature on the validation set: (T, what it did, the calibrated
    probabilities(texts) function, which scoring with the spec's temperature reproduces)."""
    probs = probabilities(data.texts)
    temperature = metrics_mod.fit_temperature(data.targets, probs, multi_label)
    after = metrics_mod.with_temperature(probs, temperature, multi_label)

    def ece(p):
        if multi_label:  # per label, each a binary calibration
            return float(np.mean([metrics_mod.expected_calibration_error(
                data.targets[:, j], np.stack([1 - p[:, j], p[:, j]], 1)) for j in range(p.shape[1])]))
        return metrics_mod.expected_calibration_error(data.targets, p)

    report = {"temperature": temperature, "ece_before": round(ece(probs), 4),
              "ece_after": round(ece(after), 4),
              "nll_before": round(metrics_mod.negative_log_likelihood(data.targets, probs, multi_label), 4),
              "nll_after": round(metrics_mod.negative_log_likelihood(data.targets, after, multi_label), 4)}
    return temperature, report, lambda texts: metrics_mod.with_temperature(
        probabilities(texts), temperature, multi_label)


# ----------------------------------------------------------------------------- the job

def validation_reference(encoder: encode.BatchEncoder, probabilities, data: LabeledData,
                         names: list[str]) -> dict:
    """The model's drift reference (scorer.drift) on its validation set, for its spec: what the
    model is known to produce, which every run it scores is compared with."""
    chunk = encoder.encode(data.texts)
    counted = api.Prepared([None] * len(data.texts), np.arange(len(data.texts)), chunk)
    profile = drift.Profile.empty(names)
    profile.add(probabilities(data.texts), drift.token_counts(counted))
    return {"data": {"validation": data.fingerprint}, "profile": profile.to_json()}


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


def run_job(cfg: TrainConfig, args: dict, log=print, progress=None) -> dict:
    """Everything after argument parsing: returns the JSON summary."""
    base, init_from = resolve_base(args["base"])
    report: dict = {}
    def read(role: str, names: list[str] | None = None):
        raw = data_mod.read_raw(args[role], args["text_column"], args["label_column"])
        names = names or args["label_names"] or data_mod.label_set(raw, cfg.multi_label)
        return data_mod.prepare(raw, names, cfg.multi_label, role, report), names

    train_data, names = read("train")
    if args["validation"]:
        val_data, _ = read("validation", names)
    else:
        train_data, val_data = data_mod.split(train_data, cfg.validation_fraction, cfg.seed)
        report["validation"] = {"split_from_train": cfg.validation_fraction, "seed": cfg.seed,
                                "rows_used": len(val_data.texts)}
    data_mod.check(train_data, val_data, names, cfg.multi_label, report)
    test_data = read("test", names)[0] if args["test"] else None
    log("data: " + json.dumps(report))

    run_key = hashlib.sha256(json.dumps([asdict(cfg), base, names, train_data.fingerprint,
                                         val_data.fingerprint, args["name"]]).encode()).hexdigest()[:16]
    reg = Path(args["registry"]) / args["name"] if args["registry"] else None
    work_dir = Path(args["work_dir"]) if args["work_dir"] else (
        (reg / "_runs" if args["registry"] else Path(args["out"]).parent / ".finetune-runs") / run_key)
    work_dir.mkdir(parents=True, exist_ok=True)

    model_dir, result = train(cfg, names, base, init_from, train_data, val_data, work_dir,
                              args["name"], log, progress)
    spec: modeldir.ModelSpec = result["spec"]
    metrics = {"validation": result["validation"]}
    if test_data is not None:
        metrics["test"] = evaluate(result["probabilities"], test_data, names, cfg.multi_label)
    spec.metrics = {split: summary_metrics(m) for split, m in metrics.items()}
    spec.reference = result["reference"]
    spec.training.update({
        "command": "python -m jobs.finetune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config": asdict(cfg), "base": args["base"], "data_report": report,
        "base_checkpoint": base_checkpoint_record(base),
        "train_data": train_data.fingerprint, "validation_data": val_data.fingerprint,
        "test_data": test_data.fingerprint if test_data else None,
        "scorer_version": scorer.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    (model_dir / "metrics.json").write_text(
        json.dumps({**metrics, "calibration": spec.training["calibration"]}, indent=2) + "\n")
    from jobs import report as report_mod

    report_mod.write_png(model_dir / "report.png", result["state"], metrics, names,
                         title=f"{args['name']} ({'LoRA' if cfg.lora_rank else 'full'})")
    modeldir.write_spec(model_dir, spec)

    summary = {"name": args["name"], "metrics": spec.metrics, "best_epoch": spec.training["best_epoch"],
               "train_seconds": spec.training["seconds"]}
    if args["out"]:
        out = Path(args["out"])
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(model_dir, out)
        summary["model"] = str(out)
    else:
        from jobs.gate import decide

        version = registry.register(reg, model_dir)
        summary.update(version=version, model=f"{reg}@{version}")
        summary.update(decide(reg, version, val_data, names, cfg, args["min_improvement"],
                              args["min_metric"], result["validation"], log))
    shutil.rmtree(work_dir, ignore_errors=True)  # finished: the checkpoint is no longer needed
    if not args["work_dir"] and not any(work_dir.parent.iterdir()):
        work_dir.parent.rmdir()
    return summary


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--train", "train_paths", multiple=True, required=True,
              help="Labelled training data (Parquet / JSONL / CSV; repeatable).")
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
@click.option("--pooling", type=click.Choice(list(modeldir.POOLINGS)), default=TrainConfig.pooling,
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

        python -m jobs.finetune --train ../shared/datasets/sst2/train.jsonl
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
    args = dict(train=list(train_paths), validation=list(validation_paths), test=list(test_paths),
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
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
