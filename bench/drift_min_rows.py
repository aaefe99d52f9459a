"""The fewest rows a run needs for its drift PSI to mean something (drift.MIN_ROWS).

    .venv/bin/python bench/drift_min_rows.py        # the table in docs/drift.md; bench/results/drift_min_rows.json

PSI over 10 bins is noise for a small batch: a bin the batch happens to leave empty counts as
0.0001 of it, and ln(share / 0.0001) is large. This scores SST-2 dev (872 sentences) and IMDB dev
(2,000 reviews) once each with the default model (`scorer.Scorer.load()`, the default
--long-text window), as a run would (Scorer.prepare / infer, drift.token_counts), then, for each
batch size n of a grid, draws 100 seeded in-domain batches of n rows from each dataset, builds each
batch's drift.Profile from its scored rows and takes the PSI a run of it would report
(drift.compare against the model's reference: the largest feature PSI against the nearest
candidate). The minimum row count is the smallest n at which both datasets stay at or under
PSI_WARNING (0.1, no warning) in at least 95 of the 100 draws.

Batches are drawn with replacement: a real batch comes from a traffic far larger than a dev set,
and drawing 400 of SST-2's 872 without replacement would hide part of the sampling noise (the
finite-population correction, (N - n) / (N - 1), is 0.54 there). The without-replacement figures
are printed too. PSI is counting, not timing: the machine's load does not change it. The scored
probabilities and token counts are cached in /tmp (keyed by the model's checksum), so a rerun
only counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scorer import drift  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"  # --datasets elsewhere (a worktree)
RESULTS = REPO / "bench" / "results" / "drift_min_rows.json"
CACHE = Path("/tmp/scorer-drift-min-rows")
DATA = {"SST-2 dev": Path("sst2") / "dev.jsonl", "IMDB dev": Path("imdb_reviews") / "dev.jsonl"}
GRID = (30, 60, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800)
DRAWS = 100
NEEDED = 95  # draws of 100 at or under the warning level


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def scored(model_scorer, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [n, labels] and token counts [n] of every row, as a run scores them (cached)."""
    cache = CACHE / f"{model_scorer.model_dir.id['checksum'][:16]}-{path.parent.name}-{path.stem}.npz"
    if cache.is_file():
        kept = np.load(cache)
        return kept["probabilities"], kept["tokens"]
    texts = read_texts(path)
    probabilities, tokens = [], []
    for start in range(0, len(texts), 256):
        prepared = model_scorer.prepare(texts[start:start + 256])
        probabilities.append(model_scorer.infer(prepared))
        tokens.append(drift.token_counts(prepared))
        print(f"{name}: scored {start + len(prepared.errors)} of {len(texts)}", file=sys.stderr, flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, probabilities=np.concatenate(probabilities), tokens=np.concatenate(tokens))
    return np.concatenate(probabilities), np.concatenate(tokens)


def batch_psis(reference: drift.Reference, labels: list[str], probabilities: np.ndarray,
               tokens: np.ndarray, n: int, seed: int, replace: bool) -> list[float]:
    """The max PSI a run of each of DRAWS random batches of n rows would report."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(DRAWS):
        rows = rng.choice(len(tokens), size=n, replace=replace)
        profile = drift.Profile.empty(labels)
        profile.add(probabilities[rows], tokens[rows])
        out.append(drift.compare(reference, profile).max_psi)
    return out


def measure(seed: int, datasets: Path) -> dict:
    from scorer.api import Scorer

    model_scorer = Scorer.load()
    reference, _ = drift.find_reference(model_scorer.model_dir)
    labels = model_scorer.spec.labels
    data = {name: scored(model_scorer, name, datasets / path) for name, path in DATA.items()}
    rows = []
    for n in GRID:
        row = {"n": n}
        for name, (probabilities, tokens) in data.items():
            for replace in (True, False):
                if not replace and n > len(tokens):
                    continue
                psis = batch_psis(reference, labels, probabilities, tokens, n, seed + n, replace)
                key = name if replace else f"{name} (without replacement)"
                row[key] = {"under": sum(p <= drift.PSI_WARNING for p in psis),
                            "p95": round(float(np.percentile(psis, 95)), 4),
                            "median": round(float(np.median(psis)), 4)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    full = {}
    for name, (probabilities, tokens) in data.items():
        profile = drift.Profile.empty(labels)
        profile.add(probabilities, tokens)
        full[name] = {"rows": len(tokens), "max_psi": drift.compare(reference, profile).max_psi}
    minimum = next((r["n"] for r in rows if all(r[name]["under"] >= NEEDED for name in DATA)), None)
    return {"model": model_scorer.model_dir.id["checksum"], "draws": DRAWS, "seed": seed,
            "whole_datasets": full, "grid": rows, "minimum_rows": minimum}


def table(results: dict) -> str:
    names = list(DATA)
    head = ["n"] + [f"{name}: draws <= 0.1, p95 PSI" for name in names] + \
        [f"{name} without replacement: draws <= 0.1, p95" for name in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["grid"]:
        cells = [str(r["n"])]
        for key in names + [f"{name} (without replacement)" for name in names]:
            cells.append(f"{r[key]['under']}, {r[key]['p95']:.3f}" if key in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", type=str, default=str(DATASETS), help="where sst2/ and imdb_reviews/ are")
    args = parser.parse_args()
    results = measure(args.seed, Path(args.datasets))
    RESULTS.write_text(json.dumps({"command": " ".join(["bench/drift_min_rows.py", *sys.argv[1:]]),
                                   **results}, indent=2) + "\n")
    print(table(results))
    print(f"whole datasets: {json.dumps(results['whole_datasets'])}")
    print(f"minimum rows (both datasets <= {drift.PSI_WARNING} in >= {NEEDED} of {DRAWS} draws, "
          f"with replacement): {results['minimum_rows']}")


if __name__ == "__main__":
    main()
