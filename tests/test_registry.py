"""scorer.registry: numbered versions and aliases; a reference resolves to a version; one
promotion at a time; and writes are durable: a version or alias that a reader saw survives a
power cut, because every file and directory a rename made visible was fsync'd first."""

import json
import os
import threading
import time
from pathlib import Path

import pytest

from scorer import fileio, registry
from scorer.errors import ModelError


def test_register_and_set_alias_fsync_what_their_renames_publish(tiny_model, tmp_path, monkeypatch):
    synced_dirs: list[Path] = []
    synced_files: list[str] = []
    fsync_dir = fileio.fsync_dir
    monkeypatch.setattr(fileio, "fsync_dir", lambda p: (synced_dirs.append(Path(p)), fsync_dir(p)))
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced_files.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                  fsync(fd)))
    reg = tmp_path / "reg"
    version = registry.register(reg, tiny_model)
    assert reg in synced_dirs  # the rename that made reg/1 visible
    copied = {p.name for p in (reg / str(version)).iterdir()}
    assert copied <= {Path(f).name for f in synced_files}  # each file's data before the rename
    synced_dirs.clear()
    registry.set_alias(reg, "champion", version)
    assert reg / registry.ALIASES in synced_dirs and reg in synced_dirs  # the alias, _aliases/



@pytest.fixture
def reg(tiny_model, tmp_path):
    """A registry holding versions 1 and 2 of the tiny model, champion 1."""
    path = tmp_path / "reg"
    assert [registry.register(path, tiny_model) for _ in range(2)] == [1, 2]
    registry.set_alias(path, registry.CHAMPION, 1, reason="first")
    return path


def test_versions_aliases_and_references(reg):
    assert registry.versions(reg) == [1, 2] and registry.is_registry(reg)
    assert registry.set_alias(reg, "canary", 2) is None  # a new alias: nothing before
    assert registry.set_alias(reg, registry.CHAMPION, 2, reason="better") == 1
    assert registry.aliases(reg) == {"canary": 2, "champion": 2}
    record = json.loads((reg / registry.ALIASES / "champion").read_text())
    assert (record["version"], record["previous"], record["reason"]) == (2, 1, "better")
    assert registry.resolve(str(reg)) == reg / "2"  # a bare registry: its champion
    assert registry.resolve(f"{reg}@1") == reg / "1"
    assert registry.resolve(f"{reg}@canary") == reg / "2"
    assert registry.resolve(str(reg / "1")) == reg / "1"  # a version is a model directory


def test_a_version_in_the_making_is_not_a_version(reg):
    (reg / "3").mkdir()  # a copy without its spec yet (register renames only finished ones)
    (reg / ".incoming-x").mkdir()
    assert registry.versions(reg) == [1, 2]
    assert not registry.is_registry(reg / "1")


@pytest.mark.parametrize("ref, message", [
    ("@nope", r"no alias 'nope' \(aliases: champion\)"),
    ("@7", "no version 7"),
])
def test_unknown_references_are_model_errors(reg, ref, message):
    with pytest.raises(ModelError, match=message):
        registry.resolve(f"{reg}{ref}")


def test_bad_alias_names_versions_and_files_are_refused(reg, tmp_path):
    for name in ("", "a/b", ".hidden", "_x", "3"):
        with pytest.raises(ModelError, match="invalid alias name"):
            registry.set_alias(reg, name, 1)
    with pytest.raises(ModelError, match="no version 9"):
        registry.set_alias(reg, "canary", 9)
    (reg / registry.ALIASES / "broken").write_text("{")
    with pytest.raises(ModelError, match="broken: not a valid alias file"):
        registry.read_alias(reg, "broken")
    with pytest.raises(ModelError, match="model registry not found"):
        registry.resolve(f"{tmp_path / 'none'}@champion")


def test_a_registry_without_a_champion_asks_for_a_version(tiny_model, tmp_path):
    reg = tmp_path / "reg"
    registry.register(reg, tiny_model)
    with pytest.raises(ModelError, match="a registry with no champion; name a version with @N"):
        registry.resolve(str(reg))


def test_concurrent_registrations_take_distinct_numbers(tiny_model, tmp_path):
    reg = tmp_path / "reg"
    numbers: list[int] = []
    threads = [threading.Thread(target=lambda: numbers.append(registry.register(reg, tiny_model)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == [1, 2, 3, 4] == registry.versions(reg)
    assert not [p for p in reg.iterdir() if p.name.startswith(".incoming-")]


def test_the_promotion_lock_admits_one_promotion_at_a_time(reg):
    order: list[str] = []
    holding = threading.Event()

    def first():
        with registry.promotion_lock(reg):
            order.append("first in")
            holding.set()
            time.sleep(0.5)
            order.append("first out")

    def second():
        holding.wait()
        with registry.promotion_lock(reg):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order == ["first in", "first out", "second in"]


def test_no_promotion_lock_without_versions(tmp_path):
    with pytest.raises(ModelError, match="no registered versions"):
        with registry.promotion_lock(tmp_path / "empty"):
            pass
