"""Drift against the default model's reference, on real shifts; and that reference itself.

    .venv/bin/python bench/drift.py reference      # writes scorer/models/default/scorer_reference.json
    .venv/bin/python bench/drift.py shifts         # the README's table; bench/results/drift.json

`reference` profiles the default model on exactly the rows it was validated on: the job held out
10% of SST-2 train with seed 0 (jobs.data.split), and the fingerprint of the rows rebuilt here is
checked against the one the model's spec records. `shifts` scores batches through
scorer.pipeline.run (the path every run takes) with the default model and its reference, and
reports each run's PSIs: SST-2 dev, AG News, IMDB reviews, SST-2 dev with half its texts emptied
or replaced by boilerplate, and, as the no-shift control, one seeded half of SST-2 dev against a
reference made of the other half.
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

from scorer import drift, modeldir  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
RESULTS = REPO / "bench" / "results" / "drift.json"
BOILERPLATE = "Click here to subscribe to our newsletter and never miss a review."


def validation_texts() -> tuple[list[str], dict]:
    from jobs import data

    spec = modeldir.read(None).spec
    raw = data.read_raw([str(DATASETS / "sst2" / "train.jsonl")], "text", "label")
    labelled = data.prepare(raw, spec.labels, False, "train", {})
    config = json.loads(spec.training["config"]) if isinstance(spec.training["config"], str) else spec.training["config"]
    _, validation = data.split(labelled, config["validation_fraction"], config["seed"])
    if validation.fingerprint != spec.training["validation_data"]:
        raise SystemExit(f"validation rows {validation.fingerprint} are not the model's "
                         f"{spec.training['validation_data']}")
    return validation.texts, validation.fingerprint


def write_reference() -> None:
    from scorer.api import Scorer

    texts, fingerprint = validation_texts()
    model = Scorer.load()
    profile = drift.profile_texts(model, texts)
    target = drift.sidecar_path(model.model_dir)
    drift.write_sidecar(target, model.model_dir.id, profile, {
        "what": "the default model's validation set: 10% of SST-2 train held out by the fine-tuning "
                "job (jobs.data.split, seed 0), rebuilt and fingerprint-checked by bench/drift.py",
        "validation_data": fingerprint, "rows_profiled": len(texts)})
    print(f"{target}: {json.dumps(profile.summary())}")


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def batches(rows: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    dev = read_texts(DATASETS / "sst2" / "dev.jsonl")
    half = set(rng.sample(range(len(dev)), len(dev) // 2))
    return {
        "SST-2 dev": dev,
        "AG News test (sample)": rng.sample(read_texts(DATASETS / "ag_news" / "test.jsonl"), rows),
        "IMDB reviews dev (sample)": rng.sample(read_texts(DATASETS / "imdb_reviews" / "dev.jsonl"),
                                                min(rows, 2000)),
        "SST-2 dev, half emptied": ["" if i in half else t for i, t in enumerate(dev)],
        "SST-2 dev, half boilerplate": [BOILERPLATE if i in half else t for i, t in enumerate(dev)],
    }


def measure(rows: int, seed: int) -> list[dict]:
    from scorer import pipeline
    from scorer.api import Scorer

    model = Scorer.load()
    results = []
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        tmp = Path(tmp)

        def run(name: str, texts: list[str], reference: str | None = None) -> None:
            data = tmp / f"{len(results)}.jsonl"
            data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            m = pipeline.run([str(data)], tmp / f"out{len(results)}", scorer_=model,
                             reference=reference).manifest
            results.append({"data": name, "rows": m["rows_in"], "psi": m["drift"]["psi"],
                            "max_psi": m["drift"]["max_psi"], "summary": m["summary"],
                            "reference": "control half of SST-2 dev" if reference else "default"})
            print(json.dumps(results[-1]), flush=True)

        for name, texts in batches(rows, seed).items():
            run(name, texts)
        dev = read_texts(DATASETS / "sst2" / "dev.jsonl")
        order = list(range(len(dev)))
        random.Random(seed).shuffle(order)
        first, second = order[: len(dev) // 2], order[len(dev) // 2:]
        control = tmp / "control_reference.json"
        drift.write_sidecar(control, model.model_dir.id, drift.profile_texts(model, [dev[i] for i in first]),
                            {"what": "a seeded half of SST-2 dev"})
        run("SST-2 dev, other half (no-shift control)", [dev[i] for i in sorted(second)], str(control))
    return results


def table(results: list[dict]) -> str:
    labels = [k for k in results[0]["psi"] if k.startswith("probability:")]
    head = ["data", "rows"] + [f"PSI {k.split(':')[1]}" for k in labels] + ["PSI text length", "mean tokens",
                                                                            "not scored", "warning (> 0.1)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        psi = r["psi"]
        lines.append("| " + " | ".join([r["data"], f"{r['rows']:,}"] + [f"{psi[k]:.3f}" for k in labels] + [
            f"{psi[drift.TEXT_LENGTH]:.3f}", f"{r['summary']['mean_tokens']:.1f}",
            f"{r['summary']['unscored_share']:.0%}", "yes" if r["max_psi"] > drift.PSI_WARNING else "no"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["reference", "shifts"])
    parser.add_argument("--rows", type=int, default=3000, help="rows sampled per shifted batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "reference":
        write_reference()
        return
    results = measure(args.rows, args.seed)
    RESULTS.write_text(json.dumps({"command": " ".join(["bench/drift.py", *sys.argv[1:]]),
                                   "results": results}, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
