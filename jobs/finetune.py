"""Fine-tune a classifier head (+ LoRA adapter, or the whole encoder) into a scorer model directory.

    python -m jobs.finetune --train ../shared/datasets/sst2/train.jsonl \\
        --test ../shared/datasets/sst2/dev.jsonl --label-names negative,positive \\
        --name sentiment --out scorer/models/default

Recipe: AdamW, linear warm-up over 10% of the steps then linear decay, batch 32, dropout 0.1,
early stopping on validation accuracy. Batches are cut from length buckets with the same
encoder the scorer uses, so training and scoring tokenize identically.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

import scorer
from scorer import backbone as backbones
from scorer import classifier, encode, modeldir
from scorer.errors import ScorerError
from scorer.source import expand_inputs, read_chunks


@dataclass
class TrainConfig:
    base: str = "all-minilm-l6-v2"  # a packaged encoder id, or a Hugging Face checkpoint dir
    lora_rank: int = 8  # 0: full fine-tune
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    pooling: str = "mean"
    dropout: float = 0.1
    patience: int = 1  # epochs without improvement before stopping
    validation_fraction: float = 0.03  # held out of --train when no --validation is given
    seed: int = 0
    multi_label: bool = False


@dataclass
class LabeledData:
    texts: list[str]
    targets: np.ndarray  # [n] int label ids, or [n, labels] 0/1 for multi-label
    fingerprint: dict  # rows + sha256 of the (text, label) pairs


# ----------------------------------------------------------------------------- data

def read_labeled(paths: list[str], text_column: str, label_column: str) -> tuple[list, list]:
    texts, labels = [], []
    for chunk in read_chunks(expand_inputs(paths), text_column):
        if label_column not in chunk.columns.column_names:
            raise ScorerError(f"{chunk.source}: no label column {label_column!r}")
        texts += chunk.texts
        labels += chunk.columns.column(label_column).to_pylist()
    keep = [i for i, (t, y) in enumerate(zip(texts, labels)) if t and t.strip() and y is not None]
    dropped = len(texts) - len(keep)
    if dropped:
        click.echo(f"skipping {dropped} rows with an empty text or no label", err=True)
    return [texts[i] for i in keep], [labels[i] for i in keep]


def label_names_for(raw_labels: list, names: list[str] | None, multi_label: bool) -> list[str]:
    values = {v for y in raw_labels for v in (y if multi_label else [y])}
    if names:
        return names
    if all(isinstance(v, int) for v in values):
        return [str(v) for v in range(max(values) + 1)]
    return sorted(str(v) for v in values)


def to_targets(raw_labels: list, names: list[str], multi_label: bool) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}

    def one(v):
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
            return v
        if str(v) in index:
            return index[str(v)]
        raise ScorerError(f"label {v!r} is not one of {names}")

    if multi_label:
        out = np.zeros((len(raw_labels), len(names)), np.float32)
        for i, ys in enumerate(raw_labels):
            out[i, [one(v) for v in ys]] = 1.0
        return out
    return np.array([one(v) for v in raw_labels], dtype=np.int32)


def fingerprint(texts: list[str], targets: np.ndarray) -> dict:
    h = hashlib.sha256()
    for t, y in zip(texts, targets.tolist()):
        h.update(json.dumps([t, y]).encode())
    return {"rows": len(texts), "sha256": h.hexdigest()}


def split(data: LabeledData, fraction: float, seed: int) -> tuple[LabeledData, LabeledData]:
    """A seeded split, stratified by label (by first label for multi-label)."""
    rng = np.random.default_rng(seed)
    strata = data.targets if data.targets.ndim == 1 else data.targets.argmax(1)
    held = []
    for value in np.unique(strata):
        rows = np.flatnonzero(strata == value)
        held += list(rng.permutation(rows)[: max(1, round(len(rows) * fraction))])
    held_set = set(held)
    keep = [i for i in range(len(data.texts)) if i not in held_set]
    held = sorted(held)

    def take(rows):
        texts = [data.texts[i] for i in rows]
        return LabeledData(texts, data.targets[rows], fingerprint(texts, data.targets[rows]))

    return take(keep), take(held)


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


# ----------------------------------------------------------------------------- training

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


def evaluate(probabilities, data: LabeledData, multi_label: bool, threshold: float = 0.5) -> dict:
    """Metrics of a probabilities(texts) -> [n, labels] function on labelled data."""
    probs = probabilities(data.texts)
    if multi_label:
        predicted = probs >= threshold
        return {"rows": len(data.texts),
                "subset_accuracy": float((predicted == data.targets.astype(bool)).all(1).mean())}
    predicted = probs.argmax(1)
    return {"rows": len(data.texts), "accuracy": float((predicted == data.targets).mean()),
            "macro_f1": macro_f1(data.targets, predicted, probs.shape[1])}


def predict(predictor, encoder, texts: list[str]) -> np.ndarray:
    chunk = encoder.encode(texts)
    probs = None
    for batch in chunk.batches:
        out = predictor(batch.token_ids, batch.padding_mask)[: len(batch.rows)]
        if probs is None:
            probs = np.zeros((len(texts), out.shape[1]), np.float32)
        probs[batch.rows] = out
    return probs


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    scores = []
    for c in range(num_labels):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def train(cfg: TrainConfig, names: list[str], train_data: LabeledData, val_data: LabeledData,
          out: Path, model_name: str, test_data: LabeledData | None = None, log=print) -> dict:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    policy = classifier.choose_device()
    base = ({"kind": "packaged", "id": cfg.base} if cfg.base in backbones.PACKAGED
            else {"kind": "hf_dir", "path": str(Path(cfg.base).resolve())})
    spec = modeldir.ModelSpec(
        name=model_name, labels=names, base=base, max_length=cfg.max_length, pooling=cfg.pooling,
        dropout=cfg.dropout, lora_rank=cfg.lora_rank or None,
        problem_type="multi_label" if cfg.multi_label else "single_label")
    model = classifier.build_from_spec(spec, dtype=policy.dtype)
    tokenizer = encode.load_tokenizer(backbones.tokenizer_path(base), cfg.max_length)
    encoder = encode.BatchEncoder(tokenizer, cfg.max_length)
    ids, lengths, _ = encoder.tokenize(train_data.texts)
    steps_per_epoch = sum(-(-int(np.sum(encoder.bucket_of(lengths) == b)) // cfg.batch_size)
                          for b in range(len(encoder.buckets)))
    total = steps_per_epoch * cfg.epochs
    optimizer = keras.optimizers.AdamW(
        learning_rate=warmup_linear_decay(cfg.learning_rate, total, int(total * cfg.warmup_fraction)),
        weight_decay=cfg.weight_decay)
    if policy.mixed:
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    loss_fn = (keras.losses.BinaryCrossentropy(from_logits=True) if cfg.multi_label
               else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    variables = model.trainable_variables
    log(f"training {sum(int(np.prod(v.shape)) for v in variables):,} parameters on "
        f"{len(train_data.texts):,} rows, {steps_per_epoch} steps/epoch, {cfg.epochs} epochs")

    @tf.function(jit_compile=True, reduce_retracing=False, autograph=False)
    def train_step(token_ids, padding_mask, y, weight):
        with tf.GradientTape() as tape:
            logits = model({"token_ids": token_ids, "padding_mask": padding_mask}, training=True)
            loss = loss_fn(y, logits, sample_weight=weight)
            scaled = optimizer.scale_loss(loss) if policy.mixed else loss
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    predictor = classifier.Predictor(model, spec.problem_type, policy)

    def probabilities(texts):
        return predict(predictor, encoder, texts)

    metric = "subset_accuracy" if cfg.multi_label else "accuracy"
    rng = np.random.default_rng(cfg.seed)
    history, best, best_weights, bad_epochs = [], -1.0, None, 0
    started = time.time()
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        t0 = time.time()
        batches = training_batches(encoder, ids, lengths, train_data.targets, cfg.batch_size, rng)
        for step, (batch, y, weight) in enumerate(batches, start=1):
            with tf.device(policy.device):
                losses.append(float(train_step(batch.token_ids, batch.padding_mask, y, weight)))
            if step % 200 == 0:
                log(f"epoch {epoch} step {step}/{len(batches)} loss {np.mean(losses[-200:]):.4f} "
                    f"({time.time() - t0:.0f}s)")
        val = evaluate(probabilities, val_data, cfg.multi_label)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                        "seconds": round(time.time() - t0, 1), "validation": val})
        log(f"epoch {epoch}: train loss {np.mean(losses):.4f}, validation {val}")
        if val[metric] > best:
            best, bad_epochs = val[metric], 0
            best_weights = [v.numpy() for v in variables]
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                log(f"early stop: no validation improvement for {bad_epochs} epoch(s)")
                break
    for v, w in zip(variables, best_weights):
        v.assign(w)

    metrics = {"validation": evaluate(probabilities, val_data, cfg.multi_label)}
    if test_data is not None:
        metrics["test"] = evaluate(probabilities, test_data, cfg.multi_label)
    out.mkdir(parents=True, exist_ok=True)
    classifier.save_weights(model, out / spec.weights_file, scope="trainable")
    spec.metrics = metrics
    spec.training = {
        "command": "python -m jobs.finetune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config": asdict(cfg), "train_data": train_data.fingerprint,
        "validation_data": val_data.fingerprint,
        "test_data": test_data.fingerprint if test_data else None,
        "history": history, "seconds": round(time.time() - started, 1),
        "scorer_version": scorer.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    modeldir.write_spec(out, spec)
    return metrics


def load_split(paths, text_column, label_column, names, multi_label):
    texts, raw = read_labeled(paths, text_column, label_column)
    targets = to_targets(raw, names, multi_label)
    return LabeledData(texts, targets, fingerprint(texts, targets))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--train", "train_paths", multiple=True, required=True, help="Labelled training data.")
@click.option("--validation", "validation_paths", multiple=True,
              help="Validation data for early stopping (default: a seeded split of --train).")
@click.option("--test", "test_paths", multiple=True, help="Held-out data scored once at the end.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--label-names", help="Comma-separated names for integer labels 0, 1, ...")
@click.option("--base", default=TrainConfig.base, show_default=True,
              help="Packaged encoder id or a local Hugging Face checkpoint directory.")
@click.option("--name", "model_name", required=True, help="Model name recorded in the directory.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model directory to write.")
@click.option("--lora-rank", type=int, default=TrainConfig.lora_rank, show_default=True,
              help="LoRA rank; 0 fine-tunes the whole encoder.")
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True)
@click.option("--learning-rate", type=float, default=TrainConfig.learning_rate, show_default=True)
@click.option("--max-length", type=int, default=TrainConfig.max_length, show_default=True)
@click.option("--multi-label", is_flag=True, help="Sigmoid outputs, binary cross-entropy.")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
def main(train_paths, validation_paths, test_paths, text_column, label_column, label_names, base,
         model_name, out, lora_rank, epochs, learning_rate, max_length, multi_label, seed):
    """Train a classifier into a scorer model directory.

    Example (how the default sentiment model was made):

        python -m jobs.finetune --train ../shared/datasets/sst2/train.jsonl
        --test ../shared/datasets/sst2/dev.jsonl --label-names negative,positive
        --name sentiment --out scorer/models/default
    """
    cfg = TrainConfig(base=base, lora_rank=lora_rank, epochs=epochs, learning_rate=learning_rate,
                      max_length=max_length, seed=seed, multi_label=multi_label)
    try:
        texts, raw = read_labeled(list(train_paths), text_column, label_column)
        names = label_names_for(raw, label_names.split(",") if label_names else None, multi_label)
        targets = to_targets(raw, names, multi_label)
        data = LabeledData(texts, targets, fingerprint(texts, targets))
        if validation_paths:
            val = load_split(list(validation_paths), text_column, label_column, names, multi_label)
        else:
            data, val = split(data, cfg.validation_fraction, seed)
        test = (load_split(list(test_paths), text_column, label_column, names, multi_label)
                if test_paths else None)
        metrics = train(cfg, names, data, val, out, model_name, test,
                        log=lambda m: click.echo(m, err=True))
    except ScorerError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    click.echo(json.dumps(metrics))


if __name__ == "__main__":
    main()
