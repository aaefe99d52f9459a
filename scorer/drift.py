"""What a run scored, as a small profile of counts, and how far it moved from the model's reference.

    p = Profile.empty(["negative", "positive"])
    p.add(probabilities, token_counts)        # per written chunk: [n, labels] (NaN rows unscored), [n]
    psi_by_feature(reference, p)              # {"probability:negative": 0.03, ..., "text_length": 0.01}

A Profile holds only counts (fixed bins), so it streams in bounded memory, merges (resumed runs,
--follow entries, Ray blocks) and is the same JSON in a run's manifest and in a model's reference:
predicted-label counts, a histogram per label of its probability, rows whose top probability is
low, and a histogram of text lengths in tokens where rows that were not scored (empty, null or
unreadable text) count as 0 tokens, so an upstream change that empties texts shows as a shift.

The population stability index compares two histograms: sum((a - e) * ln(a / e)) over the bins'
shares; below 0.1 is conventionally "no real shift", 0.1-0.25 moderate, above 0.25 major.

An embedding model's run has no labels: its profile counts, besides text lengths, histograms of
its vectors' norms and of their projections on the first principal directions of the reference
sample (EmbeddingBasis, stored with the reference by `scorer profile`, deciles of the sample for
bins), so the same PSI measures how far a run's vectors moved. A classifier's --emit embedding
run (vectors, no labels) is counted the same way, against a reference of its vectors that
`scorer profile --emit embedding` keeps apart from its label reference (EMBEDDING_SIDECAR_NAME).

    basis = EmbeddingBasis.of(reference_vectors)   # [n, dim] -> mean, 8 directions, bin edges
    p.add_embeddings(vectors, token_counts, basis)  # {"embedding_pc1": 0.02, ..., "embedding_norm": ...}

A model trained on several sources (short phrases and long reviews) has a reference that is a
mixture, and a batch of one source alone differs from a mixture. Its reference may therefore hold
one profile per source besides the whole ("parts"); a run is compared with the candidate (the
whole or a part) it is nearest to, so a shift is what no known source looks like.
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from scorer import fileio, stdir
from scorer.errors import ModelError
from scorer.modelid import ModelId

PROBABILITY_BINS = 10  # equal-width bins over [0, 1]
# Lower edges, in tokens ([CLS] and [SEP] included, after truncation), of the length bins after
# bin 0 (rows without tokens: not scored).
LENGTH_EDGES = (1, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512)
LOW_CONFIDENCE = 0.6  # a row whose top probability is below this is low-confidence
PSI_WARNING = 0.1  # conventional "moderate shift"
PSI_FLOOR = 1e-4  # the share an empty bin counts as, so that ln() stays finite
# Fewer rows than this and a run's PSI is sampling noise, not drift: a bin a small batch happens
# to leave empty counts as PSI_FLOOR, and ln(share / PSI_FLOOR) is large. Measured by
# bench/drift_min_rows.py (default model; 100 seeded in-domain batches of n rows drawn from SST-2
# dev and from IMDB dev, n in steps of 50): the smallest n at which both stay at or under
# PSI_WARNING in at least 95 of 100 draws is 350 with seeds 0 and 1 (SST-2 97 of 100, p95 PSI
# 0.092 / 0.080; at 300: 92 and 94), 300 with seed 2; at 60 rows 1 of 100 (docs/drift.md).
MIN_ROWS = 350
REFERENCE_FORMAT = "scorer-reference/1"
SIDECAR_NAME = "scorer_reference.json"  # beside scorer_model.json
CHECKPOINT_SIDECAR_SUFFIX = "." + SIDECAR_NAME  # beside a Hugging Face checkpoint directory
# A classifier's reference of its vectors (--emit embedding), beside its label reference
EMBEDDING_SIDECAR_NAME = "scorer_embedding_reference.json"
TEXT_LENGTH = "text_length"


@dataclass
class Profile:
    """Streaming counts of what was scored (see the module docstring)."""

    labels: list[str]
    rows: int = 0  # rows counted, scored or not
    scored: int = 0
    predicted: list[int] = field(default_factory=list)  # rows per predicted (top) label
    probability_hist: list[list[int]] = field(default_factory=list)  # [label][bin]
    low_confidence: int = 0  # scored rows with top probability < LOW_CONFIDENCE
    length_hist: list[int] = field(default_factory=list)  # [bin]: 0 tokens, then LENGTH_EDGES
    tokens: int = 0  # over scored rows
    # Embedding runs measured against an EmbeddingBasis (else empty): scored rows per bin
    norm_hist: list[int] = field(default_factory=list)  # [bin] of basis.norm_edges
    projection_hist: list[list[int]] = field(default_factory=list)  # [direction][bin]

    @classmethod
    def empty(cls, labels: list[str]) -> "Profile":
        k = len(labels)
        return cls(list(labels), predicted=[0] * k,
                   probability_hist=[[0] * PROBABILITY_BINS for _ in range(k)],
                   length_hist=[0] * (len(LENGTH_EDGES) + 1))

    def add(self, probabilities: np.ndarray, token_counts: np.ndarray) -> None:
        """Count a chunk: probabilities [n, labels] with NaN rows where a row was not scored,
        token_counts [n] (0 where not scored)."""
        probs = np.asarray(probabilities, dtype=np.float64).reshape(len(token_counts), len(self.labels))
        scored = ~np.isnan(probs).any(axis=1)
        good = probs[scored]
        self.rows += len(token_counts)
        self.scored += int(scored.sum())
        if len(good):
            top = good.argmax(axis=1)
            self.predicted = _plus(self.predicted, np.bincount(top, minlength=len(self.labels)))
            self.low_confidence += int((good.max(axis=1) < LOW_CONFIDENCE).sum())
            bins = np.clip((good * PROBABILITY_BINS).astype(np.int64), 0, PROBABILITY_BINS - 1)
            self.probability_hist = [_plus(h, np.bincount(bins[:, j], minlength=PROBABILITY_BINS))
                                     for j, h in enumerate(self.probability_hist)]
        self._add_lengths(scored, token_counts)

    def add_embeddings(self, vectors: np.ndarray, token_counts: np.ndarray,
                       basis: "EmbeddingBasis | None") -> None:
        """Count a chunk of an embedding run: vectors [n, dim] with NaN rows where a row was not
        embedded, token_counts [n]; the vectors' histograms against basis (None: lengths only)."""
        vectors = np.asarray(vectors, dtype=np.float64)
        scored = ~np.isnan(vectors).any(axis=1)
        self.rows += len(token_counts)
        self.scored += int(scored.sum())
        if basis is not None:
            norms, projections = basis.histograms(vectors[scored])
            self.norm_hist = _plus(self.norm_hist, norms) if self.norm_hist else norms
            self.projection_hist = ([_plus(a, b) for a, b in zip(self.projection_hist, projections)]
                                    if self.projection_hist else projections)
        self._add_lengths(scored, token_counts)

    def _add_lengths(self, scored: np.ndarray, token_counts: np.ndarray) -> None:
        lengths = np.where(scored, np.asarray(token_counts, dtype=np.int64), 0)
        self.tokens += int(lengths.sum())
        length_bins = np.searchsorted(LENGTH_EDGES, lengths, side="right")  # 0 tokens: bin 0
        self.length_hist = _plus(self.length_hist, np.bincount(length_bins, minlength=len(self.length_hist)))

    def merge(self, other: "Profile") -> "Profile":
        """The profile of both sets of rows."""
        if other.labels != self.labels:
            raise ValueError(f"profiles of different labels: {self.labels} and {other.labels}")
        return Profile(list(self.labels), self.rows + other.rows, self.scored + other.scored,
                       _plus(self.predicted, other.predicted),
                       [_plus(a, b) for a, b in zip(self.probability_hist, other.probability_hist)],
                       self.low_confidence + other.low_confidence,
                       _plus(self.length_hist, other.length_hist), self.tokens + other.tokens,
                       _plus_lists(self.norm_hist, other.norm_hist),
                       [_plus_lists(a, b) for a, b in zip(self.projection_hist, other.projection_hist)]
                       or other.projection_hist or self.projection_hist)

    def lengths_capped(self, max_tokens: int) -> "Profile":
        """The profile as it would be had every text been cut at max_tokens (--long-text
        truncate): the length bins above the one max_tokens falls in are added into that one, the
        same as counting min(tokens, max_tokens). `tokens` (the mean length) cannot be capped
        from counts and is kept."""
        cap = int(np.searchsorted(LENGTH_EDGES, max_tokens, side="right"))
        hist = self.length_hist[:cap] + [sum(self.length_hist[cap:])] + [0] * (len(self.length_hist) - cap - 1)
        return replace(copy.deepcopy(self), length_hist=hist)

    def summary(self) -> dict:
        """The shares people read: predicted labels, low confidence, unscored, mean length."""
        scored = self.scored or 1
        return {"predicted_share": {n: round(c / scored, 4) for n, c in zip(self.labels, self.predicted)},
                "low_confidence_share": round(self.low_confidence / scored, 4),
                "unscored_share": round((self.rows - self.scored) / (self.rows or 1), 4),
                "mean_tokens": round(self.tokens / scored, 2)}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str = "profile") -> "Profile":
        try:
            profile = cls(**data)
            k = len(profile.labels)
            ok = (len(profile.predicted) == k and len(profile.probability_hist) == k
                  and all(len(h) == PROBABILITY_BINS for h in profile.probability_hist)
                  and len(profile.length_hist) == len(LENGTH_EDGES) + 1)
        except TypeError as e:
            raise ModelError(f"{where}: not a profile ({e})") from None
        if not ok:
            raise ModelError(f"{where}: its bins are not this scorer's ({PROBABILITY_BINS} probability "
                             f"bins, {len(LENGTH_EDGES) + 1} length bins); profile the model again")
        return profile


