"""The Arrow tables that travel between a run's stages, and the private columns they carry.

    chunk_table(chunk, opts)                          read chunk -> kept input columns + TEXTS, ...
    scored_table(table, scorer, prepared, probs, opts) -> + output columns + ERROR, TRUNCATED, ...

A chunk_table() is also what a Ray Data block holds (scorer.ray_engine). The private columns all
start with PRIVATE_PREFIX; the write stage (scorer.runs) reads them and drops them before writing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scorer import drift, sink, source
from scorer.api import Prepared, Scorer, output_names
from scorer.errors import InputError, OutputError
from scorer.options import RunOptions

PRIVATE_PREFIX = "__"
# chunk_table(): what to score, why a row could not be read, where it came from
TEXTS, READ_ERROR, SOURCE, POSITION = "__texts", "__read_error", "__source", "__position"
# ... the line it starts on (line formats) and, for a row that cannot be scored, its bytes as read
LINE, RAW = "__line", "__raw"
# scored_table(): why a row was not scored, what scoring did to it, the text (for dead letters)
ERROR, TRUNCATED, TOKENS, WINDOWED, TEXT = "__error", "__truncated", "__tokens", "__windowed", "__text"

# position: 0-based row of the input; line: 1-based line it starts on (JSON Lines, CSV, text);
# raw: the row's bytes as read (line formats, up to --max-line-bytes), to fix and replay it
DEAD_LETTER_SCHEMA = pa.schema([("source", pa.string()), ("position", pa.int64()), ("line", pa.int64()),
                                ("error", pa.string()), ("text", pa.string()), ("raw", pa.binary())])
DEAD_LETTER_COLUMNS = (SOURCE, POSITION, LINE, ERROR, TEXT, RAW)  # DEAD_LETTER_SCHEMA's, in its order

# Output columns holding lists; the others are strings and numbers.
_LIST_OUTPUTS = {"probabilities": pa.list_(pa.float32()), "labels": pa.list_(pa.string())}


def chunk_table(chunk: source.Chunk, opts: RunOptions) -> pa.Table:
    """A read chunk as one Arrow table: the kept input columns (and row_id), then TEXTS,
    READ_ERROR, SOURCE, POSITION, LINE and RAW."""
    n = len(chunk)
    texts = [t if isinstance(t, str) else None for t in chunk.texts]
    private = {TEXTS: pa.array(texts, pa.string()),
               READ_ERROR: pa.array(chunk.read_errors, pa.string()),
               SOURCE: pa.array([chunk.source] * n, pa.string()),
               POSITION: pa.array(range(chunk.offset, chunk.offset + n), pa.int64()),
               LINE: pa.array(chunk.lines or [None] * n, pa.int64()),
               RAW: pa.array(chunk.raw or [None] * n, pa.binary())}
    return _appended(kept_columns(chunk, opts), private)


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


def kept_columns(chunk: source.Chunk, opts: RunOptions) -> pa.Table:
    """The input columns a run keeps (--keep-columns, --id-column, --drop-text, --partition-by),
    and row_id = "<input>:<position>" when there is no --id-column."""
    names = chunk.columns.column_names
    keep = names if opts.keep_columns is None else opts.keep_columns
    unknown = [c for c in keep if c not in names]
    for col in (opts.id_column, opts.partition_by):
        if col and col not in names and col not in output_names(True, opts.output_prefix, True):
            unknown.append(col)
    if unknown:
        raise InputError(f"{chunk.source}: no column {unknown[0]!r} (columns: {source.shown_names(names)})")
    if opts.id_column and opts.id_column not in keep:
        keep = [opts.id_column] + list(keep)
    if opts.drop_text:
        keep = [c for c in keep if c != opts.text_column]
    if opts.partition_by in names and opts.partition_by not in keep:
        keep = list(keep) + [opts.partition_by]  # it names the directories (and leaves the files)
    table = chunk.columns.select(list(keep))
    if not opts.id_column:
        ids = [f"{chunk.source}:{chunk.offset + i}" for i in range(len(chunk))]
        table = table.append_column("row_id", pa.array(ids, pa.string()))
    return table


def check_columns(first: source.Chunk | None, opts: RunOptions, multi_label: bool,
                  windowed: bool, names: list[str] | None = None) -> None:
    """On the first chunk, before the output is touched: the kept columns exist, none has an
    output column's name (`names`, default: a classifier's), and the --partition-by column can
    name directories."""
    if first is None:
        return
    kept = kept_columns(first, opts)
    clash = [c for c in names or output_names(multi_label, opts.output_prefix, windowed)
             if c in kept.column_names]
    if clash:
        raise OutputError(f"input column {clash[0]!r} has the name of an output column; keep both "
                          f"with --output-prefix (e.g. --output-prefix pred_ gives pred_{clash[0]}) "
                          f"or leave it out with --keep-columns")
    if opts.partition_by:
        check_partition_column(kept, opts)


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
