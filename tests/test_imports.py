"""scorer/'s import graph is a one-way stack (tests/import_graph.py): no cycle among its modules,
counting imports made inside functions, and no function-local import of a project module except
a heavy optional dependency deferred on purpose, marked `# deferred: why`."""

from scorer import version
from tests import import_graph


def test_scorer_has_no_import_cycle():
    assert import_graph.read().cycles() == []


def test_project_modules_are_imported_at_module_level_unless_deferred_on_purpose():
    graph = import_graph.read()
    unmarked = [f"{i.module}:{i.line} -> {i.target}" for i in graph.local_imports() if not i.deferred]
    assert unmarked == []
    assert [(i.module, i.target) for i in graph.local_imports()] == [("scorer.cli", "scorer.ray_engine")]


def test_the_model_layer_is_a_stack():
    """Leaf helpers import nothing of the model layer; the model format knows nothing of Hugging
    Face; hf/ reads checkpoints below the Keras model and never imports it (export, the way out,
    sits above it)."""
    edges = import_graph.read().edges()
    assert edges["scorer.fileio"] <= {"scorer.errors"}
    assert edges["scorer.heads"] == set() and edges["scorer.version"] == set()
    assert not any(m.startswith("scorer.hf") for m in edges["scorer.modelspec"])
    below_keras = ("scorer.hf.checkpoint", "scorer.hf.convert", "scorer.hf.deberta",
                   "scorer.hf.tensors", "scorer.hf.spec")
    for module in below_keras:
        assert not edges[module] & {"scorer.classifier", "scorer.backbone", "scorer.modeldir"}, module
    assert "scorer" not in edges["scorer.runs"]  # __version__ comes from scorer.version
    assert version.__version__


def test_the_graph_reader_finds_cycles_and_function_local_imports(tmp_path):
    package = tmp_path / "scorer"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from scorer import b\n")
    (package / "b.py").write_text("def f():\n    from scorer.a import x\n")
    (package / "c.py").write_text("def f():\n    import scorer.b  # deferred: a test\n")
    graph = import_graph.read(package)
    assert graph.cycles() == [["scorer.a", "scorer.b"]]
    assert [(i.module, i.target, i.deferred) for i in graph.local_imports()] == [
        ("scorer.b", "scorer.a", False), ("scorer.c", "scorer.b", True)]