EMBEDDING_DIRECTIONS = 8  # principal directions of the reference sample whose spread is tracked
EMBEDDING_BINS = 10  # deciles of the reference sample: a tenth of it in each bin
EMBEDDING_NORM = "embedding_norm"  # PSI names: the norm, then embedding_pc1, embedding_pc2, ...
CONSTANT_SPREAD = 1e-3  # a norm whose 1-99% range is below this share of its median is constant


@dataclass
class EmbeddingBasis:
    """What an embedding model's reference fixes for every run measured against it: the reference
    sample's mean vector, its first principal directions (by decreasing variance), and the inner
    bin edges (the sample's deciles) of the vectors' norm and of their projection on each
    direction. A normalising model's norm is constant: no edges, one bin, no norm PSI."""

    mean: list[float]  # [dim]
    directions: list[list[float]]  # [k, dim] unit vectors
    norm_edges: list[float]  # ascending
    projection_edges: list[list[float]]  # [k][<= EMBEDDING_BINS - 1] ascending

    @classmethod
    def of(cls, vectors: np.ndarray, directions: int = EMBEDDING_DIRECTIONS) -> "EmbeddingBasis":
        """The basis of a reference sample [n, dim] (NaN rows, not embedded, left out)."""
        x = np.asarray(vectors, dtype=np.float64)
        x = x[~np.isnan(x).any(axis=1)]
        if len(x) < EMBEDDING_BINS:
            raise ModelError(f"{len(x)} embedded rows are too few for a reference: profile at least "
                             f"{EMBEDDING_BINS}")
        mean = x.mean(axis=0)
        centred = x - mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows: directions, by variance
        top = vt[:min(directions, len(vt))]
        top *= np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])[:, None]  # a fixed sign
        projections = centred @ top.T  # [n, k]
        norms = np.linalg.norm(x, axis=1)
        spread = np.quantile(norms, 0.99) - np.quantile(norms, 0.01)
        constant = spread <= CONSTANT_SPREAD * max(float(np.median(norms)), 1e-12)
        return cls(mean.tolist(), top.tolist(), [] if constant else _decile_edges(norms),
                   [_decile_edges(projections[:, j]) for j in range(len(top))])

    def histograms(self, vectors: np.ndarray) -> tuple[list[int], list[list[int]]]:
        """Counts per bin of embedded vectors [n, dim]: of their norm, and per direction."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.shape[1:] != (len(self.mean),):
            raise ValueError(f"vectors of width {x.shape[1:]} against a basis of {len(self.mean)}")
        projections = (x - np.asarray(self.mean)) @ np.asarray(self.directions).T  # [n, k]
        return (_binned(np.linalg.norm(x, axis=1), self.norm_edges),
                [_binned(projections[:, j], edges) for j, edges in enumerate(self.projection_edges)])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str) -> "EmbeddingBasis":
        try:
            basis = cls(**data)
            ok = (len(basis.directions) == len(basis.projection_edges)
                  and all(len(d) == len(basis.mean) for d in basis.directions))
        except TypeError as e:
            raise ModelError(f"{where}: not an embedding basis ({e})") from None
        if not ok:
            raise ModelError(f"{where}: its embedding basis is inconsistent; profile the model again")
        return basis


def _decile_edges(values: np.ndarray) -> list[float]:
    """The inner edges of EMBEDDING_BINS bins holding a tenth of values each (ties merged)."""
    return np.unique(np.quantile(values, np.linspace(0, 1, EMBEDDING_BINS + 1)[1:-1])).tolist()


def _binned(values: np.ndarray, edges: list[float]) -> list[int]:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).tolist()


def _plus_lists(a: list[int], b: list[int]) -> list[int]:
    """Counts of the same bins summed; one side may have none yet (an empty profile)."""
    return _plus(a, b) if a and b else list(a or b)


def token_counts(prepared) -> np.ndarray:
    """[n] tokens each row of an api.Prepared was scored with (after truncation, over all its
    windows); 0 for rows not scored."""
    counts = np.zeros(len(prepared.errors), dtype=np.int32)
    chunk = prepared.encoded
    if chunk is not None:
        if chunk.text_of is None:
            counts[prepared.valid] = chunk.lengths
        else:  # --long-text window: a text's tokens over all its windows
            counts[prepared.valid] = np.bincount(chunk.text_of, weights=chunk.lengths,
                                                 minlength=len(prepared.valid))
    return counts


def sample(items: Iterable, size: int, seed: int) -> list:
    """A seeded uniform sample of `size` items (all of them if fewer), in bounded memory
    (reservoir sampling), in the order they came."""
    rng = random.Random(seed)
    kept: list[tuple[int, object]] = []
    for i, item in enumerate(items):
        if i < size:
            kept.append((i, item))
        else:
            j = rng.randint(0, i)
            if j < size:
                kept[j] = (i, item)
    return [item for _, item in sorted(kept, key=lambda pair: pair[0])]


def profile_texts(model_scorer, texts: list, read_errors: list | None = None,
                  chunk_rows: int = 2048) -> Profile:
    """Score texts with an api.Scorer and count them, as a run would."""
    profile = Profile.empty(model_scorer.spec.labels)
    errors = read_errors or [None] * len(texts)
    for start in range(0, len(texts), chunk_rows):
        prepared = model_scorer.prepare(texts[start:start + chunk_rows], errors[start:start + chunk_rows])
        profile.add(model_scorer.infer(prepared), token_counts(prepared))
    return profile


def profile_embeddings(embedder, texts: list, read_errors: list | None = None,
                       chunk_rows: int = 2048) -> tuple[Profile, EmbeddingBasis]:
    """Embed texts with an embedder.Embedder (or a classifier's api.Scorer: the vectors its head
    reads), make the basis of their vectors and count them against it, as a run would."""
    errors = read_errors or [None] * len(texts)
    vectors, tokens = [], []
    for start in range(0, len(texts), chunk_rows):
        prepared = embedder.prepare(texts[start:start + chunk_rows], errors[start:start + chunk_rows])
        vectors.append(embedder.vectors(prepared))
        tokens.append(token_counts(prepared))
    vectors = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    basis = EmbeddingBasis.of(vectors)  # too few rows: an error
    profile = Profile.empty([])
    profile.add_embeddings(vectors, np.concatenate(tokens), basis)
    return profile, basis


def _plus(a, b) -> list[int]:
    return [int(x) + int(y) for x, y in zip(a, b)]


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of two histograms over the same bins (counts)."""
    e_total, a_total = sum(expected), sum(actual)
    if not e_total or not a_total:
        return 0.0
    total = 0.0
    for e, a in zip(expected, actual):
        e_share, a_share = max(e / e_total, PSI_FLOOR), max(a / a_total, PSI_FLOOR)
        total += (a_share - e_share) * math.log(a_share / e_share)
    return total


