"""scorer.fileio: a JSON object read from a file (or one clear line saying why not), sha256,
atomic writes and UTC timestamps."""

from __future__ import annotations

import pytest

from scorer import fileio
from scorer.errors import InputError, ModelError


def test_reads_a_json_object(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert fileio.read_object(path, ModelError) == {"a": [1, 2]}


@pytest.mark.parametrize("content, message", [
    (None, "{path} is missing"),
    (b"{oops", "{path}: not readable JSON (Expecting property name enclosed in double quotes: "
               "line 1 column 2 (char 1))"),
    (b"\xff\xfe{}", "{path}: not readable JSON ("),
    (b"[1, 2]", "{path}: expected a JSON object"),
])
def test_why_a_file_is_not_a_json_object_is_one_line_of_the_callers_error(tmp_path, content, message):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_bytes(content)
    for error in (ModelError, InputError):  # the caller's kind of error, so its exit code
        with pytest.raises(error) as raised:
            fileio.read_object(path, error)
        assert str(raised.value).startswith(message.format(path=path))
        assert "\n" not in str(raised.value)


def test_sha256_file(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert fileio.sha256_file(tmp_path / "x") == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_write_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    path.write_text("old")
    synced = []
    fsync_dir = fileio.fsync_dir
    monkeypatch.setattr(fileio, "fsync_dir", lambda p: (synced.append(p), fsync_dir(p)))
    fileio.write_atomic(path, "new", mode=0o644)
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"] and synced == [tmp_path]


def test_write_atomic_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    import os

    path = tmp_path / "f.json"
    path.write_text("old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        fileio.write_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_utc_timestamp():
    assert fileio.utc_timestamp(0) == "1970-01-01T00:00:00Z"
    assert fileio.utc_timestamp().endswith("Z") and len(fileio.utc_timestamp()) == 20
