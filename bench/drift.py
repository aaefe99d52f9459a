"""Drift against the default model's reference, on real shifts.

    .venv/bin/python bench/drift.py shifts         # the README's table; bench/results/drift.json

The default model's reference is in its spec: the fine-tuning job profiled the whole texts of its
validation set (10% of SST-2 train + IMDB train, held out by sentence with seed 0), all of them and
each source apart (parts: SST-2's sentences, IMDB's reviews); a run is measured against the
nearest of the three. `shifts` scores batches through scorer.pipeline.run (the path every run
takes) with the default model and its reference, and reports each run's PSIs (against the nearest
candidate, which it names, and the largest against the whole): SST-2 dev, AG News, IMDB reviews,
TREC questions, and a seeded half (B) of SST-2 dev as it is, with half its texts emptied, and with
half of them replaced by boilerplate. Each run's profile is also compared with a second reference
made of the other half (A) of SST-2 dev, what `scorer profile` makes of a sample of one traffic.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scorer import drift  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
RESULTS = REPO / "bench" / "results" / "drift.json"
BOILERPLATE = "Click here to subscribe to our newsletter and never miss a review."


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dev_halves(seed: int) -> tuple[list[str], list[str]]:
    """SST-2 dev split in two seeded halves: A makes the no-shift reference, B is scored."""
    dev = read_texts(DATASETS / "sst2" / "dev.jsonl")
    a = set(random.Random(seed).sample(range(len(dev)), len(dev) // 2))
    return [t for i, t in enumerate(dev) if i in a], [t for i, t in enumerate(dev) if i not in a]


def batches(rows: int, seed: int) -> dict[str, list[str]]:
    """The batches scored; all but the first are compared with the dev-half reference too."""
    rng = random.Random(seed)
    _, b = dev_halves(seed)
    half = set(rng.sample(range(len(b)), len(b) // 2))
    return {
        "SST-2 dev": read_texts(DATASETS / "sst2" / "dev.jsonl"),
        "SST-2 dev half B (no shift)": b,
        "SST-2 dev half B, half its texts emptied": ["" if i in half else t for i, t in enumerate(b)],
        "SST-2 dev half B, half replaced by boilerplate": [BOILERPLATE if i in half else t
                                                          for i, t in enumerate(b)],
        "AG News test (sample)": rng.sample(read_texts(DATASETS / "ag_news" / "test.jsonl"), rows),
        "IMDB reviews dev (sample)": rng.sample(read_texts(DATASETS / "imdb_reviews" / "dev.jsonl"),
                                                min(rows, 2000)),
        # questions, not opinions: a new kind of traffic of sentence length
        "TREC questions (test)": read_texts(DATASETS / "trec" / "test.jsonl"),
    }


def measure(rows: int, seed: int) -> list[dict]:
    """Each batch through scorer.pipeline.run with the default model and its reference; its
    manifest's profile is also compared with the dev-half-A reference."""
    from scorer import pipeline
    from scorer.api import Scorer

    model = Scorer.load()
    a, _ = dev_halves(seed)
    dev_half_reference = drift.profile_texts(model, a)
    results = []
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        for n, (name, texts) in enumerate(batches(rows, seed).items()):
            data = Path(tmp) / f"{n}.jsonl"
            data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            m = pipeline.run([str(data)], Path(tmp) / f"out{n}", scorer_=model).manifest
            profile = drift.Profile.from_json(m["profile"])
            results.append({"data": name, "rows": m["rows_in"], "psi": m["drift"]["psi"],
                            "nearest": m["drift"].get("part") or drift.WHOLE,
                            "candidates": m["drift"].get("candidates") or {},
                            "psi_vs_dev_half_a": drift.psi_by_feature(dev_half_reference, profile) if n else None,
                            "summary": m["summary"]})
            print(json.dumps(results[-1]), flush=True)
    return results


def table(results: list[dict]) -> str:
    head = ["data", "rows", "mean tokens", "not scored", "predicted positive", "nearest reference",
            "PSI P(positive)", "PSI text length", "max PSI vs the whole", "PSI P(positive) vs dev half A",
            "PSI text length vs dev half A"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def shown(psi: dict | None, key: str) -> str:
        if psi is None or key not in psi:
            return "-"
        value = psi[key]
        return f"**{value:.3f}**" if value > drift.PSI_WARNING else f"{value:.3f}"

    def source(name: str) -> str:  # ../shared/datasets/sst2/train.jsonl -> sst2 part
        return "the whole" if name == drift.WHOLE else Path(name).parent.name + " part"

    for r in results:
        s = r["summary"]
        lines.append("| " + " | ".join([
            r["data"], f"{r['rows']:,}", f"{s['mean_tokens']:.1f}", f"{s['unscored_share']:.0%}",
            f"{s['predicted_share']['positive']:.1%}", source(r["nearest"]),
            shown(r["psi"], "probability:positive"), shown(r["psi"], drift.TEXT_LENGTH),
            shown(r["candidates"], drift.WHOLE),
            shown(r["psi_vs_dev_half_a"], "probability:positive"),
            shown(r["psi_vs_dev_half_a"], drift.TEXT_LENGTH)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["shifts"])
    parser.add_argument("--rows", type=int, default=3000, help="rows sampled per shifted batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = measure(args.rows, args.seed)
    RESULTS.write_text(json.dumps({"command": " ".join(["bench/drift.py", *sys.argv[1:]]),
                                   "results": results}, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