def psi_by_feature(reference: Profile, current: Profile) -> dict[str, float]:
    """PSI of each label's probability histogram and of the text lengths."""
    out = {f"probability:{name}": psi(ref, cur) for name, ref, cur in
           zip(reference.labels, reference.probability_hist, current.probability_hist)}
    out[TEXT_LENGTH] = psi(reference.length_hist, current.length_hist)
    if len(reference.norm_hist) > 1 and len(current.norm_hist) == len(reference.norm_hist):
        out[EMBEDDING_NORM] = psi(reference.norm_hist, current.norm_hist)
    for j, (ref, cur) in enumerate(zip(reference.projection_hist, current.projection_hist)):
        out[f"embedding_pc{j + 1}"] = psi(ref, cur)
    return {k: round(v, 4) for k, v in out.items()}


WHOLE = "all"  # the whole reference's name among the candidates a run is compared with


@dataclass
class ReferencePart:
    """The reference profile of the rows of one training source (the --train argument they came
    from), or of the whole (named WHOLE)."""

    name: str
    profile: Profile


@dataclass
class Reference:
    """A model's reference profile and where it was found."""

    profile: Profile  # the whole validation set
    source: str  # "spec" (written by the fine-tuning job) or the sidecar file's path
    model_checksum: str | None  # the model it was made with (None: part of the spec itself)
    parts: list[ReferencePart] = field(default_factory=list)  # one per training source, if recorded
    basis: EmbeddingBasis | None = None  # an embedding model's: what its runs' vectors are binned by
    length_cap: int | None = None  # its text lengths were capped at this many tokens (lengths_capped)

    def lengths_capped(self, max_tokens: int) -> "Reference":
        """The reference a run whose texts were cut at max_tokens (--long-text truncate) is
        compared with: its lengths were counted over whole texts (windows), the run's stop at the
        max length, so the reference's are capped alike, the whole and every part."""
        return replace(self, profile=self.profile.lengths_capped(max_tokens),
                       parts=[ReferencePart(p.name, p.profile.lengths_capped(max_tokens)) for p in self.parts],
                       length_cap=max_tokens)

    def candidates(self) -> list[ReferencePart]:
        """What a run may be compared with: the whole first (it wins ties), then each part."""
        return [ReferencePart(WHOLE, self.profile), *self.parts]

    def profile_of(self, part: str | None) -> Profile | None:
        """The profile of a part (None: the whole); None for a part this reference does not have
        (an entry --follow scored with an earlier model), rather than another candidate's."""
        if part is None:
            return self.profile
        return next((p.profile for p in self.parts if p.name == part), None)


