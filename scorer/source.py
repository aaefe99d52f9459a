"""Source stage: inputs -> chunks of rows, streamed, never a whole file in memory.

An input is a Parquet file, a Parquet directory (hive partitions become columns), a glob, a
JSON Lines / CSV / plain-text file, or '-' for standard input. Each chunk carries its input
columns as an Arrow table, the texts to score, and a read error per row where a row could not
be read (invalid UTF-8, malformed JSON): such a row is kept, with null text, never dropped.
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import json
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from scorer import faults, storage
from scorer.errors import InputError

FORMATS = ("auto", "parquet", "jsonl", "csv", "text")
_EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv",
    ".txt": "text", ".text": "text",
}
# Line formats (JSON Lines, CSV, text) may come compressed: by the file's last extension, or, on
# stdin, by the stream's first bytes. They are read through pyarrow's decompressing streams.
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
_MAGIC = ((re.compile(rb"\x1f\x8b"), "gzip"), (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd"),
          (re.compile(rb"BZh[1-9]"), "bz2"))
CSV_TYPES = ("infer", "none")  # --csv-types
DEFAULT_CHUNK_ROWS = 8192
DEFAULT_CHUNK_BYTES = 4 << 20  # a chunk also ends at this much text, so long rows stay bounded
DEFAULT_MAX_LINE_BYTES = 16 << 20  # a longer line (JSON Lines, CSV, text) is a bad row, never read whole
_PARQUET_READ_BUFFER = 1 << 20  # Parquet pages are read through this buffer, not a column chunk at once


@dataclass
class Chunk:
    columns: pa.Table  # the input columns as read (text column included)
    texts: list  # [n] str | None: the text to score for each row
    read_errors: list  # [n] str | None: why a row could not be read
    source: str  # input file ('-' for stdin)
    offset: int  # position in the source of the first row
    lines: list | None = None  # [n] int: the 1-based line each row starts on (line formats)
    raw: list | None = None  # [n] bytes | None: a bad row's bytes as read (line formats)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Input:
    path: str  # a file, a Parquet directory, or '-'
    format: str
    # A part of a Parquet input (scorer.splits): one file of a directory (as rows' positions
    # name it), and a range [start, stop) of its row groups; None: all of it.
    member: str | None = None
    row_groups: tuple[int, int] | None = None
    # A part of a JSON Lines or text file (scorer.splits): its bytes [start, stop), cut at line
    # starts, and the lines and rows before them (from line_cuts), so that line numbers and
    # row positions go on from there.
    byte_range: tuple[int, int] | None = None
    lines_before: int = 0
    rows_before: int = 0


@dataclass
class SourceStats:
    files: list = field(default_factory=list)
    rows: int = 0
    blank_lines: int = 0  # JSON Lines: lines holding only white space are not records
    rows_skipped: int = 0  # rows a resumed run passed over (already committed); part of `rows`


class _Skip:
    """Rows still to pass over before the first chunk (a resumed run's committed rows)."""

    def __init__(self, rows: int):
        self.remaining = rows

    def take(self, available: int) -> int:
        """How many of the next `available` rows to skip."""
        n = min(self.remaining, available)
        self.remaining -= n
        return n


def detect_format(path: str, fmt: str, is_dir: bool | None = None) -> str:
    if fmt != "auto":
        return fmt
    if path == "-":
        raise InputError("reading stdin ('-') needs --format (jsonl, csv, text or parquet)")
    if Path(path).is_dir() if is_dir is None else is_dir:
        return "parquet"
    name = path.rsplit("/", 1)[-1]
    suffix = Path(name.removesuffix(_compression_suffix(path))).suffix.lower()
    if suffix not in _EXTENSIONS:
        shown = (suffix + _compression_suffix(path)) or "(none)"
        raise InputError(f"{path}: cannot tell the format from the extension {shown!r}; pass --format")
    return _EXTENSIONS[suffix]


def compression_of(path: str) -> str | None:
    """The codec a file is compressed with, by its extension (gzip, zstd, bz2), or None."""
    return COMPRESSIONS.get(_compression_suffix(path).lower())


def _compression_suffix(path: str) -> str:
    suffix = Path(path.rsplit("/", 1)[-1]).suffix
    return suffix if suffix.lower() in COMPRESSIONS else ""


def expand_inputs(paths: list[str], fmt: str = "auto") -> list[Input]:
    """Expand globs and check that every input exists, before anything is read."""
    if not paths:
        raise InputError("no input given")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    inputs = []
    for path in paths:
        if path == "-":
            inputs.append(Input("-", detect_format(path, fmt)))
        elif storage.is_remote(path):
            info = _remote_info(path)
            if info is None:
                raise InputError(f"{path}: no such object or prefix")
            inputs.append(Input(path, detect_format(path, fmt, is_dir=info.type == _dir_type())))
        elif glob.has_magic(path):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise InputError(f"{path}: no files match")
            inputs += [Input(m, detect_format(m, fmt)) for m in matches]
        elif Path(path).exists():
            inputs.append(Input(path, detect_format(path, fmt)))
        else:
            raise InputError(f"{path}: no such file or directory")
    for inp in inputs:
        if inp.path != "-" and not storage.is_remote(inp.path):
            _check_utf8_names(Path(inp.path))
        if inp.format == "parquet" and compression_of(inp.path):
            raise InputError(f"{inp.path}: a compressed Parquet file; Parquet compresses its own "
                             "pages: decompress it first")
    return inputs


def _check_utf8_names(path: Path) -> None:
    """Paths go into row ids, manifests and pyarrow as UTF-8: a local input (or a file of a
    directory input) whose name is not UTF-8 is refused before anything is read."""
    names = [path] + (sorted(path.rglob("*")) if path.is_dir() else [])
    for name in names:
        try:
            str(name).encode("utf-8")
        except UnicodeEncodeError:
            shown = repr(str(name).encode("utf-8", "surrogateescape"))[2:-1]  # its bytes
            raise InputError(f"{shown}: the name is not valid UTF-8; rename it") from None


def fingerprint(inp: Input) -> dict:
    """What identifies an input's contents for resume: size and modification time of every file
    (a directory: a digest over its files). Standard input has none: it cannot be read again."""
    if inp.path == "-":
        return {"path": "-", "format": inp.format}
    if storage.is_remote(inp.path):
        fs, base = storage.filesystem(inp.path)
        info = fs.get_file_info(base)
        if info.type != _dir_type():
            return {"path": inp.path, "format": inp.format, "size": info.size, "mtime_ns": info.mtime_ns}
        import pyarrow.fs as pafs

        files = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        digest = hashlib.sha256()
        for f in sorted(files, key=lambda f: f.path):
            digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
        return {"path": inp.path, "format": inp.format, "files": len(files), "digest": digest.hexdigest()}
    path = Path(inp.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for f in files:
            st = f.stat()
            digest.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"path": inp.path, "format": inp.format, "files": len(files),
                "digest": digest.hexdigest()}
    st = path.stat()
    return {"path": inp.path, "format": inp.format, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class _Reading:
    """What every reader needs besides its path."""

    text_column: str
    chunk_rows: int
    chunk_bytes: int
    stats: SourceStats
    skip: _Skip
    max_line_bytes: int
    flush_seconds: float | None  # stdin line formats: hand on a partial chunk within this time
    csv_text: frozenset | None = None  # CSV columns always kept as text (None: every column)


def read_chunks(inputs: list[Input], text_column: str, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                stats: SourceStats | None = None, skip: int = 0,
                max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                flush_seconds: float | None = None,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES, id_column: str | None = None,
                csv_types: str = "infer") -> Iterator[Chunk]:
    """Chunks of at most chunk_rows rows and about chunk_bytes bytes of input, in input order,
    after the first `skip` rows (which are counted but not returned: Parquet skips whole row
    groups from their footers, line formats scan past them).

    With flush_seconds, a stream on stdin yields a partial chunk once its oldest row has waited
    flush_seconds / 2, and an empty chunk every quarter second while no row arrives, so that
    the stages downstream can commit on time whatever the producer's pace.

    CSV columns are typed (csv_types "infer", see _csv_values) but for the text and id columns,
    which stay text as read; csv_types "none" keeps every column as read."""
    stats = stats if stats is not None else SourceStats()
    readers = {"parquet": _parquet, "jsonl": _jsonl, "csv": _csv, "text": _text}
    csv_text = None if csv_types == "none" else frozenset(c for c in (text_column, id_column) if c)
    reading = _Reading(text_column, chunk_rows, chunk_bytes, stats, _Skip(skip), max_line_bytes,
                       flush_seconds, csv_text)
    for inp in inputs:
        stats.files.append(inp.path)
        before = reading.skip.remaining
        read = (functools.partial(_parquet, member=inp.member, row_groups=inp.row_groups)
                if inp.format == "parquet" else
                functools.partial(readers[inp.format], part=inp) if inp.byte_range else readers[inp.format])
        for chunk in read(inp.path, reading):
            stats.rows += len(chunk)
            faults.point("read")
            yield chunk
        stats.rows_skipped += before - reading.skip.remaining
        stats.rows += before - reading.skip.remaining


# ----------------------------------------------------------------------------- Parquet

def _parquet(path, r: _Reading, member: str | None = None,
             row_groups: tuple[int, int] | None = None) -> Iterator[Chunk]:
    schema, files = _parquet_dataset(path)
    _check_text_type(path, schema, r.text_column)
    if member is not None:
        files = [f for f in files if f.name == member]
        if not files:
            raise InputError(f"{member}: no longer in {path}; it changed since the run was planned")
    for file in files:
        try:
            yield from _parquet_file(file, schema, r, row_groups)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{file.name}: not readable as Parquet ({_first_line(e)})") from None


def _parquet_dataset(path) -> tuple[pa.Schema, list["_ParquetFile"]]:
    """A Parquet input's schema (over all its files) and its files in name order."""
    import pyarrow.dataset as ds

    try:
        if path == "-":
            data = pa.BufferReader(sys.stdin.buffer.read())  # Parquet needs random access
            return pq.read_schema(data), [_ParquetFile(path, lambda: data, {})]
        fs, base, scheme = None, path, ""
        if storage.is_remote(path):
            fs, base = storage.filesystem(path)
            scheme = path[:path.index("://") + 3]
        dataset = ds.dataset(base, format="parquet", partitioning="hive", filesystem=fs)
        files = sorted((_ParquetFile(scheme + f.path, functools.partial(f.filesystem.open_input_file, f.path),
                                     ds.get_partition_keys(f.partition_expression))
                        for f in dataset.get_fragments()), key=lambda f: f.name)
        if not files:
            raise InputError(f"{path}: no Parquet files in this directory")
        return dataset.schema, files
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not readable as Parquet ({_first_line(e)})") from None


def parquet_layout(path: str) -> list[tuple[str, list[int]]]:
    """A Parquet file's or directory's files (as rows' positions name them), each with its row
    groups' row counts, from the footers only (scorer.splits plans with it)."""
    _, files = _parquet_dataset(path)
    layout = []
    for file in files:
        try:
            with file.open() as f:
                meta = pq.ParquetFile(f).metadata
                layout.append((file.name, [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]))
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{file.name}: not readable as Parquet ({_first_line(e)})") from None
    return layout


@dataclass
class _ParquetFile:
    name: str  # as rows' positions name it
    open: Callable[[], object]  # -> a random-access file
    partition: dict  # hive partition column -> value, from the file's path


def _parquet_file(file: _ParquetFile, schema: pa.Schema, r: _Reading,
                  row_groups: tuple[int, int] | None = None) -> Iterator[Chunk]:
    """One file's chunks (of its row groups [start, stop) only, if given: positions still count
    from the file's first row). Committed row groups (resume) are skipped from the footer,
    unread; the rest is decoded a batch at a time through a small read buffer, never a whole
    row group."""
    with file.open() as f:
        parquet = pq.ParquetFile(f, buffer_size=_PARQUET_READ_BUFFER, pre_buffer=False)
        meta = parquet.metadata
        start, stop = row_groups or (0, meta.num_row_groups)
        offset = sum(meta.row_group(g).num_rows for g in range(start))
        groups = []
        for g in range(start, min(stop, meta.num_row_groups)):
            rows = meta.row_group(g).num_rows
            if not groups and r.skip.remaining >= rows:
                offset += r.skip.take(rows)
            else:
                groups.append(g)
        if not groups:
            return
        for batch in parquet.iter_batches(_batch_rows(meta, groups, r), row_groups=groups,
                                          use_threads=False):
            skipped = r.skip.take(batch.num_rows)
            offset += skipped
            if batch.num_rows == skipped:
                continue
            table = _conform(pa.Table.from_batches([batch.slice(skipped)]), schema, file.partition)
            texts, errors = _texts(table.column(r.text_column))
            table = table.set_column(table.schema.get_field_index(r.text_column), r.text_column,
                                     pa.array(texts, pa.string()))
            yield Chunk(table, texts, errors, file.name, offset)
            offset += table.num_rows


def _batch_rows(meta, groups: list[int], r: _Reading) -> int:
    """Rows a batch may hold to stay near chunk_bytes, from the row groups' uncompressed sizes."""
    row_bytes = max(meta.row_group(g).total_byte_size / max(1, meta.row_group(g).num_rows)
                    for g in groups)
    return max(1, min(r.chunk_rows, int(r.chunk_bytes / max(row_bytes, 1))))


def _conform(table: pa.Table, schema: pa.Schema, partition: dict) -> pa.Table:
    """A file's batch with the input's columns: its hive partition values added, a column the
    file lacks as nulls, a column of another type cast where it can be (else kept as it is:
    a new part file starts)."""
    n = table.num_rows
    columns = {}
    for f in schema:
        if f.name in partition:
            columns[f.name] = pa.array([partition[f.name]] * n, f.type)
        elif f.name not in table.column_names:
            columns[f.name] = pa.nulls(n, f.type)
        else:
            column = table.column(f.name)
            try:
                columns[f.name] = column.cast(f.type) if column.type != f.type else column
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                columns[f.name] = column
    return pa.table(columns)


def _texts(column: pa.ChunkedArray) -> tuple[list, list]:
    """A string-like or binary text column (dictionary-encoded or not) as str per row, with
    "invalid UTF-8" where a value does not decode (Parquet writers do not all check)."""
    if pa.types.is_null(column.type):
        return [None] * len(column), [None] * len(column)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    texts, errors = [], []
    for value in column.cast(pa.large_binary()).to_pylist():
        try:
            texts.append(None if value is None else value.decode("utf-8"))
            errors.append(None)
        except UnicodeDecodeError:
            texts.append(None)
            errors.append("invalid UTF-8")
    return texts, errors


def _is_text_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return any(test(kind) for test in (
        pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view, pa.types.is_binary,
        pa.types.is_large_binary, pa.types.is_binary_view, pa.types.is_null))


def shown_names(names) -> str:
    """Column names as an error lists them: quoted, invisible characters escaped ('\\ufeffid')."""
    return ", ".join(repr(n) for n in names) or "none"


def _check_text_type(path, schema: pa.Schema, text_column: str) -> None:
    if text_column not in schema.names:
        raise InputError(f"{path}: no column {text_column!r} (columns: {shown_names(schema.names)});"
                         " pick one with --text-column")
    kind = schema.field(text_column).type
    if not _is_text_type(kind):
        raise InputError(f"{path}: column {text_column!r} is {kind}, not a string column")


# ----------------------------------------------------------------------------- CSV

def _csv(path, r: _Reading) -> Iterator[Chunk]:
    """CSV with a header, parsed by the csv module over bounded lines, so that a row with the
    wrong number of fields, invalid UTF-8, a field over 1 MiB, a quoted multi-line value or a
    column whose values change kind is one row's business, never the whole run's."""
    lines = _CsvLines(_lines(path, r.max_line_bytes))
    csv.field_size_limit(max(r.max_line_bytes, csv.field_size_limit()))  # a field spans lines
    rows = _csv_rows(csv.reader(lines), lines, r.max_line_bytes)
    header = next(rows, None)
    if header is None:
        return  # an empty file: no rows
    names = [_escape_surrogates(n) for n in header.fields]
    if r.text_column not in names:
        raise InputError(f"{path}: no column {r.text_column!r} (columns: {shown_names(names)});"
                         " pick one with --text-column")
    columns = _Columns(r.text_column)

    def parse(row: _CsvRow) -> _Row:
        if row.error:
            return _Row({}, None, f"{row.error} (line {row.line})", len(row.raw), row.start, row.raw)
        if len(row.fields) != len(names):
            return _Row({}, None, f"wrong number of fields: expected {len(names)}, got "
                                  f"{len(row.fields)} (line {row.line})", len(row.raw), row.start, row.raw)
        record = dict(zip(names, (_escape_surrogates(v) for v in row.fields)))
        text = row.fields[names.index(r.text_column)]
        if _has_surrogate(text):  # bytes that are not UTF-8, as the decoder escaped them
            record[r.text_column] = None
            return _Row(record, None, "invalid UTF-8", len(row.raw), row.start, row.raw)
        return _kept_raw(_Row(record, text, None, sum(map(len, row.fields)), row.start), row.raw)

    def to_table(rows: list[_Row]) -> pa.Table:
        records = [x.record for x in rows]
        as_read = names if r.csv_text is None else r.csv_text
        typed = {n: [x.get(n) for x in records] if n in as_read
                 else _csv_values([x.get(n) for x in records]) for n in names}
        return columns.table([dict(zip(names, values)) for values in zip(*typed.values())])

    yield from _chunks(path, r, rows, parse, to_table)


class _CsvLines:
    """Bytes lines -> str lines for the csv module (undecodable bytes escaped as surrogates);
    a line over --max-line-bytes, read past unheld, is counted so its row becomes an error."""

    def __init__(self, lines: Iterator):
        self.lines = lines
        self.too_long: _TooLong | None = None  # the latest over-long line
        self.number = 0  # physical lines read
        self.raw: list[bytes] = []  # the lines read since reset, as read

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.number += 1
        if isinstance(line, _TooLong):
            self.too_long = line
            self.raw.append(line.head)
            return "\n"
        self.raw.append(line)
        return line.decode("utf-8", "surrogateescape") + "\n"


@dataclass
class _CsvRow:
    fields: list[str]
    line: int  # the physical line the row ends on
    error: str | None = None
    start: int = 0  # the physical line it starts on (1-based)
    raw: bytes = b""  # its lines as read (a quoted value may span several)


def _csv_rows(reader, lines: _CsvLines, max_line_bytes: int) -> Iterator[_CsvRow]:
    """The csv module's rows with their line number, blank lines left out; a csv.Error (a field
    over the limit) or an over-long line makes that row an error, and reading goes on."""
    while True:
        lines.too_long, lines.raw, start = None, [], lines.number + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield _CsvRow([], reader.line_num, f"malformed CSV: {e}", start, b"\n".join(lines.raw))
            continue
        raw = b"\n".join(lines.raw)
        if lines.too_long is not None:
            yield _CsvRow([], reader.line_num, _too_long(lines.too_long.size, max_line_bytes), start, raw)
        elif fields:
            yield _CsvRow(fields, reader.line_num, None, start, raw)


_CSV_INT = re.compile(r"[-+]?\d+\Z")
_CSV_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z|[-+]?(nan|inf)\Z", re.IGNORECASE)
_CSV_BOOL = {"true": True, "false": False}
_CSV_LEADING_ZERO = re.compile(r"[-+]?0\d")


def _csv_values(values: list) -> list:
    """A chunk's CSV fields of one column as what they spell: all integers -> int, all numbers
    -> float, all true/false -> bool (an empty field is then null), all empty -> null; else
    (or if a number has a leading zero) the text as it is."""
    present = [v for v in values if v]
    if not present:
        return [None] * len(values)
    if any(_CSV_LEADING_ZERO.match(v) for v in present):
        return values  # 007, ZIP 02139: codes, not numbers
    if all(_CSV_INT.match(v) for v in present):
        return [int(v) if v else None for v in values]
    if all(_CSV_FLOAT.match(v) for v in present):
        return [float(v) if v else None for v in values]
    if all(v.lower() in _CSV_BOOL for v in present):
        return [_CSV_BOOL[v.lower()] if v else None for v in values]
    return values


# ----------------------------------------------------------------------------- column types

class _Columns:
    """The columns of a line format's rows so far (JSON Lines, CSV). Each chunk's column keeps
    the type it had where its values fit (a column absent or null in a chunk too), widens where
    they fit a common type (int -> float, null -> anything, new struct fields) and becomes JSON
    text where they fit none; the text column is always a string. A column never disappears,
    and a new one is added: a changed schema starts a new part file (scorer.sink)."""

    def __init__(self, text_column: str):
        self.text_column = text_column
        self.types: dict[str, pa.DataType | None] = {}  # in order of first appearance

    def table(self, records: list[dict]) -> pa.Table:
        for record in records:
            for name in record:
                self.types.setdefault(name, None)
        arrays = {}
        for name, before in self.types.items():
            values = [x.get(name) for x in records]
            arrays[name] = (_as_json_text(values) if name == self.text_column
                            else _column(values, before))
            self.types[name] = arrays[name].type
        return pa.table(arrays) if arrays else pa.table({"": pa.nulls(len(records))}).drop_columns([""])


def _column(values: list, before: pa.DataType | None) -> pa.Array:
    own = _array(values)
    if own is None or not _parquet_can_hold(own.type):
        return _as_json_text(values)
    if before is None or own.type == before:
        return own
    common = _common_type(before, own.type)
    fitted = _array(values, common) if common is not None else None
    return fitted if fitted is not None else _as_json_text(values)


def _array(values: list, kind: pa.DataType | None = None) -> pa.Array | None:
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError,
            ValueError, TypeError):
        return None


def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    try:
        merged = pa.unify_schemas([pa.schema([("x", a)]), pa.schema([("x", b)])],
                                  promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return merged.field("x").type


def _parquet_can_hold(kind: pa.DataType) -> bool:
    """False for a struct with no fields (JSON {}) anywhere inside: Parquet cannot write it."""
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_parquet_can_hold(f.type) for f in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _parquet_can_hold(kind.value_type)
    return True


def _as_json_text(values: list) -> pa.Array:
    return pa.array([v if isinstance(v, str) or v is None else json.dumps(v) for v in values],
                    type=pa.string())


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _escape_surrogates(value):
    """A JSON value (or CSV field) with every string and key made encodable: a byte that is not
    UTF-8 (CSV) or a lone surrogate (JSON) kept as its backslash escape (\\xe9, \\ud83d)."""
    if isinstance(value, str):
        if not _has_surrogate(value):
            return value
        try:
            raw = value.encode("utf-8", "surrogateescape")  # CSV: the bytes as they were
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "backslashreplace")  # JSON: a lone surrogate
        return raw.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_surrogates(v) for v in value]
    return value


