"""The Arrow tables that travel between a run's stages, and the private columns they carry.

    chunk_table(chunk, opts, outputs)                 read chunk -> kept input columns + TEXTS, ...
    scored_table(table, scorer, prepared, probs, opts) -> + output columns + ERROR, TRUNCATED, ...

A chunk_table() is also what a Ray Data block holds (scorer.ray_engine). The private columns all
start with PRIVATE_PREFIX; the write stage (scorer.runs) reads them and drops them before writing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scorer import drift, sink, source
from scorer.api import Prepared, Scorer
from scorer.errors import InputError, OutputError
from scorer.options import RunOptions

PRIVATE_PREFIX = "__"
# chunk_table(): what to score, why a row could not be read, where it came from
TEXTS, READ_ERROR, SOURCE, POSITION = "__texts", "__read_error", "__source", "__position"
# ... the line it starts on (line formats) and, for a row that cannot be scored, its bytes as read
LINE, RAW = "__line", "__raw"
# scored_table(): why a row was not scored, what scoring did to it, the text (for dead letters)
ERROR, TRUNCATED, TOKENS, WINDOWED, TEXT = "__error", "__truncated", "__tokens", "__windowed", "__text"
# An input column named like an output column is kept under this prefix (a labelled file's label)
INPUT_PREFIX = "input_"

# position: 0-based row of the input; line: 1-based line it starts on (JSON Lines, CSV, text);
# raw: the row's bytes as read (line formats, up to --max-line-bytes), to fix and replay it
DEAD_LETTER_SCHEMA = pa.schema([("source", pa.string()), ("position", pa.int64()), ("line", pa.int64()),
                                ("error", pa.string()), ("text", pa.string()), ("raw", pa.binary())])
DEAD_LETTER_COLUMNS = (SOURCE, POSITION, LINE, ERROR, TEXT, RAW)  # DEAD_LETTER_SCHEMA's, in its order

# Output columns holding lists; the others are strings and numbers.
_LIST_OUTPUTS = {"probabilities": pa.list_(pa.float32()), "labels": pa.list_(pa.string()),
                 "embedding": pa.list_(pa.float32())}


def chunk_table(chunk: source.Chunk, opts: RunOptions, outputs: list[str]) -> pa.Table:
    """A read chunk as one Arrow table: the kept input columns (and row_id; one named like an
    output column in `outputs` as input_<name>), then TEXTS, READ_ERROR, SOURCE, POSITION, LINE
    and RAW."""
    n = len(chunk)
    texts = [t if isinstance(t, str) else None for t in chunk.texts]
    private = {TEXTS: pa.array(texts, pa.string()),
               READ_ERROR: pa.array(chunk.read_errors, pa.string()),
               SOURCE: pa.array([chunk.source] * n, pa.string()),
               POSITION: pa.array(range(chunk.offset, chunk.offset + n), pa.int64()),
               LINE: pa.array(chunk.lines or [None] * n, pa.int64()),
               RAW: pa.array(chunk.raw or [None] * n, pa.binary())}
    return _appended(kept_columns(chunk, opts, outputs), private)


def scored_table(table: pa.Table, model_scorer: Scorer, prepared: Prepared, probs: np.ndarray,
                 opts: RunOptions) -> pa.Table:
    """A chunk_table() with the model's output columns in place of its private columns, then
    ERROR, TRUNCATED, TOKENS, WINDOWED, SOURCE, POSITION, TEXT, LINE and RAW (for dead letters)."""
    out = table.drop_columns([TEXTS, READ_ERROR, SOURCE, POSITION, LINE, RAW])
    out = _appended(out, model_scorer.columns(prepared, probs, opts.output_prefix))
    private = {ERROR: pa.array(prepared.errors, pa.string()),
               TRUNCATED: pa.array(prepared.truncated(), pa.bool_()),
               TOKENS: pa.array(drift.token_counts(prepared), pa.int32()),
               WINDOWED: pa.array(prepared.windows() > 1, pa.bool_()),
               SOURCE: table.column(SOURCE), POSITION: table.column(POSITION),
               TEXT: table.column(TEXTS), LINE: table.column(LINE), RAW: table.column(RAW)}
    return _appended(out, private)


def public_columns(table: pa.Table) -> pa.Table:
    """The table without its private columns: what the part files hold."""
    return table.drop_columns([n for n in table.column_names if n.startswith(PRIVATE_PREFIX)])


def dead_letters(bad_rows: pa.Table) -> pa.Table:
    """A scored_table()'s bad rows as dead-letter rows (DEAD_LETTER_SCHEMA)."""
    return (bad_rows.select(list(DEAD_LETTER_COLUMNS)).rename_columns(DEAD_LETTER_SCHEMA.names)
            .cast(DEAD_LETTER_SCHEMA))