@dataclass
class Drift:
    """A run's comparison with its model's reference (the manifest's "drift")."""

    reference: str | None  # where the reference came from; None: the model has none
    psi: dict[str, float] = field(default_factory=dict)  # against the nearest candidate
    note: str | None = None  # why there is no comparison
    part: str | None = None  # the nearest candidate when it is a part; None: the whole
    candidates: dict[str, float] = field(default_factory=dict)  # max PSI against each (WHOLE: the whole)
    rows: int = 0  # rows the PSIs were measured on
    too_few_rows: bool = False  # fewer than MIN_ROWS: the PSIs are recorded, not judged
    length_cap: int | None = None  # the reference's lengths capped at this (--long-text truncate)

    @property
    def max_psi(self) -> float | None:
        return max(self.psi.values()) if self.psi else None

    @property
    def judged(self) -> bool:
        """Whether the PSIs say anything: measured on enough rows to warn and to fail a run."""
        return bool(self.psi) and not self.too_few_rows

    def exceeds(self, max_psi: float) -> tuple[str, float] | None:
        """The feature whose PSI passes max_psi (the largest), if the drift is judged."""
        worst = max(self.psi.items(), key=lambda kv: kv[1], default=None)
        return worst if self.judged and worst[1] > max_psi else None

    def warnings(self) -> list[str]:
        if not self.judged:
            return []
        shifted = {k: v for k, v in self.psi.items() if v > PSI_WARNING}
        if not shifted:
            return []
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(shifted.items(), key=lambda kv: -kv[1]))
        against = "the model's reference"
        if len(self.candidates) > 1:
            nearest = f"part {self.part}" if self.part else "the whole"
            against = f"the nearest of the model's {len(self.candidates)} reference candidates ({nearest})"
        return [f"drift: PSI above {PSI_WARNING} (moderate shift) against {against}: {shown}"]

    def to_json(self) -> dict:
        return {"reference": self.reference, "psi": self.psi, "max_psi": self.max_psi,
                "warning_level": PSI_WARNING, "note": self.note, "part": self.part,
                "candidates": self.candidates, "rows": self.rows, "too_few_rows": self.too_few_rows,
                "min_rows": MIN_ROWS, "text_length_capped_at": self.length_cap}

    @classmethod
    def from_json(cls, data: dict) -> "Drift":
        """A manifest's drift (one recorded before parts existed has no part or candidates, one
        before MIN_ROWS no rows: it is judged as it was then)."""
        return cls(data["reference"], data.get("psi") or {}, data.get("note"), data.get("part"),
                   data.get("candidates") or {}, data.get("rows", 0), data.get("too_few_rows", False),
                   data.get("text_length_capped_at"))