# ----------------------------------------------------------------------------- line formats

_TICK = object()  # no line arrived for a while (streams only)


def _lines(path, max_line_bytes: int, ticks: bool = False,
           byte_range: tuple[int, int] | None = None) -> Iterator[bytes | int | object]:
    """Lines split on b'\\n' only, so U+2028 / U+0085 inside a JSON string never split a record.
    A line longer than max_line_bytes is read past in blocks and yielded as a _TooLong.
    With ticks (stdin), _TICK is yielded every quarter second while no line arrives. With
    byte_range (an uncompressed local file), the lines that start in [start, stop)."""
    if byte_range is not None:
        try:
            f = open(path, "rb")
        except OSError as e:
            raise InputError(f"{path}: cannot open ({e.strerror or e})") from None
        with f:
            f.seek(byte_range[0])
            yield from _split_lines(_Range(f, byte_range[1] - byte_range[0]), max_line_bytes,
                                    bom=byte_range[0] == 0)
        return
    if path == "-":
        lines = _split_lines(_stdin(), max_line_bytes)
        yield from _with_ticks(lines) if ticks else lines
        return
    compression = compression_of(path)
    try:
        if compression:
            raw = _open_remote(path) if storage.is_remote(path) else pa.OSFile(path, "rb")
            f = _LineReader(pa.CompressedInputStream(raw, compression))
        else:
            f = _LineReader(_open_remote(path)) if storage.is_remote(path) else open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        try:
            yield from _split_lines(f, max_line_bytes)
        except (OSError, pa.ArrowInvalid) as e:
            if not compression:
                raise
            raise InputError(f"{path}: not readable as {compression} ({_first_line(e)})") from None


