"""Sink stage: scored tables -> Parquet part files.

A part file is written under a temporary name (.part-SSSSS-NNNNN.parquet.tmp) and renamed into place
when committed, so a reader never sees half a file. The pipeline decides when parts are committed
(its checkpoints, see scorer.commit); part names are deterministic (part-<split>-<n>.parquet with
scorer.splits, part-<n>.parquet otherwise): the same inputs and model give the same files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scorer import faults, storage
from scorer.errors import OutputError
from scorer.modelid import ModelId

MODEL_METADATA_KEY = b"scorer.model"
# In a part of a shortened partition directory (see partition_dir): the exact partition value.
PARTITION_VALUE_KEY = b"scorer.partition_value"


class PartWriter:
    """Writes scored tables into open part files; `commit()` closes and renames them all.

    Rows are streamed into an open Parquet writer (one row group per table written), so memory
    holds one chunk at a time. When the columns change (inputs of different formats or schemas),
    the open part is committed and a new one started. With partition_by, each distinct value
    gets its own hive-style subdirectory (col=value/) and its own open part. A resumed split passes
    the next part numbers; `parts` lists what this writer committed.
    """

    def __init__(self, out, model_id: ModelId | None = None, partition_by: str | None = None,
                 compression: str = "zstd", next_index: dict | None = None, name_prefix: str = ""):
        self.out = out if hasattr(out, "part_paths") else storage.open_storage(out)
        self.name_prefix = name_prefix  # scorer.splits: the split's id and "-"
        self.partition_by = partition_by
        self.compression = compression
        self.metadata = ({MODEL_METADATA_KEY: json.dumps(model_id.to_json(), sort_keys=True).encode()}
                         if model_id else {})
        self.parts: list[dict] = []  # committed by this writer: {"file", "rows"}
        self.next_index: dict[str, int] = dict(next_index or {})
        self._open: dict[str, _OpenPart] = {}  # partition dir -> the part being written

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.partition_by is None:
            self._write_to("", table)
            return
        self._check_partition_type(table)
        # Grouped by the value's text, not the value: NaN != NaN and -0.0 == 0.0 would lose or
        # duplicate rows, while every distinct text is exactly one partition.
        keys = partition_text(table.column(self.partition_by))
        for value in keys.unique().to_pylist():
            mask = pc.is_null(keys) if value is None else pc.equal(keys, value)
            subset = table.filter(mask).drop_columns([self.partition_by])
            part_dir = partition_dir(self.partition_by, value)
            exact = {PARTITION_VALUE_KEY: value.encode()} if is_shortened(part_dir) else {}
            self._write_to(part_dir, subset, exact)

    def _check_partition_type(self, table: pa.Table) -> None:
        """The first chunk's type was checked before the output was touched (scorer.pipeline);
        a later input (a Parquet file after another) may bring one that cannot name
        directories: the run stops before any of its rows is written."""
        column_type = table.schema.field(self.partition_by).type
        if can_name_directories(column_type):
            return
        kind = "list" if pa.types.is_list(column_type) else str(column_type)
        where = f"row {table.column('row_id')[0].as_py()}" if "row_id" in table.column_names else "a later input"
        raise OutputError(f"--partition-by {self.partition_by}: {where} has it as a {kind} column, "
                          "which cannot name directories; none of that table's rows were written "
                          "(partition by a column that is a string, number, boolean, date or time "
                          "in every input)")

    def _write_to(self, part_dir: str, table: pa.Table, metadata: dict | None = None) -> None:
        if part_dir in self._open and not self._open[part_dir].writer.schema.remove_metadata().equals(
                table.schema.remove_metadata()):
            self._commit(part_dir)  # inputs with other columns: a part file holds one schema
        part = self._open.get(part_dir) or self._start(part_dir, table.schema, metadata or {})
        try:
            part.writer.write_table(table)
        except OSError as e:
            raise OutputError(f"{self.out}/{part.written}: write failed ({e.strerror or e})") from None
        part.rows += table.num_rows
        faults.point("write")  # a part file half written

    def _start(self, part_dir: str, schema: pa.Schema, metadata: dict) -> "_OpenPart":
        index = self.next_index.get(part_dir, 0)
        self.next_index[part_dir] = index + 1
        name = f"part-{self.name_prefix}{index:05d}.parquet"
        final = f"{part_dir}/{name}" if part_dir else name
        written, final = self.out.part_paths(final)
        schema = schema.with_metadata({**(schema.metadata or {}), **self.metadata, **metadata})
        try:
            sink = self.out.open_output(written)
            writer = pq.ParquetWriter(sink, schema, compression=self.compression)
        except OSError as e:
            raise OutputError(f"{self.out}/{written}: cannot create ({e.strerror or e})") from None
        part = _OpenPart(writer, sink, written, final)
        self._open[part_dir] = part
        return part

    def _commit(self, part_dir: str) -> None:
        part = self._open.pop(part_dir)
        try:
            part.close()
            self.out.commit_part(part.written, part.final)
        except OSError as e:
            self.out.delete(part.written)
            raise OutputError(f"{self.out}/{part.final}: could not complete the part file "
                              f"({e.strerror or e})") from None
        self.parts.append({"file": part.final, "rows": part.rows})

    def commit(self) -> None:
        """Commit every open part (in a fixed order, so names stay deterministic), durably: the
        directories they were renamed into are fsync'd before anything may list them."""
        for part_dir in sorted(self._open):
            self._commit(part_dir)
        try:
            self.out.sync()
        except OSError as e:
            raise OutputError(f"{self.out}: could not make the part files durable ({e.strerror or e})") from None

    def abort(self) -> None:
        """Drop open parts; committed parts stay (the run has no _SUCCESS)."""
        for part in self._open.values():
            try:
                part.close()
            except OSError:
                pass
            finally:
                self.out.delete(part.written)
        self._open.clear()