def compare(reference: Reference | None, profile: Profile) -> Drift:
    """The run's PSIs against the reference candidate whose largest PSI is the smallest (recorded
    but not judged below MIN_ROWS rows)."""
    if reference is None:
        return Drift(None, note="the model has no reference: see `scorer profile`")
    if reference.profile.labels != profile.labels:
        return Drift(reference.source, note=f"the reference's labels {reference.profile.labels} "
                     f"are not the model's {profile.labels}")
    if not profile.rows:
        return Drift(reference.source, note="no rows")
    measured = {c.name: psi_by_feature(c.profile, profile) for c in reference.candidates()}
    largest = {name: max(psis.values()) for name, psis in measured.items()}
    nearest = min(largest, key=largest.__getitem__)  # the first of equals: the whole
    return Drift(reference.source, measured[nearest], part=None if nearest == WHOLE else nearest,
                 candidates=largest, rows=profile.rows, too_few_rows=profile.rows < MIN_ROWS,
                 length_cap=reference.length_cap)


def sidecar_path(model_dir, vectors: bool = False) -> Path:
    """Where `scorer profile` writes a model's reference by default: inside our model directory,
    beside (never inside) a Hugging Face checkpoint directory. vectors: a classifier's reference of
    its vectors (--emit embedding), a file of its own beside its label reference (an embedding
    model has only that kind, under the usual name)."""
    name = EMBEDDING_SIDECAR_NAME if vectors and model_dir.kind == "classifier" else SIDECAR_NAME
    path = Path(model_dir.path)
    if model_dir.checkpoint is not None:
        return path.parent / f"{path.name}.{name}"
    return path / name


