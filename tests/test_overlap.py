"""An output or dead-letter location that is, contains or lies inside an input is refused (exit 2)
before anything is read, written or removed: --overwrite once deleted the inputs."""

import pytest
from click.testing import CliRunner

from scorer import overlap
from scorer.cli import main
from scorer.errors import UsageError


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("inputs, output, dead_letter, follow_dir, message", [
    (["in.txt"], "in.txt", None, None, "the output in.txt is the input in.txt"),
    (["junk/in.txt"], "junk", None, None, "the output junk contains the input junk/in.txt"),
    (["junk/in.txt"], "junk/", None, None, "the output junk/ contains the input junk/in.txt"),
    (["data"], "data/scored", None, None, "the output data/scored lies inside the input data"),
    (["a.txt"], "out", "a.txt", None, "--dead-letter a.txt is the input a.txt"),
    (["data/x.txt"], "out", "data", None, "--dead-letter data contains the input data/x.txt"),
    ([], "landing/scored", None, "landing", "the output landing/scored lies inside the followed directory landing"),
    ([], ".", None, "landing", "the output . contains the followed directory landing"),
    (["s3://b/in/"], "s3://b/in/scored", None, None, "the output s3://b/in/scored lies inside the input s3://b/in/"),
    (["s3://b/in/x.jsonl"], "s3://b/in?region=eu", None, None,
     "the output s3://b/in?region=eu contains the input s3://b/in/x.jsonl"),
    (["gs://b/in"], "gcs://b/in", None, None, "the output gcs://b/in is the input gs://b/in"),
])
def test_an_overlapping_location_is_refused(tmp_path, monkeypatch, inputs, output, dead_letter,
                                            follow_dir, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="^" + message.replace("?", r"\?") + ": scorer would read its own "
                       "output, and --overwrite would delete the input; write somewhere apart"):
        overlap.check_apart(inputs, output, dead_letter, follow_dir)


@pytest.mark.parametrize("inputs, output", [
    (["data/in.txt"], "data2"), (["data"], "data-scored"), (["-"], "."), (["s3://b/in"], "s3://b/in2"),
    (["s3://b/in"], "/tmp/in"), (["in.txt"], "s3://b/in.txt"),
])
def test_apart_locations_pass(tmp_path, monkeypatch, inputs, output):
    monkeypatch.chdir(tmp_path)
    overlap.check_apart(inputs, output, "dead")


def test_a_symlink_does_not_hide_an_overlap(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(UsageError, match="lies inside the input"):
        overlap.check_apart([str(tmp_path / "data")], str(tmp_path / "alias" / "scored"))


def junk_folder(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "in.txt").write_text("a fine film\na dull film\n")
    (junk / "important.csv").write_text("id,text\n1,keep me\n")
    return junk


def assert_untouched(junk):
    assert sorted(p.name for p in junk.iterdir()) == ["important.csv", "in.txt"]
    assert (junk / "important.csv").read_text() == "id,text\n1,keep me\n"


@pytest.mark.parametrize("args", [
    lambda j: [j / "in.txt", "-o", j, "--overwrite"],  # the report: it deleted both files
    lambda j: [j / "in.txt", "-o", j / "in.txt", "--overwrite"],
    lambda j: [f"{j}/*.txt", "-o", j],
    lambda j: [j, "-o", j / "scored", "--format", "text"],
    lambda j: [j / "in.txt", "-o", j.parent / "o", "--dead-letter", j, "--overwrite"],
    lambda j: ["--follow", j, "-o", j / "scored", "--once"],
], ids=["output holds the input", "output is the input", "glob match", "output inside an input "
        "directory", "dead letters hold the input", "output inside the followed directory"])
def test_the_cli_refuses_before_reading_or_removing_anything(tiny_model, tmp_path, args):
    junk = junk_folder(tmp_path)
    r = invoke("run", *args(junk), "--model", tiny_model)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "write somewhere apart" in lines[0]
    assert_untouched(junk)
    assert not (tmp_path / "o").exists()