@dataclass
class _OpenPart:
    writer: pq.ParquetWriter
    sink: object  # a local path, or an object store output stream the writer does not own
    written: str  # where it is being written (a temporary name, locally)
    final: str
    rows: int = 0

    def close(self) -> None:
        self.writer.close()
        if not isinstance(self.sink, str):
            self.sink.close()  # completes the upload


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def partition_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A partition column's values as the text that names their directory: Arrow's cast to
    string (1.5 -> "1.5", NaN -> "nan", -0.0 -> "-0", true -> "true"), null staying null."""
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def can_name_directories(column_type: pa.DataType) -> bool:
    """Whether partition_text() can name a directory after every value of this type."""
    if pa.types.is_binary(column_type) or pa.types.is_large_binary(column_type) \
            or pa.types.is_fixed_size_binary(column_type):
        return False  # bytes need not be text
    try:
        pc.cast(pa.array([], column_type), pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return False
    return True


MAX_NAME_BYTES = 255  # a file name's limit on ext4, XFS, btrfs, ZFS, NTFS and APFS
_HASH_HEX = 32  # 128 bits of the value's sha256: distinct values never share a directory
_SHORTENED = "!"  # never in quote(..., safe="") output, so it marks shortened names only


def partition_dir(column: str, value: str | None) -> str:
    """`column=value`, both percent-encoded (RFC 3986: every byte but letters, digits and -._~),
    as pyarrow, Spark and Hive decode them; null is Hive's __HIVE_DEFAULT_PARTITION__ and the
    empty string an empty value (`column=`), which pyarrow reads back as "". A name over 255
    bytes is shortened to a prefix of the encoded value, "!" and a hash of the whole value."""
    text = HIVE_NULL if value is None else quote(value, safe="")
    name = quote(column, safe="")
    if name.startswith((".", "_")):  # readers skip such directories: escape the first character
        name = f"%{ord(name[0]):02X}{name[1:]}"
    if len(name) + 1 + len(text) <= MAX_NAME_BYTES:  # quote() output is ASCII: chars = bytes
        return f"{name}={text}"
    room = MAX_NAME_BYTES - len(name) - 2 - _HASH_HEX
    if room < 0:
        raise OutputError(f"--partition-by {column}: its encoded name is {len(name)} bytes, too "
                          f"long to name directories after long values (at most {MAX_NAME_BYTES} bytes)")
    digest = hashlib.sha256(value.encode()).hexdigest()[:_HASH_HEX]
    return f"{name}={_encoded_prefix(value, room)}{_SHORTENED}{digest}"


def _encoded_prefix(value: str, size: int) -> str:
    """The encoding of value's longest prefix that fits in size bytes, cut between characters:
    readers must still decode it into UTF-8."""
    prefix = ""
    for char in value:
        encoded = quote(char, safe="")
        if len(prefix) + len(encoded) > size:
            break
        prefix += encoded
    return prefix


def is_shortened(part_dir: str) -> bool:
    """Whether partition_dir() shortened this name (its parts then hold PARTITION_VALUE_KEY)."""
    return _SHORTENED in part_dir