def profile_command(model_dir, vectors: bool) -> str:
    """The command that makes the reference a run needs (vectors: see sidecar_path)."""
    return "scorer profile MODEL DATA" + (" --emit embedding" if vectors and model_dir.kind == "classifier" else "")


def find_reference(model_dir, explicit: str | None = None,
                   vectors: bool = False) -> tuple[Reference | None, list[str]]:
    """The model's reference, and warnings: an explicit file, else the spec's (the fine-tuning
    job's), else the sidecar. A sidecar made with another model (its checksum differs) is not used.
    vectors: the run counts vectors, not labels (an embedding model's, a classifier's --emit
    embedding): its reference is one of vectors, an explicit file or the sidecar of that kind
    (the spec's is of labels); a reference of the other kind is refused."""
    in_spec = not isinstance(model_dir, stdir.SentenceTransformerDir) and model_dir.spec.reference
    if explicit is None and in_spec and not vectors:
        return spec_reference(model_dir.spec.reference, model_dir.path), []
    path = Path(explicit) if explicit else sidecar_path(model_dir, vectors)
    if not path.is_file():
        if explicit:
            raise ModelError(f"--reference {explicit}: no such file")
        return None, []
    reference = read_sidecar(path)
    if (reference.basis is not None) != vectors:
        kinds = ("embeddings", "labels") if reference.basis is not None else ("labels", "embeddings")
        raise ModelError(f"{path}: a reference of {kinds[0]}, not of {kinds[1]}, which this run "
                         f"writes; make one with `{profile_command(model_dir, vectors)}`")
    checksum = model_dir.id.checksum
    if reference.model_checksum != checksum:
        return None, [f"drift not computed: {path} was profiled with model checksum "
                      f"{str(reference.model_checksum)[:12]}..., not this model's {checksum[:12]}...; "
                      "run `scorer profile` again"]
    return reference, []


