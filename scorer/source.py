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
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from scorer import faults, storage
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


def detect_format(path: str, fmt: str, is_dir: bool | None = None) -> str:
    if fmt != "auto":
        return fmt
    if path == "-":
        raise InputError("reading stdin ('-') needs --format (jsonl, csv, text or parquet)")
    if Path(path).is_dir() if is_dir is None else is_dir:
        return "parquet"
    suffix = Path(path.rsplit("/", 1)[-1]).suffix.lower()
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
    return inputs


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
    stats: SourceStats
    skip: _Skip
    max_line_bytes: int
    flush_seconds: float | None  # stdin line formats: hand on a partial chunk within this time


def read_chunks(inputs: list[Input], text_column: str, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                stats: SourceStats | None = None, skip: int = 0,
                max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                flush_seconds: float | None = None) -> Iterator[Chunk]:
    """Chunks of at most chunk_rows rows, in input order, after the first `skip` rows (which are
    counted but not returned: Parquet skips them from metadata, line formats scan past them).

    With flush_seconds, a stream on stdin yields a partial chunk once its oldest row has waited
    flush_seconds / 2, and an empty chunk every quarter second while no row arrives, so that
    the stages downstream can commit on time whatever the producer's pace."""
    stats = stats if stats is not None else SourceStats()
    readers = {"parquet": _parquet, "jsonl": _jsonl, "csv": _csv, "text": _text}
    reading = _Reading(text_column, chunk_rows, stats, _Skip(skip), max_line_bytes, flush_seconds)
    for inp in inputs:
        stats.files.append(inp.path)
        before = reading.skip.remaining
        for chunk in readers[inp.format](inp.path, reading):
            stats.rows += len(chunk)
            faults.point("read")
            yield chunk
        stats.rows_skipped += before - reading.skip.remaining
        stats.rows += before - reading.skip.remaining


# ----------------------------------------------------------------------------- Parquet

def _parquet(path, r: _Reading) -> Iterator[Chunk]:
    import pyarrow.dataset as ds

    text_column, skip = r.text_column, r.skip
    try:
        if path == "-":
            source = pa.BufferReader(sys.stdin.buffer.read())  # Parquet needs random access
            dataset = ds.dataset(source, format="parquet")
            fragments = [(path, f) for f in dataset.get_fragments()]
        else:
            fs, base, scheme = None, path, ""
            if storage.is_remote(path):
                fs, base = storage.filesystem(path)
                scheme = path[:path.index("://") + 3]
            dataset = ds.dataset(base, format="parquet", partitioning="hive", filesystem=fs)
            fragments = sorted(((scheme + f.path, f) for f in dataset.get_fragments()),
                               key=lambda x: x[0])
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
            for batch in fragment.to_batches(schema=schema, batch_size=r.chunk_rows):
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

def _csv(path, r: _Reading) -> Iterator[Chunk]:
    import pyarrow.csv as pacsv

    text_column, skip, chunk_rows = r.text_column, r.skip, r.chunk_rows
    try:
        stream = sys.stdin.buffer if path == "-" else _open_remote(path) if storage.is_remote(path) else path
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

_TICK = object()  # no line arrived for a while (streams only)


def _lines(path, max_line_bytes: int, ticks: bool = False) -> Iterator[bytes | int | object]:
    """Lines split on b'\\n' only, so U+2028 / U+0085 inside a JSON string never split a record.
    A line longer than max_line_bytes is read past in blocks and yielded as its length (an int).
    With ticks (stdin), _TICK is yielded every quarter second while no line arrives."""
    if path == "-":
        lines = _split_lines(sys.stdin.buffer, max_line_bytes)
        yield from _with_ticks(lines) if ticks else lines
        return
    try:
        f = _LineReader(_open_remote(path)) if storage.is_remote(path) else open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        yield from _split_lines(f, max_line_bytes)


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
    return fs.open_input_stream(path)


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


def _split_lines(stream, max_line_bytes: int) -> Iterator[bytes | int]:
    while line := stream.readline(max_line_bytes + 1):
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            size = len(line)
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                size += len(rest)
            yield size + len(rest.rstrip(b"\r\n"))
            continue
        yield line[:-1].rstrip(b"\r") if line.endswith(b"\n") else line


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


def _line_chunks(path, r: _Reading, parse, to_table) -> Iterator[Chunk]:
    """Chunks of a line format: parse(line) -> (record, text, error), or None for a line that is
    not a row; to_table(records, texts) -> the chunk's Arrow columns."""
    offset = 0
    rows: list[tuple] = []
    oldest = 0.0  # when the oldest row in `rows` arrived

    def chunk() -> Chunk:
        nonlocal rows, offset
        records, texts, errors = (list(x) for x in zip(*rows)) if rows else ([], [], [])
        c = Chunk(to_table(records, texts) if rows else pa.table({}), texts, errors, path, offset)
        offset += len(rows)
        rows = []
        return c

    due = r.flush_seconds / 2 if r.flush_seconds else None
    for line in _lines(path, r.max_line_bytes, ticks=due is not None):
        if line is _TICK:
            if not rows or time.monotonic() - oldest >= due:
                yield chunk()  # an empty chunk lets the writer commit on time
            continue
        parsed = parse(line)
        if parsed is None:
            continue
        if r.skip.take(1):
            offset += 1
            continue
        if not rows:
            oldest = time.monotonic()
        rows.append(parsed)
        if len(rows) == r.chunk_rows or (due is not None and time.monotonic() - oldest >= due):
            yield chunk()
    if rows:
        yield chunk()


def _jsonl(path, r: _Reading) -> Iterator[Chunk]:
    text_column = r.text_column
    schema: pa.Schema | None = None  # taken from the first chunk; later chunks are cast to it

    def parse(line):
        if isinstance(line, bytes) and not line.strip():
            r.stats.blank_lines += 1  # white space only: not a record
            return None
        record, error = None, None
        try:
            if isinstance(line, int):
                raise _LineTooLong(_too_long(line, r.max_line_bytes))
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
        return record or {}, text, error

    def to_table(records, texts):
        nonlocal schema
        if schema is None and any(records) and not any(text_column in x for x in records):
            keys = sorted({k for x in records for k in x})
            raise InputError(f"{path}: no field {text_column!r} in any record (fields: "
                             f"{', '.join(keys) or 'none'}); pick one with --text-column")
        table = _records_to_table(path, records, schema)
        schema = schema or table.schema
        return table

    yield from _line_chunks(path, r, parse, to_table)


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


def _text(path, r: _Reading) -> Iterator[Chunk]:
    def parse(line):
        if isinstance(line, int):
            return None, None, _too_long(line, r.max_line_bytes)
        try:
            return None, line.decode("utf-8"), None
        except UnicodeDecodeError:
            return None, None, "invalid UTF-8"

    def to_table(records, texts):
        return pa.table({r.text_column: pa.array(texts, pa.string())})

    yield from _line_chunks(path, r, parse, to_table)


class _LineTooLong(Exception):
    pass


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