def _stdin():
    """Standard input with readline, decompressed if its first bytes are a gzip, zstd or bz2
    header. The header is read before the first line: a plain stream's first line waits for 4
    bytes (or the end)."""
    stdin = sys.stdin.buffer
    head = stdin.read(4)
    compression = next((codec for magic, codec in _MAGIC if magic.match(head)), None)
    stream = _Prefixed(head, stdin)
    if compression is None:
        return stream
    return _LineReader(pa.CompressedInputStream(pa.PythonFile(stream, mode="r"), compression))


class _Prefixed:
    """A stream with bytes already read put back in front (read1 and readline)."""

    closed = False  # pyarrow's PythonFile asks

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if size < 0 or size >= len(self.head) else \
                (self.head[:size], self.head[size:])
            return data
        return self.stream.read1(size) if size > 0 else self.stream.read()

    def readline(self, limit: int) -> bytes:
        if not self.head:
            return self.stream.readline(limit)
        end = self.head.find(b"\n", 0, limit)
        if end >= 0 or len(self.head) >= limit:
            n = end + 1 if end >= 0 else limit
            line, self.head = self.head[:n], self.head[n:]
            return line
        line, self.head = self.head, b""
        return line + self.stream.readline(limit - len(line))

    def close(self) -> None:
        pass  # stdin stays open