def probabilities_in(scored: pa.Table, column: str, num_labels: int) -> np.ndarray:
    """[n, labels] from a scored table's probabilities column; NaN rows where it is null."""
    values = scored.column(column).combine_chunks()
    out = np.full((scored.num_rows, num_labels), np.nan)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    out[valid] = pc.list_flatten(values).to_numpy(zero_copy_only=False).reshape(-1, num_labels)
    return out


def embeddings_in(scored: pa.Table, column: str) -> np.ndarray:
    """[n, dim] float64 from a scored table's embedding column; NaN rows where it is null."""
    return probabilities_in(scored, column, scored.schema.field(column).type.list_size)


def renamed_inputs(names: list[str], outputs: list[str]) -> dict[str, str]:
    """Input columns named like an output column (a labelled file's `label`) -> the name they are
    kept under, INPUT_PREFIX + name, so that a labelled file scores on the first try."""
    return {name: INPUT_PREFIX + name for name in names if name in outputs}


def kept_columns(chunk: source.Chunk, opts: RunOptions, outputs: list[str]) -> pa.Table:
    """The input columns a run keeps (kept_input_names), those named like an output column
    renamed (renamed_inputs), and row_id = "<input>:<position>" when there is no --id-column."""
    keep = kept_input_names(chunk, opts, outputs)
    renames = renamed_inputs(keep, outputs)
    table = chunk.columns.select(keep).rename_columns([renames.get(c, c) for c in keep])
    if not opts.id_column:
        ids = [f"{chunk.source}:{chunk.offset + i}" for i in range(len(chunk))]
        table = table.append_column("row_id", pa.array(ids, pa.string()))
    return table


def kept_input_names(chunk: source.Chunk, opts: RunOptions, outputs: list[str]) -> list[str]:
    """The input columns a run keeps, by their input names (--keep-columns, --id-column,
    --drop-text, --partition-by); InputError for one that is not there."""
    names = chunk.columns.column_names
    renames = renamed_inputs(names, outputs)
    keep = names if opts.keep_columns is None else opts.keep_columns
    unknown = [c for c in keep if c not in names]
    if opts.id_column and opts.id_column not in names:
        unknown.append(opts.id_column)
    # --partition-by names an output column, an input column, or a renamed one (input_label)
    by = opts.partition_by
    partition_input = ({v: k for k, v in renames.items()}.get(by)
                       or (by if by in names and by not in renames else None))
    if by and not partition_input and by not in outputs:
        unknown.append(by)
    if unknown:
        raise InputError(f"{chunk.source}: no column {unknown[0]!r} (columns: {source.shown_names(names)})")
    if opts.id_column and opts.id_column not in keep:
        keep = [opts.id_column] + list(keep)
    if opts.drop_text:
        keep = [c for c in keep if c != opts.text_column]
    if partition_input and partition_input not in keep:
        keep = list(keep) + [partition_input]  # it names the directories (and leaves the files)
    return list(keep)


def check_columns(first: source.Chunk | None, opts: RunOptions, outputs: list[str]) -> dict[str, str]:
    """On the first chunk, before the output is touched (and before the model loads): the kept
    columns exist, none has the name of an output column (`outputs`) once renamed (a renamed
    column whose new name is taken too is refused), and the --partition-by column can name
    directories. Returns the kept input columns renamed (renamed_inputs)."""
    if first is None:
        return {}
    kept = kept_columns(first, opts, outputs)
    renames = renamed_inputs(kept_input_names(first, opts, outputs), outputs)
    for original, renamed in renames.items():
        if kept.column_names.count(renamed) > 1 or renamed in outputs:
            raise OutputError(f"input column {original!r} has the name of an output column and would "
                              f"be kept as {renamed!r}, but {renamed!r} is taken too; name the output "
                              f"columns with --output-prefix (e.g. --output-prefix pred_ gives "
                              f"pred_{original}) or leave one out with --keep-columns")
    if opts.partition_by:
        check_partition_column(kept, opts)
    return renames


def check_partition_column(kept: pa.Table, opts: RunOptions) -> None:
    """--partition-by names directories after its values' text: a list or binary cannot."""
    column = opts.partition_by
    if column in kept.column_names:
        column_type = kept.schema.field(column).type
    else:
        column_type = _LIST_OUTPUTS.get(column.removeprefix(opts.output_prefix), pa.string())
    if not sink.can_name_directories(column_type):
        kind = "list" if pa.types.is_list(column_type) else str(column_type)
        raise OutputError(f"--partition-by {column}: a {kind} column cannot name directories; "
                          "partition by a column of strings, numbers, booleans, dates or times")


def _appended(table: pa.Table, columns) -> pa.Table:
    """table with the columns (a dict of name -> column, or a table) appended, in order."""
    items = columns.items() if isinstance(columns, dict) else zip(columns.column_names, columns.columns)
    for name, column in items:
        table = table.append_column(name, column)
    return table