def spec_reference(data: dict, model_path) -> Reference:
    """The reference the fine-tuning job records in the spec: the whole validation set's profile
    and, optionally, "parts": [{"name": its --train source, "data": ..., "profile": ...}, ...]."""
    whole = Profile.from_json(data.get("profile", {}), f"{model_path}: 'reference'")
    parts = data.get("parts", [])
    if not isinstance(parts, list):
        raise ModelError(f"{model_path}: 'reference.parts': expected a list of {{name, data, profile}}")
    return Reference(whole, "spec", None, [_part(item, f"{model_path}: 'reference.parts[{i}]'",
                                                 whole.labels, parts[:i]) for i, item in enumerate(parts)])


def _part(item, where: str, labels: list[str], before: list) -> ReferencePart:
    """One recorded part, checked like the whole, with a name no other candidate has."""
    name = item.get("name") if isinstance(item, dict) else None
    if not isinstance(name, str) or not name or name == WHOLE or name in {
            p.get("name") for p in before if isinstance(p, dict)}:
        raise ModelError(f"{where}: needs a 'name' (its training source), unique and not {WHOLE!r}")
    profile = Profile.from_json(item.get("profile", {}), f"{where} ({name})")
    if profile.labels != labels:
        raise ModelError(f"{where} ({name}): labels {profile.labels} are not the whole reference's {labels}")
    return ReferencePart(name, profile)


def read_sidecar(path: Path) -> Reference:
    data = fileio.read_object(path, ModelError)
    if data.get("format") != REFERENCE_FORMAT:
        raise ModelError(f"{path}: not a scorer reference (format {REFERENCE_FORMAT})")
    basis = data.get("embedding_basis")
    return Reference(Profile.from_json(data.get("profile") or {}, str(path)), str(path),
                     (data.get("model") or {}).get("checksum"),
                     basis=EmbeddingBasis.from_json(basis, str(path)) if basis else None)


def write_sidecar(path: Path, model_id: ModelId, profile: Profile, data: dict,
                  basis: EmbeddingBasis | None = None) -> None:
    """The reference file `scorer profile` writes (temp + rename: a reader never sees half); an
    embedding model's holds the basis its runs are binned by."""
    body = {"format": REFERENCE_FORMAT,
            "model": {"name": model_id.name, "version": model_id.version, "checksum": model_id.checksum},
            "data": data, "summary": profile.summary(), "profile": profile.to_json(),
            **({"embedding_basis": basis.to_json()} if basis else {}),
            "created": fileio.utc_timestamp()}
    fileio.write_atomic(path, json.dumps(body, indent=2) + "\n")
