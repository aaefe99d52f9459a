"""scorer.fileio: a JSON object read from a file, or one clear line saying why not."""

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
