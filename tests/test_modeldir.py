"""scorer.modeldir: what a model directory must hold, how a reference finds one, and that a
changed file is refused (exit 4) before anything is scored."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from scorer import fileio, modeldir, modelspec, registry
from scorer.cli import main as scorer_main
from scorer.errors import ModelError


@pytest.fixture
def model(tiny_model, tmp_path):
    return shutil.copytree(tiny_model, tmp_path / "model")


def edit_spec(path, **changes):
    spec = json.loads((path / modelspec.SPEC_FILE).read_text())
    spec.update(changes)
    (path / modelspec.SPEC_FILE).write_text(json.dumps(spec))


@pytest.mark.parametrize("changes, message", [
    ({"max_length": True}, "'max_length' must be an integer, not bool"),
    ({"max_length": 1}, "'max_length' must be an integer from 2 to 8192, not 1"),
    ({"temperature": 0}, "'temperature' must be from 0.01 to 100, not 0"),
    ({"labels": ["a", ""]}, "'labels' must be a non-empty list of label names"),
    ({"problem_type": "regression"}, "'problem_type' must be one of"),
    ({"base": {"kind": "packaged"}}, "'base' of kind packaged needs 'id' as a string, not NoneType"),
    ({"base": {"kind": "url", "id": "x"}}, "'base.kind' must be packaged, hf_dir or config, not 'url'"),
    ({"weights_file": "../weights.safetensors"}, "must be a plain name inside the model directory"),
    ({"checksums": {"weights.safetensors": 1}}, "'checksums' must map file names to sha256 strings"),
    ({"format_version": "1"}, "'format_version' must be an integer, not str"),
    ({"windowed_temperature": 0}, "'windowed_temperature' must be from 0.01 to 100, not 0"),
    ({"windowed_temperature": "1"}, "'windowed_temperature' must be a number or null, not str"),
])
def test_a_bad_spec_is_refused_with_its_field_named(model, changes, message):
    edit_spec(model, **changes)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        modeldir.read(model, verify=False)


def test_a_spec_missing_its_required_fields_names_them(model):
    spec = json.loads((model / modelspec.SPEC_FILE).read_text())
    del spec["name"], spec["base"]
    (model / modelspec.SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="missing name, base$"):
        modeldir.read(model)


def test_a_weights_file_symlinked_out_of_the_directory_is_refused(model, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(model / "weights.safetensors", outside)
    (model / "weights.safetensors").symlink_to(outside)
    with pytest.raises(ModelError, match="a symlink out of the model directory"):
        modeldir.read(model, verify=False)


def test_write_spec_records_checksums_that_read_verifies(model):
    md = modeldir.read(model)
    checksum_before = md.id.checksum
    md.spec.training = {"note": "rewritten"}
    (model / "tokenizer.json").write_text((model / "tokenizer.json").read_text() + " ")
    with pytest.raises(ModelError, match=r"tokenizer.json: sha256 [0-9a-f]{12}\.\.\. does not match"):
        modeldir.read(model)
    modelspec.write_spec(model, md.spec)  # records the new file's checksum
    again = modeldir.read(model)
    assert again.spec.checksums["tokenizer.json"] == fileio.sha256_file(model / "tokenizer.json")
    assert again.spec.training == {"note": "rewritten"}
    assert again.id.checksum != checksum_before  # the id follows the spec file


def test_a_spec_is_written_with_the_lowest_format_that_holds_it(model):
    """A windowed temperature needs format 2 (an older scorer refuses it, where it would score
    windowed texts with the wrong calibration); a spec without one stays 1, readable by it."""
    md = modeldir.read(model)
    modelspec.write_spec(model, md.spec)
    assert json.loads((model / modelspec.SPEC_FILE).read_text())["format_version"] == 1
    md.spec.windowed_temperature = 0.8
    modelspec.write_spec(model, md.spec)
    assert json.loads((model / modelspec.SPEC_FILE).read_text())["format_version"] == 2
    assert modeldir.read(model).spec.windowed_temperature == 0.8


def test_a_changed_weights_file_stops_scorer_with_exit_4_and_one_line(model, tmp_path):
    data = bytearray((model / "weights.safetensors").read_bytes())
    data[-1] ^= 1
    (model / "weights.safetensors").write_bytes(bytes(data))
    sample = tmp_path / "in.txt"
    sample.write_text("a fine film\n")
    for args in (["info", "--model", str(model)],
                 ["run", str(sample), "-o", str(tmp_path / "out"), "--model", str(model)]):
        r = CliRunner().invoke(scorer_main, args)
        assert r.exit_code == 4, r.output
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "weights.safetensors: sha256" in errors[0], r.stderr
        assert "does not match the recorded" in errors[0]
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_references_resolve_to_directories(model, tmp_path):
    assert modeldir.resolve(None) == modeldir.resolve("default") == modeldir.DEFAULT_MODEL_DIR
    assert modeldir.resolve(model) == model
    reg = tmp_path / "reg"
    first, second = registry.register(reg, model), registry.register(reg, model)
    registry.set_alias(reg, registry.CHAMPION, first)
    assert modeldir.resolve(reg) == reg / str(first)  # a bare registry: its champion
    assert modeldir.resolve(f"{reg}@{second}") == reg / str(second)
    assert modeldir.read(f"{reg}@champion").path == reg / str(first)
    with pytest.raises(ModelError, match="model directory not found"):
        modeldir.resolve(tmp_path / "nope")


def test_the_calibration_rule_a_text_of_several_windows_takes_the_windowed_temperature():
    """modelspec.Temperatures: the one place scoring (scorer.api) and the job (jobs.metrics) read."""
    windows = np.array([1, 2, 5])
    assert modelspec.Temperatures(2.0, 0.5).per_text(windows).tolist() == [2.0, 0.5, 0.5]
    assert modelspec.Temperatures(2.0, None).per_text(windows).tolist() == [2.0, 2.0, 2.0]
    spec = modelspec.ModelSpec(name="m", labels=["a", "b"], base={}, temperature=1.5, windowed_temperature=0.8)
    assert spec.temperatures == modelspec.Temperatures(1.5, 0.8)