class _LineReader:
    """readline(limit) over a pyarrow input stream (object stores), which has no readline."""

    def __init__(self, stream, block: int = 1 << 20):
        self.stream, self.block = stream, block
        self.buffer = bytearray()
        self.eof = False

    def readline(self, limit: int) -> bytes:
        while not self.eof and len(self.buffer) < limit and b"\n" not in self.buffer:
            data = self.stream.read(self.block)
            self.eof = not data
            self.buffer += data
        end = self.buffer.find(b"\n", 0, limit)
        n = end + 1 if end >= 0 else min(limit, len(self.buffer))
        line = bytes(self.buffer[:n])
        del self.buffer[:n]
        return line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


def _open_remote(uri: str):
    fs, path = storage.filesystem(uri)
    return fs.open_input_stream(path, compression=None)  # decompressed by _lines, if at all


def _remote_info(uri: str):
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise InputError(f"{uri}: cannot read ({str(e).splitlines()[0]})") from None
    return None if info.type == pafs.FileType.NotFound else info


def _dir_type():
    import pyarrow.fs as pafs

    return pafs.FileType.Directory


@dataclass
class _TooLong:
    """A line over --max-line-bytes, read past without being held: its size and first bytes."""

    size: int
    head: bytes  # its first max_line_bytes bytes


