"""The README and docs/ stay true: every command they show parses with the options it is given,
every repository path and link they cite exists, every `scorer run` option is documented, and
the Python API page's code runs and prints what the page says it prints."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import os
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")
# A path in this repository: a top-level directory of it, then anything a path holds.
REPO_PATH = re.compile(r"(?<![\w./$-])((?:scorer|jobs|tests|bench|sample_data|docs|\.ci)/[\w./*-]*)")
CLICK_COMMANDS = {"scorer": "scorer.cli", "jobs.finetune": "jobs.finetune",
                  "jobs.registry": "jobs.registry", "jobs.evaluate": "jobs.evaluate"}


def doc_text(path: Path) -> str:
    return path.read_text()


def code_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in languages]


def shell_lines(text: str) -> list[str]:
    """Command lines of the shell and cron blocks (continuations joined) and inline spans of
    scorer, job and bench commands."""
    lines = []
    for block in code_blocks(text, ("bash", "cron", "")):
        lines += block.replace("\\\n", " ").splitlines()
    prose = FENCE.sub("", text)
    lines += [s for s in INLINE.findall(prose)
              if s.startswith(("scorer ", "python -m jobs.", ".venv/bin/", "python bench/", "bench/"))]
    return lines


def commands(line: str) -> list[tuple[str, list[str]]]:
    """(program, arguments) of each scorer / jobs / bench command on a shell line."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose: not a command
        return []
    found, current = [], []
    for token in tokens + ["|"]:
        if token in ("|", "&&", ";", "||"):
            found += _program(current)
            current = []
        else:
            current.append(token)
    return found


def _program(tokens: list[str]) -> list[tuple[str, list[str]]]:
    for i, token in enumerate(tokens):
        if token == "scorer" or token.endswith("/scorer"):
            return [("scorer", tokens[i + 1:])]
        if token == "python" or token.endswith("/python"):
            rest = tokens[i + 1:]
            if rest[:1] == ["-m"] and len(rest) > 1 and rest[1].startswith("jobs."):
                return [(rest[1], rest[2:])]
            if rest and rest[0].startswith("bench/"):
                return [(rest[0], rest[1:])]
        if token.startswith("bench/") and token.endswith((".py", ".sh")) and i == 0:
            return [(token, tokens[1:])]
    return []


def documented_commands() -> list[tuple[Path, str, str, list[str]]]:
    out = []
    for doc in DOCS:
        for line in shell_lines(doc_text(doc)):
            out += [(doc, line, program, args) for program, args in commands(line)]
    return out


def argparse_parser(source: str) -> argparse.ArgumentParser | None:
    """A bench script's argparse parser rebuilt from its add_argument calls (names, nargs, types,
    literal choices), without importing the script (which imports TensorFlow)."""
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"]
    if not calls:
        return None
    parser = argparse.ArgumentParser(prog="bench", add_help=False)
    types = {"int": int, "float": float, "str": str}
    for call in calls:
        kwargs = {}
        for kw in call.keywords:
            if kw.arg == "type" and isinstance(kw.value, ast.Name):
                kwargs["type"] = types[kw.value.id]
            elif kw.arg in ("nargs", "action", "choices"):
                with contextlib.suppress(ValueError):
                    kwargs[kw.arg] = ast.literal_eval(kw.value)
        parser.add_argument(*[ast.literal_eval(a) for a in call.args], **kwargs)
    return parser


