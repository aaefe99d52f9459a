"""Source stage: inputs -> chunks of rows, streamed, never a whole file in memory.

An input is a Parquet file, a Parquet directory (hive partitions become columns), a glob, a
JSON Lines / CSV / plain-text file, or '-' for standard input. Each chunk carries its input
columns as an Arrow table, the texts to score, and a read error per row where a row could not
be read (invalid UTF-8, malformed JSON): such a row is kept, with null text, never dropped.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from scorer import faults
from scorer.errors import InputError

FORMATS = ("auto", "parquet", "jsonl", "csv", "text")
_EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv",
    ".txt": "text", ".text": "text",
}
DEFAULT_CHUNK_ROWS = 8192
DEFAULT_MAX_LINE_BYTES = 16 << 20  # a longer line (JSON Lines, text) is a bad row, never read whole


@dataclass
class Chunk:
    columns: pa.Table  # the input columns as read (text column included)
    texts: list  # [n] str | None: the text to score for each row
    read_errors: list  # [n] str | None: why a row could not be read
    source: str  # input file ('-' for stdin)
    offset: int  # position in the source of the first row

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Input:
    path: str  # a file, a Parquet directory, or '-'
    format: str


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


def detect_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path == "-":
        raise InputError("reading stdin ('-') needs --format (jsonl, csv, text or parquet)")
    if Path(path).is_dir():
        return "parquet"
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise InputError(f"{path}: cannot tell the format from the extension {suffix or '(none)'!r};"
                         " pass --format")
    return _EXTENSIONS[suffix]


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
        elif glob.has_magic(path):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise InputError(f"{path}: no files match")
            inputs += [Input(m, detect_format(m, fmt)) for m in matches]
        elif Path(path).exists():
            inputs.append(Input(path, detect_format(path, fmt)))
        else:
            raise InputError(f"{path}: no such file or directory")
    return inputs


def fingerprint(inp: Input) -> dict:
    """What identifies an input's contents for resume: size and modification time of every file
    (a directory: a digest over its files). Standard input has none: it cannot be read again."""
    if inp.path == "-":
        return {"path": "-", "format": inp.format}
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


def read_chunks(inputs: list[Input], text_column: str, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                stats: SourceStats | None = None, skip: int = 0,
                max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[Chunk]:
    """Chunks of at most chunk_rows rows, in input order, after the first `skip` rows (which are
    counted but not returned: Parquet skips them from metadata, line formats scan past them)."""
    stats = stats if stats is not None else SourceStats()
    readers = {"parquet": _parquet, "jsonl": _jsonl, "csv": _csv, "text": _text}
    skipper = _Skip(skip)
    for inp in inputs:
        stats.files.append(inp.path)
        before = skipper.remaining
        for chunk in readers[inp.format](inp.path, text_column, chunk_rows, stats, skipper,
                                         max_line_bytes):
            stats.rows += len(chunk)
            faults.point("read")
            yield chunk
        stats.rows_skipped += before - skipper.remaining
        stats.rows += before - skipper.remaining


# ----------------------------------------------------------------------------- Parquet

def _parquet(path, text_column, chunk_rows, stats, skip, max_line_bytes) -> Iterator[Chunk]:
    import pyarrow.dataset as ds

    try:
        if path == "-":
            source = pa.BufferReader(sys.stdin.buffer.read())  # Parquet needs random access
            dataset = ds.dataset(source, format="parquet")
            fragments = [(path, f) for f in dataset.get_fragments()]
        else:
            dataset = ds.dataset(path, format="parquet", partitioning="hive")
            fragments = sorted(((f.path, f) for f in dataset.get_fragments()), key=lambda x: x[0])
            if not fragments:
                raise InputError(f"{path}: no Parquet files in this directory")
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not readable as Parquet ({_first_line(e)})") from None
    schema = dataset.schema
    _check_text_type(path, schema, text_column)
    for name, fragment in fragments:
        offset = 0
        try:
            if skip.remaining and skip.remaining >= fragment.count_rows():
                skip.take(fragment.count_rows())  # from the footer: the file is not read
                continue
            for batch in fragment.to_batches(schema=schema, batch_size=chunk_rows):
                skipped = skip.take(batch.num_rows)
                offset += skipped
                batch = batch.slice(skipped)
                if batch.num_rows == 0:
                    continue
                table = pa.Table.from_batches([batch])
                texts = table.column(text_column).to_pylist()
                yield Chunk(table, texts, [None] * len(texts), name, offset)
                offset += batch.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{name}: not readable as Parquet ({_first_line(e)})") from None


def _check_text_type(path, schema: pa.Schema, text_column: str) -> None:
    if text_column not in schema.names:
        raise InputError(f"{path}: no column {text_column!r} (columns: {', '.join(schema.names)});"
                         " pick one with --text-column")
    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind) or pa.types.is_null(kind)):
        raise InputError(f"{path}: column {text_column!r} is {kind}, not a string column")


# ----------------------------------------------------------------------------- CSV

def _csv(path, text_column, chunk_rows, stats, skip, max_line_bytes) -> Iterator[Chunk]:
    import pyarrow.csv as pacsv

    stream = sys.stdin.buffer if path == "-" else path
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}),
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not readable as CSV ({_first_line(e)})") from None
    _check_text_type(path, reader.schema, text_column)
    offset = 0
    try:
        for batch in reader:
            skipped = skip.take(batch.num_rows)
            offset += skipped
            batch = batch.slice(skipped)
            for start in range(0, batch.num_rows, chunk_rows):
                table = pa.Table.from_batches([batch.slice(start, chunk_rows)])
                texts = table.column(text_column).to_pylist()
                yield Chunk(table, texts, [None] * len(texts), path, offset)
                offset += len(texts)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: CSV read failed near row {offset} ({_first_line(e)})") from None


# ----------------------------------------------------------------------------- line formats

def _lines(path, max_line_bytes: int) -> Iterator[bytes | int]:
    """Lines split on b'\\n' only, so U+2028 / U+0085 inside a JSON string never split a record.
    A line longer than max_line_bytes is read past in blocks and yielded as its length (an int)."""
    if path == "-":
        yield from _split_lines(sys.stdin.buffer, max_line_bytes)
        return
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        yield from _split_lines(f, max_line_bytes)


def _split_lines(stream, max_line_bytes: int) -> Iterator[bytes | int]:
    while line := stream.readline(max_line_bytes + 1):
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            size = len(line)
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                size += len(rest)
            yield size + len(rest.rstrip(b"\r\n"))
            continue
        yield line[:-1].rstrip(b"\r") if line.endswith(b"\n") else line


def _too_long(size: int, limit: int) -> str:
    return f"line too long: {size:,} bytes (limit {limit:,}; see --max-line-bytes)"


def _jsonl(path, text_column, chunk_rows, stats, skip, max_line_bytes) -> Iterator[Chunk]:
    schema: pa.Schema | None = None  # taken from the first chunk; later chunks are cast to it
    offset = 0
    records, texts, errors = [], [], []

    def flush():
        nonlocal schema, records, texts, errors, offset
        if schema is None and any(records) and not any(text_column in r for r in records):
            keys = sorted({k for r in records for k in r})
            raise InputError(f"{path}: no field {text_column!r} in any record (fields: "
                             f"{', '.join(keys) or 'none'}); pick one with --text-column")
        table = _records_to_table(path, records, schema)
        schema = schema or table.schema
        chunk = Chunk(table, texts, errors, path, offset)
        offset += len(texts)
        records, texts, errors = [], [], []
        return chunk

    for line in _lines(path, max_line_bytes):
        if isinstance(line, bytes) and not line.strip():
            stats.blank_lines += 1
            continue
        if skip.take(1):
            offset += 1
            continue
        record, error = None, None
        try:
            if isinstance(line, int):
                raise _LineTooLong(_too_long(line, max_line_bytes))
            record = json.loads(line)
            if not isinstance(record, dict):
                record, error = None, f"not a JSON object: a {type(record).__name__}"
        except UnicodeDecodeError:
            error = "invalid UTF-8"
        except json.JSONDecodeError as e:
            error = f"malformed JSON: {e.msg} at column {e.colno}"
        except _LineTooLong as e:
            error = str(e)
        text = None
        if record is not None:
            text = record.get(text_column)
            if text_column not in record:
                error = f"no field {text_column!r}"
            elif text is not None and not isinstance(text, str):
                error = f"text is not a string ({type(text).__name__})"
                text = None
        records.append(record or {})
        texts.append(text)
        errors.append(error)
        if len(texts) == chunk_rows:
            yield flush()
    if texts:
        yield flush()


def _records_to_table(path, records: list[dict], schema: pa.Schema | None) -> pa.Table:
    if schema is None:
        names = list(dict.fromkeys(k for r in records for k in r))
        columns = {n: [r.get(n) for r in records] for n in names}
        try:
            return pa.table(columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed types in a column: keep every value, as its JSON text.
            return pa.table({n: _as_json_text(v) for n, v in columns.items()})
    arrays = []
    for f in schema:
        values = [r.get(f.name) for r in records]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise InputError(f"{path}: field {f.name!r} changes type after the first chunk "
                             f"(was {f.type})") from None
    return pa.Table.from_arrays(arrays, schema=schema)


def _as_json_text(values: list) -> pa.Array:
    return pa.array([v if isinstance(v, str) or v is None else json.dumps(v) for v in values],
                    type=pa.string())


def _text(path, text_column, chunk_rows, stats, skip, max_line_bytes) -> Iterator[Chunk]:
    offset = 0
    texts, errors = [], []
    for line in _lines(path, max_line_bytes):
        if skip.take(1):
            offset += 1
            continue
        if isinstance(line, int):
            texts.append(None)
            errors.append(_too_long(line, max_line_bytes))
        else:
            try:
                texts.append(line.decode("utf-8"))
                errors.append(None)
            except UnicodeDecodeError:
                texts.append(None)
                errors.append("invalid UTF-8")
        if len(texts) == chunk_rows:
            yield Chunk(pa.table({text_column: pa.array(texts, pa.string())}), texts, errors, path, offset)
            offset += len(texts)
            texts, errors = [], []
    if texts:
        yield Chunk(pa.table({text_column: pa.array(texts, pa.string())}), texts, errors, path, offset)


class _LineTooLong(Exception):
    pass


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