_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark: Excel's "CSV UTF-8", Windows editors


class _Range:
    """readline over a file from where it stands, ending with the line that starts before
    `size` more bytes (a line that starts inside is read to its end)."""

    def __init__(self, f, size: int):
        self.f, self.left, self.at_line_start = f, size, True

    def readline(self, limit: int) -> bytes:
        if self.left <= 0 and self.at_line_start:
            return b""
        line = self.f.readline(limit)
        self.left -= len(line)
        self.at_line_start = line.endswith(b"\n")
        return line


class _Offsets:
    """readline over a file that keeps the byte offset where the latest line started."""

    def __init__(self, f):
        self.f, self.pos, self.line_start, self.at_line_start = f, 0, 0, True

    def readline(self, limit: int) -> bytes:
        if self.at_line_start:
            self.line_start = self.pos
        line = self.f.readline(limit)
        self.pos += len(line)
        self.at_line_start = line.endswith(b"\n")
        return line


def line_cuts(path: str, fmt: str, rows_per_cut: int, max_line_bytes: int) -> list[tuple[int, int, int]]:
    """Where an uncompressed local JSON Lines or text file can be cut into pieces of
    rows_per_cut rows: (byte offset of a row's line start, lines before it, rows before it), the
    first (0, 0, 0), then one every rows_per_cut rows, then (file size, lines, rows) at the end.
    Every line is read (as the reader reads them: a JSON Lines line holding only white space is
    no row), none parsed."""
    cuts = [(0, 0, 0)]
    lines = rows = 0
    try:
        with open(path, "rb") as f:
            stream = _Offsets(f)
            for line in _split_lines(stream, max_line_bytes):
                row = fmt != "jsonl" or isinstance(line, _TooLong) or bool(line.strip())
                if row and rows and rows % rows_per_cut == 0 and cuts[-1][2] != rows:
                    cuts.append((stream.line_start, lines, rows))
                lines += 1
                rows += row
            cuts.append((stream.pos, lines, rows))
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    return cuts


