"""The jobs' one way out on an error."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from scorer.errors import ScorerError


def fail(error: ScorerError) -> NoReturn:
    """One `error: ...` line on stderr and the error's exit code (README: exit codes)."""
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)
