"""Inspect and steer a model registry: list versions, promote (or roll back), set aliases.

    python -m jobs.registry list models/sentiment
    python -m jobs.registry promote models/sentiment 7
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.errors import fail
from scorer import modeldir, registry
from scorer.errors import ScorerError

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def main():
    """Model registry commands.

    Example:

        python -m jobs.registry list models/sentiment
    """


@main.command("list", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def list_versions(path, as_json):
    """Versions with their metrics, and which one each alias points at.

    Example:

        python -m jobs.registry list models/sentiment
    """
    found = registry.versions(path)
    if not found:
        fail(ScorerError(f"{path}: no registered versions"))
    alias_of: dict[int, list[str]] = {}
    try:
        known = registry.aliases(path)
    except ScorerError as e:
        fail(e)
    for alias, version in known.items():
        alias_of.setdefault(version, []).append(alias)
    rows = []
    for v in found:
        try:
            spec = modeldir.read(path / str(v), verify=False).spec
        except ScorerError as e:
            fail(e)
        val = spec.metrics.get("validation", {})
        rows.append({"version": v, "aliases": alias_of.get(v, []), "labels": spec.labels,
                     "accuracy": val.get("accuracy"), "macro_f1": val.get("macro_f1"),
                     "adapter": f"lora{spec.lora_rank}" if spec.lora_rank else "full",
                     "finished": spec.training.get("finished")})
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'version':>7}  {'accuracy':>8}  {'macro_f1':>8}  {'adapter':8}  {'finished':20}  aliases")
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        f1 = f"{r['macro_f1']:.4f}" if r["macro_f1"] is not None else "-"
        click.echo(f"{r['version']:>7}  {acc:>8}  {f1:>8}  {r['adapter']:8}  "
                   f"{r['finished'] or '-':20}  {', '.join(r['aliases'])}")


@main.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("version", type=int)
@click.option("--alias", default=registry.CHAMPION, show_default=True)
def promote(path, version, alias):
    """Point an alias (champion by default) at VERSION: promotion or rollback.

    Example:

        python -m jobs.registry promote models/sentiment 7
    """
    try:
        with registry.promotion_lock(path):  # not in the middle of a job's promotion
            previous = registry.set_alias(path, alias, version, reason="set by hand")
    except ScorerError as e:
        fail(e)
    click.echo(json.dumps({"alias": alias, "version": version, "previous": previous}))


if __name__ == "__main__":
    main()
