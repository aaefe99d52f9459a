"""Training: build the model, its optimizer and batches; run epochs (checkpointed, early
stopped on the validation metric); finish into a calibrated model directory.

Recipe: AdamW, linear warm-up over 10% of the steps then linear decay, batch 32, dropout 0.1,
early stopping on the validation metric. Batches come from the scorer's own encoder and length
buckets, so training and scoring tokenize identically.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from jobs import metrics
from jobs.base import hf_classifier, start_from, start_from_checkpoint
from jobs.batches import TrainingBatch, TrainingRows, epoch_batches, epoch_steps
from jobs.checkpoint import Checkpoint, TrainState
from jobs.data import LabeledData, whole_texts
from scorer import api, classifier, drift, encode, modeldir, modelspec
from scorer import backbone as backbones
from scorer.hf import convert

DEFAULT_LR = {"lora": 1e-3, "full": 3e-5}
# LoRA on every projection of every BERT layer (attention q/k/v/output and both FFN matrices):
# measured on SST-2, LoRA on query/value alone reached 0.878 dev accuracy after 3 epochs.
LORA_TARGETS = {
    "all": ["query", "key", "value", "attention_output", "feedforward_intermediate_dense",
            "feedforward_output_dense"],
    "attention": ["query", "value"],
}
# progress(epoch, step, steps, running loss, steps per second), after every step
Progress = Callable[[int, int, int, float, float], None]


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

    @property
    def stopping_metric(self) -> str:
        """The metric key early stopping reads (multi-label accuracy is subset accuracy)."""
        return "subset_accuracy" if self.multi_label and self.metric == "accuracy" else self.metric


@dataclass
class ModelProbabilities:
    """probabilities(texts) -> [n, labels] as scoring computes them: a long text's windows
    combined, then the model's temperatures (None: not calibrated yet)."""

    predictor: classifier.Predictor  # uncalibrated (temperature 1)
    encoder: encode.BatchEncoder
    num_labels: int
    multi_label: bool
    calibration: metrics.Calibration | None = None

    def uncalibrated(self, texts: list[str]) -> tuple[np.ndarray, encode.EncodedChunk]:
        """Probabilities [n, labels] at temperature 1, and the texts as they were encoded."""
        chunk = self.encoder.encode(texts)
        return api.chunk_probabilities(self.predictor, chunk, self.num_labels, self.multi_label), chunk

    def __call__(self, texts: list[str]) -> np.ndarray:
        probs, chunk = self.uncalibrated(texts)
        return self.calibrate(probs, api.windows_per_text(chunk))

    def calibrate(self, probs: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities [n, labels] of texts of windows [n] -> what scoring gives."""
        cal = self.calibration
        if cal is None:
            return probs
        return metrics.with_row_temperatures(probs, cal.temperatures.per_text(windows), self.multi_label)

    def calibrated(self, calibration: metrics.Calibration) -> "ModelProbabilities":
        return replace(self, calibration=calibration)


@dataclass
class TrainResult:
    model_dir: Path  # a complete model directory, under the work directory
    spec: modelspec.ModelSpec  # its spec, still to be completed and written by the job
    validation: dict  # the saved model's full metrics on the validation set
    state: TrainState  # the run's history and loss curve
    probabilities: ModelProbabilities  # the saved model's, calibrated
    reference: dict  # its drift reference (the spec's `reference`)


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


# ----------------------------------------------------------------------------- build

def build_model(cfg: TrainConfig, names: list[str], base: dict, init_from: Path | None,
                model_name: str, policy: classifier.DevicePolicy,
                log) -> tuple[modelspec.ModelSpec, object, Path | None]:
    """The new model's spec and Keras model, started from --base; and the tokenizer.json the
    new model directory must carry itself, if any."""
    hf_head = hf_classifier(base)
    spec = modelspec.ModelSpec(
        name=model_name, labels=names, base=base, max_length=cfg.max_length,
        pooling="cls" if hf_head else cfg.pooling,
        head_activation=convert.head_activation(hf_head) if hf_head else None,
        dropout=cfg.dropout, lora_rank=cfg.lora_rank or None,
        lora_targets=LORA_TARGETS[cfg.lora_targets] if cfg.lora_rank else None,
        problem_type="multi_label" if cfg.multi_label else "single_label")
    model = classifier.build_from_spec(spec, dtype=policy.dtype)
    if hf_head:
        log(start_from_checkpoint(model, spec, hf_head))
    tokenizer_file = None
    if init_from is not None:
        start = modeldir.read(init_from)
        start_from(model, spec, start)
        if start.spec.tokenizer_file:
            tokenizer_file = start.path / start.spec.tokenizer_file
    return spec, model, tokenizer_file


def build_encoder(cfg: TrainConfig, base: dict, tokenizer_file: Path | None) -> encode.BatchEncoder:
    if tokenizer_file is not None:
        tokenizer, pad_id = encode.load_tokenizer(tokenizer_file, cfg.max_length), None
    else:
        tokenizer, pad_id = backbones.base_tokenizer(base, cfg.max_length)
    overlap = api.window_overlap(cfg.max_length) if cfg.long_text == "window" else None
    return encode.BatchEncoder(tokenizer, cfg.max_length, pad_id=pad_id, window_overlap=overlap)


def build_optimizer(cfg: TrainConfig, total_steps: int, warmup_steps: int,
                    policy: classifier.DevicePolicy):
    import keras

    optimizer = keras.optimizers.AdamW(
        learning_rate=warmup_linear_decay(cfg.learning_rate, total_steps, warmup_steps),
        weight_decay=cfg.weight_decay)
    return keras.mixed_precision.LossScaleOptimizer(optimizer) if policy.mixed else optimizer


def compile_train_step(model, optimizer, averages: list | None, cfg: TrainConfig,
                       warmup_steps: int, mixed: bool):
    """One XLA-compiled optimizer step (token_ids, padding_mask, y, weight) -> loss; it also
    moves the weight averages, if any."""
    import keras
    import tensorflow as tf

    loss_fn = (keras.losses.BinaryCrossentropy(from_logits=True) if cfg.multi_label
               else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    variables = model.trainable_variables

    @tf.function(jit_compile=True, reduce_retracing=False, autograph=False)
    def train_step(token_ids, padding_mask, y, weight):
        with tf.GradientTape() as tape:
            logits = model({"token_ids": token_ids, "padding_mask": padding_mask}, training=True)
            loss = loss_fn(y, logits, sample_weight=weight)
            scaled = optimizer.scale_loss(loss) if mixed else loss
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables))
        if averages:
            decay = tf.where(optimizer.iterations > warmup_steps, cfg.ema_decay, 0.0)
            for average, v in zip(averages, variables):
                average.assign(decay * average + (1.0 - decay) * v)
        return loss

    return train_step


def build(cfg: TrainConfig, names: list[str], base: dict, init_from: Path | None,
          train_data: LabeledData, work_dir: Path, model_name: str, log=print,
          progress: Progress | None = None) -> "Trainer":
    """Everything a run trains with, resumed from the work directory's checkpoint if there is one."""
    policy = classifier.choose_device()  # starts TensorFlow quietly, before keras is imported
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    spec, model, tokenizer_file = build_model(cfg, names, base, init_from, model_name, policy, log)
    encoder = build_encoder(cfg, base, tokenizer_file)
    rows = TrainingRows.of(encoder, train_data.texts)
    steps = [epoch_steps(encoder, rows, cfg.batch_size, cfg.seed, e) for e in range(1, cfg.epochs + 1)]
    warmup_steps = int(sum(steps) * cfg.warmup_fraction)
    optimizer = build_optimizer(cfg, sum(steps), warmup_steps, policy)
    variables = model.trainable_variables
    optimizer.build(variables)
    # Averages start from the weights at the end of warm-up: until then they just copy them.
    averages = [tf.Variable(v.value, trainable=False) for v in variables] if cfg.ema_decay else None
    log(f"training {sum(int(np.prod(v.shape)) for v in variables):,} parameters "
        f"({'LoRA rank %d + head' % cfg.lora_rank if cfg.lora_rank else 'full fine-tune'}) on "
        f"{len(train_data.texts):,} rows ({len(rows.ids):,} windows), {steps[0]} steps/epoch, "
        f"up to {cfg.epochs} epochs")
    trainer = Trainer(
        cfg=cfg, spec=spec, model=model, encoder=encoder, rows=rows, policy=policy,
        optimizer=optimizer, variables=variables, averages=averages,
        train_step=compile_train_step(model, optimizer, averages, cfg, warmup_steps, policy.mixed),
        probabilities=ModelProbabilities(
            classifier.Predictor(model, spec.problem_type, policy, pooling=spec.pooling), encoder,
            len(names), cfg.multi_label),
        checkpoint=Checkpoint(work_dir), work_dir=work_dir, tokenizer_file=tokenizer_file,
        log=log, progress=progress)
    trainer.resume()
    return trainer


# ----------------------------------------------------------------------------- the loop

@dataclass
class Trainer:
    cfg: TrainConfig
    spec: modelspec.ModelSpec
    model: object  # keras.Model
    encoder: encode.BatchEncoder
    rows: TrainingRows
    policy: classifier.DevicePolicy
    optimizer: object  # keras optimizer
    variables: list  # the trainable variables, in the optimizer's order
    averages: list | None  # their moving averages (--ema-decay), else None
    train_step: Callable
    probabilities: ModelProbabilities  # the model as it is now, uncalibrated
    checkpoint: Checkpoint
    work_dir: Path
    tokenizer_file: Path | None  # a tokenizer.json the new model directory must carry itself
    log: Callable[[str], None]
    progress: Progress | None
    state: TrainState = field(default_factory=TrainState)
    best_weights: dict | None = None  # variable path -> value at the best epoch so far
    started: float = field(default_factory=time.time)

    @property
    def done(self) -> bool:
        return self.state.epoch > self.cfg.epochs or self.state.bad_epochs >= self.cfg.patience

    def resume(self) -> None:
        if self.checkpoint.exists():
            self.state, self.best_weights = self.checkpoint.load(self.model, self.optimizer,
                                                                 self.averages)
            self.log(f"resuming from the checkpoint at epoch {self.state.epoch}, step {self.state.step}")
        self.started = time.time() - self.state.seconds

    def save(self) -> None:
        self.state.seconds = round(time.time() - self.started, 1)
        self.checkpoint.save(self.model, self.optimizer, self.averages, self.state, self.best_weights)

    def run_epoch(self, targets: np.ndarray) -> list[float]:
        """The current epoch's remaining steps; returns their losses."""
        state, epoch = self.state, self.state.epoch
        batches = epoch_batches(self.encoder, self.rows, targets, self.cfg.batch_size,
                                self.cfg.seed, epoch)
        t0, first_step, losses = time.time(), state.step, []
        every = max(1, min(100, len(batches) // 10))  # loss curve points and log lines
        for step in range(state.step, len(batches)):
            losses.append(self.step(batches[step]))
            state.step = step + 1
            if self.progress is not None:
                self.progress(epoch, state.step, len(batches), float(np.mean(losses[-every:])),
                              (state.step - first_step) / max(time.time() - t0, 1e-9))
            if state.step % every == 0:
                state.step_losses.append([(epoch - 1) * len(batches) + state.step,
                                          float(np.mean(losses[-every:]))])
                self.log(f"epoch {epoch} step {state.step}/{len(batches)} "
                         f"loss {np.mean(losses[-every:]):.4f} ({time.time() - t0:.0f}s)")
            if self.cfg.checkpoint_every and state.step % self.cfg.checkpoint_every == 0:
                self.save()
        return losses

    def step(self, batch: TrainingBatch) -> float:
        import tensorflow as tf

        with tf.device(self.policy.device):
            return float(self.train_step(batch.inputs.token_ids, batch.inputs.padding_mask,
                                         batch.targets, batch.weights))

    def end_epoch(self, val_data: LabeledData, losses: list[float]) -> None:
        """Validate (the weight averages, when kept), keep the best weights, checkpoint."""
        state = self.state
        entry = {"epoch": state.epoch, "train_loss": float(np.mean(losses)) if losses else None,
                 "validation": self.validation_summary(val_data)}
        raw_weights = None
        if self.averages:  # the raw weights' figures stay in the history, for comparison
            raw_weights = [np.asarray(v.numpy()) for v in self.variables]
            entry["validation_raw_weights"] = entry["validation"]
            for v, average in zip(self.variables, self.averages):
                v.assign(average)
            entry["validation"] = self.validation_summary(val_data)
        state.history.append(entry)
        self.log_epoch(entry)
        self.keep_if_best(entry["validation"][self.cfg.stopping_metric])
        if raw_weights is not None:  # training goes on from the raw weights
            for v, value in zip(self.variables, raw_weights):
                v.assign(value)
        state.epoch, state.step = state.epoch + 1, 0
        self.save()

    def validation_summary(self, val_data: LabeledData) -> dict:
        return metrics.summary_metrics(metrics.evaluate(
            self.probabilities, val_data, self.spec.labels, self.cfg.multi_label))

    def log_epoch(self, entry: dict) -> None:
        metric, val = self.cfg.stopping_metric, entry["validation"]
        self.log(f"epoch {entry['epoch']}: validation {metric} {val[metric]:.4f}, "
                 f"accuracy {val.get('accuracy', 0):.4f}"
                 + (f" (averaged weights; raw weights {entry['validation_raw_weights'][metric]:.4f})"
                    if self.averages else ""))

    def keep_if_best(self, score: float) -> None:
        state = self.state
        if state.best is None or score > state.best:
            state.best, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            self.best_weights = {v.path: np.asarray(v.numpy()) for v in self.variables}
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= self.cfg.patience:
                self.log(f"early stop: no validation improvement for {state.bad_epochs} epoch(s)")

    # ------------------------------------------------------------------------- finish

    def finish(self, val_data: LabeledData) -> TrainResult:
        """The best weights, saved as a model directory, calibrated on the validation set."""
        by_path = {v.path: v for v in self.variables}
        for name, value in self.best_weights.items():
            by_path[name].assign(value)
        spec, out = self.spec, self.work_dir / "model"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        classifier.save_weights(self.model, out / spec.weights_file,
                                scope=classifier.weights_scope(spec))
        if self.tokenizer_file is not None:
            shutil.copy(self.tokenizer_file, out / "tokenizer.json")
            spec.tokenizer_file = "tokenizer.json"
        spec.training = {"history": self.state.history, "best_epoch": self.state.best_epoch,
                         "seconds": round(time.time() - self.started, 1)}
        # The validation set encoded and scored once: [n, labels] at temperature 1
        raw, chunk = self.probabilities.uncalibrated(val_data.texts)
        windows = api.windows_per_text(chunk)  # [n]
        tokens = drift.token_counts(  # [n], as a run counts them
            api.Prepared([None] * len(val_data.texts), np.arange(len(val_data.texts)), chunk))
        whole = whole_texts(val_data.texts)  # calibrate and profile on texts as traffic has them
        calibration = metrics.calibrate(val_data.targets[whole], raw[whole], windows[whole],
                                        self.cfg.multi_label)
        spec.temperature = calibration.temperature
        spec.windowed_temperature = calibration.windowed_temperature
        spec.training["calibration"] = asdict(calibration)
        probabilities = self.probabilities.calibrated(calibration)
        probs = probabilities.calibrate(raw, windows)
        return TrainResult(
            out, spec, metrics.metrics_of(probs, val_data, spec.labels, self.cfg.multi_label),
            self.state, probabilities,
            validation_reference(val_data.take(np.flatnonzero(whole)), probs[whole], tokens[whole],
                                 spec.labels))


# A training source with fewer whole validation texts than this gets no part of the reference
MIN_REFERENCE_PART_ROWS = 200


def validation_reference(data: LabeledData, probs: np.ndarray, tokens: np.ndarray,
                         names: list[str]) -> dict:
    """The model's drift reference (scorer.drift) on its validation set's whole texts, for its
    spec: what the model is known to produce (its calibrated probabilities [n, labels] of them,
    their token counts [n]), which every run it scores is compared with; and one part per training
    source, so that traffic like any one source the model was made for is not taken for a shift."""

    def profile_of(rows: np.ndarray) -> dict:
        profile = drift.Profile.empty(names)
        profile.add(probs[rows], tokens[rows])
        return profile.to_json()

    reference = {"data": {"validation": data.fingerprint},
                 "profile": profile_of(np.arange(len(data.texts)))}
    parts = [np.flatnonzero(data.sources == i) for i in range(len(data.source_names))]
    if sum(len(rows) >= MIN_REFERENCE_PART_ROWS for rows in parts) >= 2:
        reference["parts"] = [
            {"name": name, "data": {"validation": data.take(rows).fingerprint}, "profile": profile_of(rows)}
            for name, rows in zip(data.source_names, parts) if len(rows) >= MIN_REFERENCE_PART_ROWS]
    return reference


def train(cfg: TrainConfig, names: list[str], base: dict, init_from: Path | None,
          train_data: LabeledData, val_data: LabeledData, work_dir: Path, model_name: str,
          log=print, progress: Progress | None = None) -> TrainResult:
    """Train into work_dir/model (a complete model directory): build, epochs until done, finish."""
    trainer = build(cfg, names, base, init_from, train_data, work_dir, model_name, log, progress)
    while not trainer.done:
        trainer.end_epoch(val_data, trainer.run_epoch(train_data.targets))
    return trainer.finish(val_data)
