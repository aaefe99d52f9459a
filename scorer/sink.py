"""Sink stage: scored tables -> Parquet part files, then manifest.json and _SUCCESS.

A part file is written under a temporary name and renamed into place when complete, so a
reader never sees half a file; the manifest and then _SUCCESS are written last, and only when
the whole run succeeded. Part names are deterministic (part-00000.parquet, ...): the same
inputs and model give the same files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scorer.errors import OutputError

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
MODEL_METADATA_KEY = b"scorer.model"


def prepare_output(path: Path, overwrite: bool) -> None:
    """Create the output directory, refusing a non-empty one unless overwrite."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise OutputError(f"{path}: output directory is not empty; pass --overwrite to replace it")
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".scorer-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{path}: cannot write there ({e.strerror})") from None


class PartWriter:
    """Writes scored tables as part files of at most rows_per_file rows each.

    Rows are streamed into an open Parquet writer (one row group per table written), so memory
    holds one chunk at a time whatever rows_per_file is. When the columns change (inputs of
    different formats or schemas), the open part is committed and a new one started. With
    partition_by, each distinct value gets its own hive-style subdirectory (col=value/) and its
    own open part.
    """

    def __init__(self, out: Path, rows_per_file: int, model_id: dict,
                 partition_by: str | None = None, compression: str = "zstd"):
        self.out = out
        self.rows_per_file = rows_per_file
        self.partition_by = partition_by
        self.compression = compression
        self.metadata = {MODEL_METADATA_KEY: json.dumps(model_id, sort_keys=True).encode()}
        self.parts: list[dict] = []  # committed: {"file", "rows"}
        self._open: dict[str, tuple] = {}  # partition dir -> (writer, tmp path, final path, rows)
        self._next_index: dict[str, int] = {}

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.partition_by is None:
            self._write_to("", table)
            return
        keys = table.column(self.partition_by)
        for value in keys.unique().to_pylist():
            mask = pc.is_null(keys) if value is None else pc.equal(keys, value)
            subset = table.filter(mask).drop_columns([self.partition_by])
            self._write_to(_partition_dir(self.partition_by, value), subset)

    def _write_to(self, part_dir: str, table: pa.Table) -> None:
        if part_dir in self._open and not self._open[part_dir][0].schema.remove_metadata().equals(
                table.schema.remove_metadata()):
            self._commit(part_dir)  # inputs with other columns: a part file holds one schema
        start = 0
        while start < table.num_rows:
            writer, tmp, final, rows = self._open.get(part_dir) or self._start(part_dir, table.schema)
            take = min(self.rows_per_file - rows, table.num_rows - start)
            try:
                writer.write_table(table.slice(start, take))
            except OSError as e:
                raise OutputError(f"{tmp}: write failed ({e.strerror or e})") from None
            self._open[part_dir] = (writer, tmp, final, rows + take)
            start += take
            if rows + take >= self.rows_per_file:
                self._commit(part_dir)

    def _start(self, part_dir: str, schema: pa.Schema):
        index = self._next_index.get(part_dir, 0)
        self._next_index[part_dir] = index + 1
        directory = self.out / part_dir if part_dir else self.out
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"part-{index:05d}.parquet"
        tmp = directory / f".part-{index:05d}.parquet.tmp"
        schema = schema.with_metadata({**(schema.metadata or {}), **self.metadata})
        writer = pq.ParquetWriter(tmp, schema, compression=self.compression)
        entry = (writer, tmp, final, 0)
        self._open[part_dir] = entry
        return entry

    def _commit(self, part_dir: str) -> None:
        writer, tmp, final, rows = self._open.pop(part_dir)
        try:
            writer.close()
            os.replace(tmp, final)
        except OSError as e:
            raise OutputError(f"{final}: could not complete the part file ({e.strerror or e})") from None
        self.parts.append({"file": str(final.relative_to(self.out)), "rows": rows})

    def close(self) -> None:
        """Commit every open part (in a fixed order, so names stay deterministic)."""
        for part_dir in sorted(self._open):
            self._commit(part_dir)

    def abort(self) -> None:
        """Drop open parts' temporary files; committed parts stay (the run has no _SUCCESS)."""
        for writer, tmp, _, _ in self._open.values():
            try:
                writer.close()
            finally:
                tmp.unlink(missing_ok=True)
        self._open.clear()


def _partition_dir(column: str, value) -> str:
    # Hive convention: a null value is __HIVE_DEFAULT_PARTITION__; values are URL-escaped.
    text = "__HIVE_DEFAULT_PARTITION__" if value is None else quote(str(value), safe="")
    return f"{column}={text}"


def finish(out: Path, manifest: dict) -> None:
    """Write the manifest, then _SUCCESS: their presence says the run completed."""
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    (out / SUCCESS).write_bytes(b"")
