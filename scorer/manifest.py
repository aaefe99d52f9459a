"""The one reader of `_manifest.json` (what a finished run, or --follow's output so far, holds and
how it was made), used by `scorer run`'s summary and exit code, --metrics-file (scorer.metrics),
--follow and `scorer report`:

    m = manifest.read("scored/")               # a local output directory's _manifest.json
    m = manifest.Manifest.from_json(data)      # a manifest in memory (RunResult.manifest)
    m.to_json()                                # as written (scorer.commit.OutputDir.write_manifest)
    m.rows_in, m.model.name, m.drift.psi, m.timing["total_seconds"]

It reads every manifest scorer has written (tests/manifests/ keeps one of each): a field an older
one lacks takes the value that says so (0 rows dead-lettered before --dead-letter, no profile
before drift, no drift parts before reference parts). The manifest is written by scorer.runs
(Run.manifest) and scorer.follow as a Manifest, and turned into JSON (to_json) only where the file
is written (scorer.commit.OutputDir.write_manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from scorer import drift, fileio, modeldir
from scorer.drift import Drift
from scorer.errors import InputError, ModelError
from scorer.modelid import ModelId

MANIFEST = "_manifest.json"  # in the output directory (scorer.commit)


@dataclass
class DeadLetter:
    """--dead-letter: where the bad rows went, and their part files."""
    path: str
    parts: list[dict] = field(default_factory=list)  # {"file", "rows"}, as the output's parts

    def to_json(self) -> dict:
        return {"path": self.path, "parts": self.parts}


@dataclass
class Manifest:
    """A manifest, its fields in the order they are written (to_json)."""

    scorer_version: str | None = None
    model: ModelId | None = None
    inputs: list[dict] = field(default_factory=list)  # {"path", "format"} (--follow: {"path", "follow"})
    options: dict = field(default_factory=dict)  # the run's RunOptions, as given
    rows_in: int = 0
    rows_out: int = 0
    rows_scored: int = 0
    rows_with_error: int = 0
    rows_dead_lettered: int = 0  # 0 before --dead-letter existed
    error_reasons: dict[str, int] = field(default_factory=dict)
    rows_truncated: int = 0
    rows_windowed: int = 0
    # rows/s of scoring, from the first batch (older manifests: over the whole run, the model
    # load included); None: the first manifests, for a run of no time
    rows_per_second: float | None = None
    rows_per_second_overall: float | None = None  # over timing["total_seconds"]; None: not recorded
    scoring_seconds: float | None = None  # from the first batch to the end; None: not recorded
    parts: list[dict] = field(default_factory=list)  # {"file", "rows"} (splits: and "bytes")
    dead_letter: DeadLetter | None = None
    timing: dict[str, float] = field(default_factory=dict)  # "<stage>_seconds" -> seconds, total too
    profile: dict | None = None  # scorer.drift.Profile of the rows, as JSON; None: before drift
    summary: dict | None = None  # the profile's summary
    input_columns_renamed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    real_tokens: int = 0
    padded_tokens: int = 0
    padding_fraction: float = 0.0
    device: str | None = None
    precision: str | None = None
    threads: int | None = None
    xla_cache: str | None = None
    started: str | None = None  # UTC, ISO 8601
    finished: str | None = None
    engine: dict | None = None  # --engine ray: {"name", "workers", ...}; None: not written
    # A batch run's (BATCH_ONLY): blank JSON Lines passed over, its splits (scorer.splits:
    # {"planned", "executed_now", "attempts_discarded"}; None: older runs), resumption
    blank_lines_skipped: int | None = None
    splits: dict | None = None
    resumed: bool = False
    rows_resumed_from_checkpoint: int = 0
    # --follow's (FOLLOW_ONLY): the landing entries taken into the output, ever and by the
    # process that wrote it
    units_done: list[str] | None = None
    units_failed: list[str] | None = None
    entries: list[dict] | None = None  # scorer.follow.EntryRecord, as JSON
    units_scored_now: list[str] | None = None
    units_failed_now: list[str] | None = None
    drift: Drift | None = None  # None: before drift
    reference_profile: dict | None = None  # the reference candidate the drift is measured against
    drift_entry: str | None = None  # --follow: the entry whose drift is the manifest's
    drift_window: list[str] | None = None  # --follow: the entries it was judged over (follow.DriftWindow)
    identity: dict | None = None  # what `scorer run` compares to find this very run finished; None: not written

    BATCH_ONLY = ("blank_lines_skipped", "splits", "resumed", "rows_resumed_from_checkpoint")
    FOLLOW_ONLY = ("units_done", "units_failed", "entries", "units_scored_now", "units_failed_now",
                   "drift_entry", "drift_window")
    WRITTEN_IF_SET = ("engine", "identity")

    def to_json(self) -> dict:
        """As written (the writer's, today's format): a batch run's keys or --follow's, never
        both; engine and identity only when there are some."""
        left_out = self.BATCH_ONLY if self.followed else self.FOLLOW_ONLY
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in left_out or (f.name in self.WRITTEN_IF_SET and value is None):
                continue
            data[f.name] = value.to_json() if isinstance(value, (ModelId, DeadLetter, Drift)) else value
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        """A manifest as written (any version); keys this scorer does not know are left out."""
        known = {f.name for f in fields(cls)}
        m = cls(**{k: v for k, v in data.items() if k in known})
        m.model = ModelId.from_json(data["model"]) if data.get("model") else None
        dead = data.get("dead_letter")
        m.dead_letter = DeadLetter(dead["path"], dead.get("parts") or []) if dead else None
        m.drift = Drift.from_json(data["drift"]) if data.get("drift") else None
        for name in ("error_reasons", "timing", "input_columns_renamed", "options"):
            if getattr(m, name) is None:
                setattr(m, name, {})
        return m

    @property
    def followed(self) -> bool:
        """Written by --follow (its entries), not by one batch run."""
        return self.units_done is not None


def read(output: str | Path) -> Manifest:
    """The manifest of a local output directory (an error if there is none, or it is no JSON
    object)."""
    path = Path(output) / MANIFEST
    if not path.exists():
        raise InputError(f"{output}: no {MANIFEST}; is it the output of a finished run?")
    return Manifest.from_json(fileio.read_object(path, InputError))


def drift_over(outputs: list[str], model: str | None = None, reference: str | None = None) -> Drift:
    """The drift of several outputs' rows judged together (`scorer drift`: repeated small runs,
    each too few rows alone): their profiles summed (histograms are counts) and compared with the
    reference of the model that scored them, found as a run finds it (model: its directory, if
    it moved; reference: a file), capped as theirs was under --long-text truncate."""
    read_ = [(out, read(out)) for out in outputs]
    for out, m in read_:
        if not m.profile or m.model is None:
            raise InputError(f"{out}: its {MANIFEST} has no profile of its rows (written by an older "
                             "scorer); score it again to judge it")
    checksums = sorted({m.model.checksum for _, m in read_})
    if len(checksums) > 1:
        raise InputError(f"the outputs were scored by {len(checksums)} models (checksums "
                         f"{', '.join(c[:12] + '...' for c in checksums)}); judge each model's apart")
    caps = {m.drift.length_cap if m.drift else None for _, m in read_}
    if len(caps) > 1:
        raise InputError("the outputs counted text lengths differently (some with --long-text "
                         "truncate, some with windows); judge each kind apart")
    labels = {tuple(m.profile["labels"]) for _, m in read_}
    if len(labels) > 1:
        raise InputError("the outputs counted different things (labels in some, vectors in others: "
                         "--emit); judge each kind apart")
    scored_by = read_[0][1].model
    model_dir = modeldir.read(model or scored_by.path)
    if model_dir.id.checksum != scored_by.checksum:
        raise ModelError(f"{model_dir.path}: not the model that scored {read_[0][0]} (checksum "
                         f"{model_dir.id.checksum[:12]}..., not {scored_by.checksum[:12]}...); pass "
                         "--model with that one")
    vectors = labels == {()}  # the runs wrote no labels: they counted vectors
    found, warnings = drift.find_reference(model_dir, reference, vectors)
    if found is None:
        raise ModelError(f"model {model_dir.path} has no drift reference: make one with "
                         f"`{drift.profile_command(model_dir, vectors)}`, or pass --reference FILE"
                         + (f" ({warnings[0]})" if warnings else ""))
    cap = caps.pop()
    total = drift.Profile.from_json(read_[0][1].profile)
    for out, m in read_[1:]:
        total = total.merge(drift.Profile.from_json(m.profile, f"{out}/{MANIFEST}"))
    return drift.compare(found.lengths_capped(cap) if cap else found, total)
