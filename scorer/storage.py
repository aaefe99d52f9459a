"""Where output goes: a local directory, or a prefix in an object store (s3://, gs://, hdfs://
through pyarrow.fs), behind the few operations the commit protocol and the sink need.

Local: a part file is written under a temporary name, fsync'd and renamed, and sync() then fsyncs
every directory those renames (and new partition directories) changed, so a checkpoint that
lists a part is never more durable than the part; small files are replaced atomically by rename;
the output directory is locked with flock.
Object stores have no rename and no locks, but an object appears whole or not at all when its
upload completes: parts are written under their final names, and what makes them part of the
output is the checkpoint (progress.json) and, at the end, _manifest.json and _SUCCESS. A resumed
run deletes every part object its checkpoint does not list. There is no lock: give each run
its own output prefix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from scorer import fileio
from scorer.errors import InputError, OutputError

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "viewfs://", "abfs://", "abfss://")


def is_remote(location: str) -> bool:
    return str(location).startswith(REMOTE_SCHEMES)


def filesystem(uri: str, error=InputError):
    """(pyarrow FileSystem, path inside it) for a remote URI."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises several types for bad URIs / missing credentials
        raise error(f"{uri}: cannot open this location ({str(e).strip().splitlines()[0]})") from None


class LocalStorage:
    remote = False

    def __init__(self, root: Path):
        self.root = Path(root)
        self._unsynced: set[Path] = set()  # directories with entries not yet fsync'd

    def __str__(self) -> str:
        return str(self.root)

    def path(self, rel: str = "") -> Path:
        return self.root / rel if rel else self.root

    def exists(self, rel: str = "") -> bool:
        return self.path(rel).exists()

    def is_file_or_not_dir(self) -> bool:
        return self.root.exists() and not self.root.is_dir()

    def makedirs(self, rel: str = "") -> None:
        self.path(rel).mkdir(parents=True, exist_ok=True)

    def files(self) -> list[str]:
        """Every file under the root, as paths relative to it."""
        if not self.root.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if not p.is_dir())

    def read_text(self, rel: str) -> str:
        return self.path(rel).read_text(encoding="utf-8")

    def write_text(self, rel: str, text: str) -> None:
        """Replace the file all at once, durably (temp file, fsync, rename, fsync directory)."""
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_atomic(path, text)

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def delete_dir(self, rel: str) -> None:
        shutil.rmtree(self.path(rel), ignore_errors=True)

    def remove_root_if_empty(self) -> None:
        try:
            self.root.rmdir()
        except OSError:
            pass

    def part_paths(self, rel: str) -> tuple[str, str]:
        """(where to write a part, where it ends up)."""
        directory, name = os.path.split(rel)
        return os.path.join(directory, f".{name}.tmp"), rel

    def open_output(self, rel: str):
        directory = self.path(rel).parent
        created = []
        while not directory.exists():
            created.append(directory)
            directory = directory.parent
        self.path(rel).parent.mkdir(parents=True, exist_ok=True)
        self._unsynced.update(d.parent for d in created)  # a new partition directory's entry
        return str(self.path(rel))

    def parquet_rows(self, rel: str) -> int:
        return pq.read_metadata(self.path(rel)).num_rows

    def size(self, rel: str) -> int:
        return self.path(rel).stat().st_size

    def move(self, src: str, dst: str) -> None:
        """Rename a committed file to another name under the root (scorer.splits: an attempt's
        part to its final name); sync() makes it durable."""
        target = self.path(dst)
        directory = target.parent
        while not directory.exists():
            self._unsynced.add(directory.parent)  # a new partition directory's entry
            directory = directory.parent
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(src), target)
        self._unsynced.update({target.parent, self.path(src).parent})

    def commit_part(self, written: str, final: str) -> None:
        with open(self.path(written), "rb+") as f:
            os.fsync(f.fileno())  # the rename must not outlive the data on a power cut
        os.replace(self.path(written), self.path(final))
        self._unsynced.add(self.path(final).parent)

    def sync(self) -> None:
        """fsync every directory whose entries changed since the last sync (renames, mkdirs)."""
        for directory in sorted(self._unsynced, key=lambda d: len(d.parts), reverse=True):
            fileio.fsync_dir(directory)
        self._unsynced.clear()

    def sync_root(self) -> None:
        """fsync the directory holding the root, which this run may just have created."""
        fileio.fsync_dir(self.root.parent)


class ArrowStorage:
    """An object store prefix through a pyarrow FileSystem."""

    remote = True

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.base = filesystem(self.uri, error=OutputError)
        self.base = self.base.rstrip("/")

    def __str__(self) -> str:
        return self.uri

    def path(self, rel: str = "") -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _info(self, rel: str = ""):
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(rel))
        return None if info.type == pafs.FileType.NotFound else info

    def exists(self, rel: str = "") -> bool:
        return self._info(rel) is not None

    def is_file_or_not_dir(self) -> bool:
        import pyarrow.fs as pafs

        info = self._info()
        return info is not None and info.type == pafs.FileType.File

    def makedirs(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def files(self) -> list[str]:
        import pyarrow.fs as pafs

        if not self.exists():
            return []
        selector = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        return sorted(i.path[len(self.base) + 1:] for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File)

    def read_text(self, rel: str) -> str:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read().decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        with self.fs.open_output_stream(self.path(rel)) as f:  # one PUT: whole or nothing
            f.write(text.encode("utf-8"))

    def delete(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.delete_file(self.path(rel))

    def delete_dir(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.delete_dir(self.path(rel))

    def remove_root_if_empty(self) -> None:
        pass  # a prefix with no objects does not exist

    def part_paths(self, rel: str) -> tuple[str, str]:
        return rel, rel  # no rename: the checkpoint, not the name, makes a part committed

    def open_output(self, rel: str):
        return self.fs.open_output_stream(self.path(rel))

    def parquet_rows(self, rel: str) -> int:
        return pq.read_metadata(self.path(rel), filesystem=self.fs).num_rows

    def size(self, rel: str) -> int:
        return self.fs.get_file_info(self.path(rel)).size

    def move(self, src: str, dst: str) -> None:
        """An object store's move is a copy then a delete: the object appears whole or not at
        all under its new name, as a completed upload does."""
        self.fs.move(self.path(src), self.path(dst))

    def commit_part(self, written: str, final: str) -> None:
        pass  # the upload completed when the writer closed

    def sync(self) -> None:
        pass  # a completed upload is durable

    def sync_root(self) -> None:
        pass  # a prefix is not a directory


def open_storage(location: str | Path):
    return ArrowStorage(str(location)) if is_remote(str(location)) else LocalStorage(Path(location))