def _split_lines(stream, max_line_bytes: int, bom: bool = True) -> Iterator[bytes | _TooLong]:
    """The stream's lines without their line end; a leading UTF-8 byte-order mark is dropped
    (bom: the stream starts the file)."""
    limit = max_line_bytes + 1 + (len(_BOM) if bom else 0)  # the first line may carry a BOM
    while line := stream.readline(limit):
        if limit > max_line_bytes + 1:
            line, limit = line.removeprefix(_BOM), max_line_bytes + 1
            if not line:
                continue  # a file holding only the mark
        ended = line.endswith(b"\n")
        content = line[:-1] if ended else line
        if len(content) > max_line_bytes:
            size = len(content)
            if not ended:
                while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                    size += len(rest)
                size += len(rest.rstrip(b"\r\n"))
            yield _TooLong(size, bytes(content[:max_line_bytes]))
            continue
        yield content.rstrip(b"\r") if ended else content


def _with_ticks(lines: Iterator, interval: float = 0.25) -> Iterator:
    """Read `lines` on a thread (a blocking read cannot time out) and tick while none arrives."""
    q: queue.Queue = queue.Queue(maxsize=4096)
    end = object()

    def pump():
        try:
            for line in lines:
                q.put(line)
            q.put(end)
        except BaseException as e:  # raised in the consumer
            q.put(e)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    while True:
        try:
            item = q.get(timeout=interval)
        except queue.Empty:
            yield _TICK
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _too_long(size: int, limit: int) -> str:
    return f"line too long: {size:,} bytes (limit {limit:,}; see --max-line-bytes)"


