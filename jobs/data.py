"""Labelled data for the job: read, check, report, split.

Problems that make training meaningless stop the job (DataError); the rest are counted in a
report that is printed and kept with the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from scorer.errors import DataError
from scorer.source import expand_inputs, read_chunks


@dataclass
class LabeledData:
    texts: list[str]
    targets: np.ndarray  # [n] int label ids, or [n, labels] 0/1 for multi-label
    # Which source (an index into source_names: the --train sources' names) each row came from
    sources: np.ndarray | None = None  # [n] int; None: one source
    source_names: list[str] = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)  # rows + sha256 of the (text, label) pairs

    def __post_init__(self):
        if self.sources is None:
            self.sources = np.zeros(len(self.texts), np.int32)
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.texts, self.targets)

    def take(self, rows) -> "LabeledData":
        rows = list(rows)
        return LabeledData([self.texts[i] for i in rows], self.targets[rows],
                           self.sources[rows], self.source_names)


# File names that say which split a file is, not which data: `sst2/train.jsonl` is named `sst2`
SPLIT_FILE_NAMES = {"train", "training", "dev", "validation", "valid", "val", "test", "data"}


@dataclass(frozen=True)
class NamedSource:
    """A --train (--validation, --test) argument: its name (the drift reference's part, shown in
    run warnings, reports and metric labels) and its path."""
    name: str
    path: str

    @classmethod
    def parse(cls, argument: str) -> "NamedSource":
        """NAME=PATH, or a path named after itself (a path that exists is never split at '=')."""
        name, sep, path = argument.partition("=")
        if sep and name and path and "/" not in name and not os.path.exists(argument):
            return cls(name, path)
        return cls(name_of_path(argument), argument)


def name_of_path(path: str) -> str:
    """A short name for data at path: its file name without extensions, or the directory's name
    when the file is named after a split (`sst2/train.jsonl`: `sst2`) or is a glob."""
    p = PurePosixPath(path.rstrip("/") or path)
    stem = p.name.split(".")[0]
    if (stem.lower() in SPLIT_FILE_NAMES or any(c in stem for c in "*?[")) and p.parent.name:
        return p.parent.name
    return stem or path


@dataclass
class RawLabeled:
    texts: list  # str | None
    labels: list  # raw label values (lists for multi-label)
    sources: list[int]  # per row: the index of the source (argument) it was read from
    paths: list[str]
    names: list[str]  # each source's name (NamedSource)

    @property
    def source(self) -> str:
        return ", ".join(self.paths)


def read_raw(arguments: list[str], text_column: str, label_column: str) -> RawLabeled:
    texts, labels, sources = [], [], []
    named = list(dict.fromkeys(NamedSource.parse(a) for a in arguments))  # given twice: read once
    names = [s.name for s in named]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise DataError(f"two data sources are named {clash!r} "
                        f"({', '.join(s.path for s in named if s.name == clash)}): "
                        "name them apart with NAME=PATH, e.g. --train reviews=data/train.jsonl")
    paths = [s.path for s in named]
    for index, path in enumerate(paths):
        for chunk in read_chunks(expand_inputs([path]), text_column):
            if label_column not in chunk.columns.column_names:
                raise DataError(f"{chunk.source}: no label column {label_column!r} "
                                f"(columns: {', '.join(chunk.columns.column_names)})")
            texts += chunk.texts
            labels += chunk.columns.column(label_column).to_pylist()
            sources += [index] * len(chunk.texts)
    return RawLabeled(texts, labels, sources, paths, names)


def label_set(raw: RawLabeled, multi_label: bool) -> list[str]:
    """Label names in id order: 0..max for integer labels, sorted names otherwise."""
    values = {v for y in raw.labels if y is not None for v in (y if multi_label else [y])}
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [str(v) for v in range(max(values) + 1)]
    return sorted(str(v) for v in values)


def prepare(raw: RawLabeled, names: list[str], multi_label: bool, role: str,
            report: dict) -> LabeledData:
    """Drop rows with no usable text or label (counted), map labels to ids (unknown: fatal)."""
    index = {n: i for i, n in enumerate(names)}

    def label_id(v):
        if isinstance(v, int) and not isinstance(v, bool) and str(v) not in index and 0 <= v < len(names):
            return v  # an integer label with --label-names given
        return index.get(str(v))

    texts, targets, sources, empty, unlabelled, unknown = [], [], [], 0, 0, Counter()
    for text, y, source in zip(raw.texts, raw.labels, raw.sources):
        if text is None or not str(text).strip():
            empty += 1
            continue
        if y is None or (multi_label and not isinstance(y, list)):
            unlabelled += 1
            continue
        ids = [label_id(v) for v in (y if multi_label else [y])]
        if None in ids:
            unknown.update(str(v) for v, i in zip(y if multi_label else [y], ids) if i is None)
            continue
        texts.append(text)
        sources.append(source)
        if multi_label:
            row = np.zeros(len(names), np.float32)
            row[ids] = 1.0
            targets.append(row)
        else:
            targets.append(ids[0])
    section = report.setdefault(role, {})
    section.update(rows_read=len(raw.texts), rows_used=len(texts), empty_or_null_text=empty,
                   missing_label=unlabelled)
    if unknown:
        raise DataError(f"{role} data ({raw.source}) has labels outside {names}: "
                        f"{dict(unknown.most_common(5))}")
    if not texts:
        raise DataError(f"{role} data ({raw.source}) has no usable rows")
    data = LabeledData(texts, np.array(targets, dtype=np.float32 if multi_label else np.int32),
                       np.array(sources, np.int32), raw.names)
    counts = (data.targets.sum(0).astype(int) if multi_label
              else np.bincount(data.targets, minlength=len(names)))
    section["class_counts"] = {n: int(c) for n, c in zip(names, counts)}
    present = counts[counts > 0]
    section["imbalance_ratio"] = round(float(present.max() / present.min()), 2)
    text_counts = Counter(texts)
    section["duplicate_texts"] = sum(c - 1 for c in text_counts.values() if c > 1)
    return data


def check(train: LabeledData, validation: LabeledData, names: list[str], multi_label: bool,
          report: dict) -> None:
    """Fatal problems stop the job; overlap between the splits is reported."""
    def present(d):
        return (set(np.flatnonzero(d.targets.sum(0))) if multi_label else set(np.unique(d.targets)))

    in_train = present(train)
    if len(in_train) < 2 and not multi_label:
        raise DataError(f"training data has only one class ({names[next(iter(in_train))]}): "
                        "nothing to learn")
    unseen = present(validation) - in_train
    if unseen:
        raise DataError(f"validation labels never seen in training: {[names[i] for i in sorted(unseen)]}")
    overlap = set(train.texts) & set(validation.texts)
    report["train_validation_overlap"] = len(overlap)


def fingerprint(texts: list[str], targets: np.ndarray) -> dict:
    h = hashlib.sha256()
    for t, y in zip(texts, targets.tolist()):
        h.update(json.dumps([t, y]).encode())
        h.update(b"\n")
    return {"rows": len(texts), "sha256": h.hexdigest()}


def containment_groups(texts: list[str]) -> np.ndarray:
    """[n] group ids: each text's group is that of a longer (or equal, earlier) text containing it
    word for word, else its own row. SST-2's rows are every phrase of its sentences: without this a
    split validates on parts of sentences it trains on, and the model looks surer than it is."""
    padded = [f" {' '.join(t.split())} " for t in texts]
    words = [set(p.split()) for p in padded]
    postings: dict[str, list[int]] = {}
    order = sorted(range(len(texts)), key=lambda i: -len(padded[i]))  # containers first
    group = np.arange(len(texts))
    for i in order:
        if words[i]:
            rarest = min(words[i], key=lambda w: len(postings.get(w, ())))
            container = next((j for j in postings.get(rarest, ()) if padded[i] in padded[j]), None)
            if container is not None:
                group[i] = group[container]
        for w in words[i]:
            postings.setdefault(w, []).append(i)
    return group


def whole_texts(texts: list[str]) -> np.ndarray:
    """[n] bool: the texts not contained in another (SST-2's sentences, not their phrases)."""
    return containment_groups(texts) == np.arange(len(texts))


def split(data: LabeledData, fraction: float, seed: int) -> tuple[LabeledData, LabeledData]:
    """A seeded split, stratified by label (by first label for multi-label), that keeps a text and
    the texts it contains on one side (containment_groups): about `fraction` of each label's rows."""
    rng = np.random.default_rng(seed)
    strata = data.targets if data.targets.ndim == 1 else data.targets.argmax(1)
    group = containment_groups(data.texts)
    members: dict[int, list[int]] = {}
    for row, g in enumerate(group.tolist()):
        members.setdefault(g, []).append(row)
    held = []
    for value in np.unique(strata):
        roots = np.array([g for g in members if strata[g] == value])
        want = max(1, round(int((strata[group] == value).sum()) * fraction))
        if len(roots) < 2:
            continue
        taken = 0
        for g in rng.permutation(roots).tolist():
            if taken >= want:
                break
            held += members[g]
            taken += len(members[g])
    held_set = set(held)
    return (data.take(i for i in range(len(data.texts)) if i not in held_set),
            data.take(sorted(held)))
