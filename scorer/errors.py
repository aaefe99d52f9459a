"""Errors a user can act on. Each kind maps to a distinct process exit code."""


class ScorerError(Exception):
    """Base class: the message is one line, shown to the user as is."""

    exit_code = 1


class InputError(ScorerError):
    """An input file, glob or column is missing, unreadable or of the wrong type."""

    exit_code = 3


class ModelError(ScorerError):
    """A model directory is missing, incomplete, or its files fail their checksums."""

    exit_code = 4


class OutputError(ScorerError):
    """The output directory cannot be used: not empty, not writable, or a column clash."""

    exit_code = 5