@dataclass
class _Row:
    """One row of a line format as parsed, before it joins a chunk."""

    record: dict | None  # its fields (JSON Lines, CSV); None for plain text
    text: str | None
    error: str | None  # why it cannot be scored
    size: int  # bytes it holds, for the chunk's byte bound
    line: int | None = None  # the 1-based line it starts on
    raw: bytes | None = None  # its bytes as read, kept only for a row that cannot be scored


def _kept_raw(row: _Row, raw: bytes) -> _Row:
    """The row with its bytes as read if it cannot be scored as it is (a read error, a null,
    missing or blank text): its dead letter carries them, to be fixed and replayed."""
    if row.error is not None or row.text is None or not row.text.strip():
        row.raw = raw
    return row


def _chunks(path, r: _Reading, items: Iterator, parse, to_table, offset: int = 0) -> Iterator[Chunk]:
    """Chunks of a line format, cut at chunk_rows rows or chunk_bytes bytes: parse(item) -> a
    _Row, or None for an item that is not a row; to_table(rows) -> the chunk's columns; offset:
    the position of the first row."""
    held = 0
    rows: list[_Row] = []
    oldest = 0.0  # when the oldest row in `rows` arrived

    def chunk() -> Chunk:
        nonlocal rows, offset, held
        table = to_table(rows) if rows else pa.table({})
        c = Chunk(table, [x.text for x in rows], [x.error for x in rows], path, offset,
                  [x.line for x in rows], [x.raw for x in rows])
        offset += len(rows)
        rows, held = [], 0
        return c

    due = r.flush_seconds / 2 if r.flush_seconds else None
    for item in items:
        if item is _TICK:
            if not rows or time.monotonic() - oldest >= due:
                yield chunk()  # an empty chunk lets the writer commit on time
            continue
        row = parse(item)
        if row is None:
            continue
        if r.skip.take(1):
            offset += 1
            continue
        if not rows:
            oldest = time.monotonic()
        rows.append(row)
        held += row.size
        if (len(rows) == r.chunk_rows or held >= r.chunk_bytes
                or (due is not None and time.monotonic() - oldest >= due)):
            yield chunk()
    if rows:
        yield chunk()


