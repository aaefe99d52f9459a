"""Errors a user can act on. Each kind maps to a distinct process exit code (README: Failure
behaviour). Click's usage errors exit 2; an unexpected crash exits 1."""


class ScorerError(Exception):
    """Base class: the message is one line, shown to the user as is."""

    exit_code = 1


class ConfigError(ScorerError):
    """A setting outside the command line is unusable (an environment variable such as
    SCORER_THREADS): the same exit code as click's usage errors."""

    exit_code = 2


class UsageError(ScorerError):
    """The command asks for something that cannot be done safely (an output that is, contains or
    lies inside an input): the same exit code as click's usage errors."""

    exit_code = 2


class InputError(ScorerError):
    """An input file, glob or column is missing, unreadable or of the wrong type."""

    exit_code = 3


class ModelError(ScorerError):
    """A model directory is missing, incomplete, or its files fail their checksums."""

    exit_code = 4


class OutputError(ScorerError):
    """The output directory cannot be used: not empty, not writable, a column clash, or it holds
    an unfinished run of other inputs."""

    exit_code = 5


class DataError(ScorerError):
    """The rows were readable but the run's data rules failed: more bad rows than --max-errors,
    or no rows at all with --fail-on-empty."""

    exit_code = 6


class DriftExceeded(ScorerError):
    """The run finished and its output is committed, but a drift PSI against the model's reference
    passed --max-drift: the scores are right, the data moved."""

    exit_code = 9


class OutputBusy(ScorerError):
    """Another live run holds the output directory's lock."""

    exit_code = 8


class Interrupted(ScorerError):
    """SIGTERM or SIGINT: the run stopped cleanly and can be resumed; exit 128 + signal."""

    def __init__(self, signum: int, name: str):
        super().__init__(f"stopped by {name}; committed part files are kept: run the same command "
                         "again to resume")
        self.exit_code = 128 + signum