def option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def resolve(program: str, args: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """The click command a documented line runs, its path of subcommands, and its option flags."""
    command = importlib.import_module(CLICK_COMMANDS[program]).main
    path, flags = [], []
    for token in args:
        token = token.strip("[]")
        if isinstance(command, click.Group) and not flags and token in command.commands:
            command = command.commands[token]
            path.append(token)
        elif token.startswith("-") and token != "-" and not token.startswith("--xla"):
            flags.append(token.split("=")[0])
    return command, path, flags


def test_the_docs_show_commands():
    programs = {program for _, _, program, _ in documented_commands()}
    assert {"scorer", "jobs.finetune", "jobs.registry"} <= programs, programs


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_take_the_options_they_are_shown_with(doc):
    runner = CliRunner()
    for _, line, program, args in [c for c in documented_commands() if c[0] == doc]:
        if program.startswith("bench/"):
            script = REPO / program
            assert script.is_file(), f"{doc.name}: {line!r}: no {program}"
            source = script.read_text()
            for flag in (a.split("=")[0] for a in args if a.startswith("--")):
                assert f'"{flag}"' in source, f"{doc.name}: {line!r}: {program} has no {flag}"
            parser = argparse_parser(source) if program.endswith(".py") else None
            if parser is not None:  # the arguments parse as the script's parser parses them
                with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit) as ok:
                    parser.parse_args([a for a in args if a != "RUN"])
                    raise SystemExit(0)
                assert ok.value.code == 0, f"{doc.name}: {line!r}: {err.getvalue()}"
            continue
        assert program in CLICK_COMMANDS, f"{doc.name}: {line!r}: unknown program {program}"
        command, path, flags = resolve(program, args)
        unknown = [f for f in flags if f not in option_names(command)]
        assert not unknown, f"{doc.name}: {line!r}: {program} {' '.join(path)} has no {unknown}"
        root = importlib.import_module(CLICK_COMMANDS[program]).main
        result = runner.invoke(root, [*path, "--help"])
        assert result.exit_code == 0, f"{doc.name}: {line!r}: --help: {result.output}"


def test_every_scorer_run_option_is_documented():
    from scorer.cli import main

    text = "".join(doc_text(d) for d in DOCS)
    undocumented = [p.opts[0] for p in main.commands["run"].params
                    if isinstance(p, click.Option) and f"`{p.opts[-1]}" not in text
                    and f"`{p.opts[0]}" not in text]
    assert not undocumented, f"scorer run options no page documents: {undocumented}"


def test_every_command_has_a_page():
    from scorer.cli import main

    text = "".join(doc_text(d) for d in DOCS)
    assert [name for name in main.commands if f"scorer {name}" not in text] == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_repository_paths_exist(doc):
    missing = []
    for cited in REPO_PATH.findall(doc_text(doc)):
        cited = cited.rstrip(".")
        if "*" in cited or "<" in cited:
            found = list(REPO.glob(cited.split("<")[0].rstrip("/") + ("" if "*" in cited else "*")))
            if not found:
                missing.append(cited)
        elif not (REPO / cited).exists():
            missing.append(cited)
    assert not missing, f"{doc.name} cites paths that do not exist: {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", doc_text(path))
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_between_pages_resolve(doc):
    broken = []
    for target in LINK.findall(FENCE.sub("", doc_text(doc))):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(target)
        elif anchor and anchor not in anchors(path):
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


def test_docs_are_linked_from_the_readme():
    readme = doc_text(REPO / "README.md")
    assert [d.name for d in DOCS[1:] if f"(docs/{d.name})" not in readme] == []


def test_help_examples_cite_real_files():
    from scorer.cli import main

    runner = CliRunner()
    helps = [runner.invoke(main, ["--help"]).output]
    helps += [runner.invoke(main, [name, "--help"]).output for name in main.commands]
    cited = {p for text in helps for p in re.findall(r"sample_data/[\w./-]+", text)}
    assert [p for p in cited if not (REPO / p).exists()] == []


def expected_output(block: str) -> list[str]:
    """The `# ...` comment lines that follow a print(...) line: what the page says it prints."""
    out, after_print = [], False
    for line in block.splitlines():
        if line.lstrip().startswith("print("):
            after_print = True
        elif after_print and line.startswith("# "):
            out.append(line[2:])
        else:
            after_print = False
    return out


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def test_python_api_page_runs_as_shown(tmp_path, monkeypatch, default_scorer):
    """Each python block of docs/python-api.md, in order, in one namespace, from a directory
    holding sample_data/; its printed lines are what the page shows. Scorer.load() of the
    default model is the session's (the suite loads it once)."""
    from scorer import Scorer

    real_load = Scorer.load.__func__
    monkeypatch.setattr(Scorer, "load", classmethod(
        lambda cls, model=None, **kw: default_scorer if model is None and not kw
        else real_load(cls, model, **kw)))
    (tmp_path / "sample_data").symlink_to(REPO / "sample_data")
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(doc_text(REPO / "docs" / "python-api.md"), ("python",))
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, "docs/python-api.md", "exec"), namespace)
        actual, expected = printed.getvalue().splitlines(), expected_output(block)
        assert len(actual) == len(expected), (block, actual)
        for want, got in zip(expected, actual):
            assert matches(want, got), f"the page says {want!r}, the code printed {got!r}"
    assert os.path.exists("scored/_SUCCESS")