def _jsonl(path, r: _Reading, part: Input | None = None) -> Iterator[Chunk]:
    text_column = r.text_column
    columns = _Columns(text_column)
    number = part.lines_before if part else 0  # lines read

    def parse(line) -> _Row | None:
        nonlocal number
        number += 1
        if isinstance(line, _TooLong):
            return _Row({}, None, _too_long(line.size, r.max_line_bytes), len(line.head), number, line.head)
        if not line.strip():
            r.stats.blank_lines += 1  # white space only: not a record
            return None
        record, error = _json_record(line)
        text = None
        if record is not None and error is None:
            text = record.get(text_column)
            if text_column not in record:
                error = f"no field {text_column!r}"
            elif text is not None and not isinstance(text, str):
                error = f"text is not a string ({type(text).__name__})"
                text = None
            if _SURROGATE_ESCAPE.search(line):  # \udXXX: maybe a lone surrogate, not encodable
                if text is not None and _has_surrogate(text):
                    error = (f"invalid Unicode: a lone surrogate ({_first_surrogate(text)}) in "
                             f"field {text_column!r}")
                    text = None
                record = _escape_surrogates(record)  # other fields keep theirs as \udXXX
        return _kept_raw(_Row(record or {}, text, error, len(line), number), line)

    def to_table(rows: list[_Row]) -> pa.Table:
        records = [x.record for x in rows]
        # (a later part of a file leaves it to the first: its rows may all lack the field)
        if not columns.types and any(records) and not any(text_column in x for x in records) \
                and not (part and part.byte_range[0] > 0):
            keys = sorted({k for x in records for k in x})
            raise InputError(f"{path}: no field {text_column!r} in any record (fields: "
                             f"{shown_names(keys)}); pick one with --text-column")
        return columns.table(records)

    yield from _chunks(path, r, _lines(path, r.max_line_bytes, ticks=bool(r.flush_seconds),
                                       byte_range=part.byte_range if part else None),
                       parse, to_table, part.rows_before if part else 0)


def _json_record(line: bytes) -> tuple[dict | None, str | None]:
    """A line as a JSON object, or None and why not."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return None, "invalid UTF-8"
    except json.JSONDecodeError as e:
        return None, f"malformed JSON: {e.msg} at column {e.colno}"
    except RecursionError:
        return None, "malformed JSON: nested too deeply"
    if not isinstance(record, dict):
        return None, f"not a JSON object: a {type(record).__name__}"
    return record, None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _first_surrogate(text: str) -> str:
    return next(f"\\u{ord(c):04x}" for c in text if 0xD800 <= ord(c) <= 0xDFFF)


def _text(path, r: _Reading, part: Input | None = None) -> Iterator[Chunk]:
    number = part.lines_before if part else 0  # lines read

    def parse(line) -> _Row:
        nonlocal number
        number += 1
        if isinstance(line, _TooLong):
            return _Row(None, None, _too_long(line.size, r.max_line_bytes), len(line.head), number, line.head)
        try:
            return _kept_raw(_Row(None, line.decode("utf-8"), None, len(line), number), line)
        except UnicodeDecodeError:
            return _Row(None, None, "invalid UTF-8", len(line), number, line)

    def to_table(rows: list[_Row]) -> pa.Table:
        return pa.table({r.text_column: pa.array([x.text for x in rows], pa.string())})

    yield from _chunks(path, r, _lines(path, r.max_line_bytes, ticks=bool(r.flush_seconds),
                                       byte_range=part.byte_range if part else None),
                       parse, to_table, part.rows_before if part else 0)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
