"""The `movr` command tree, and every `movr …` command line that README.md and docs/ tell a user to run.

A renamed or dropped command must fail here, not in a user's terminal: every command answers `--help`,
and every command line quoted in the docs names commands and options that exist. A documented line
with no placeholder in it is parsed exactly as the shell would hand it to `movr` (values and required
options included); a usage line with placeholders (`--users N`, `--url cockroachdb://...`, `[--json]`)
is checked for its command path, its option names and its positional arguments.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from movr.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A value a usage line leaves to the reader: N, FILE, URL, <run-dir>, cockroachdb://..., USER@HOST:...
_PLACEHOLDER = re.compile(r"^([A-Z][A-Z0-9_-]*|<[^>]+>|.*\.\.\..*|.*[A-Z]{2,}@.*)$")
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(main))


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(("movr", *p)))
def test_every_command_answers_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_the_command_tree_has_what_the_road_to_production_needs() -> None:
    paths = {" ".join(p) for p, _ in COMMANDS}
    for expected in ("serve", "db render", "db init", "load", "demo", "lab up", "lab down", "bench journey"):
        assert expected in paths


# --- command lines in the docs -----------------------------------------------------------------------


@dataclass(frozen=True)
class DocLine:
    source: str  # file:line, for the failure message
    text: str  # the command line as the docs quote it
    fenced: bool  # in a code block (a line to type), not an inline mention


def doc_lines() -> list[DocLine]:
    found: list[DocLine] = []
    for doc in DOCS:
        fenced = False
        pending = ""
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            where = f"{doc.relative_to(ROOT)}:{number}"
            if fenced or line.startswith("    "):
                text = pending + line.strip()
                if text.endswith("\\"):
                    pending = text[:-1] + " "
                    continue
                pending = ""
                if re.search(r"(^|\s)(\S*/)?movr [a-z]", text):
                    found.append(DocLine(where, text, True))
                continue
            for span in re.findall(r"`([^`]*)`", line):
                if re.match(r"^(\S+=\S+ )*movr [a-z]", span):
                    found.append(DocLine(where, span, False))
    return found


def commands_of(text: str) -> list[list[str]]:
    """The `movr` invocations one documented line stands for, each as argv after `movr`."""
    text = re.sub(r"\s#.*$", "", text).strip()  # a trailing shell comment
    text = _first_alternatives(text)
    commands: list[list[str]] = []
    for part in re.split(r" \| (?=(?:\S+/)?movr )", text):
        words = shlex.split(part)
        while words and _ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if not words or not words[0].endswith("movr"):
            continue
        argv = words[1:]
        # `movr bench actions | journey | links`: one command per alternative of the last word.
        if "|" in argv:
            head, *alternatives = " ".join(argv).split(" | ")
            first = head.split()
            commands.append(first)
            commands.extend([*first[:-1], *alternative.split()] for alternative in alternatives)
        else:
            commands.append(argv)
    return [[word.split("|")[0] if "|" in word else word for word in argv] for argv in commands]


def _first_alternatives(text: str) -> str:
    """Open every `[...]` group (options shown as optional), keeping its first alternative; a group that
    holds no option (`[all | <region>]`, `[same spec options]`) is left out."""
    group = re.compile(r"\[([^\[\]]*)\]")
    while match := group.search(text):
        inner = match.group(1).split(" | ")[0].strip()
        text = text[: match.start()] + (inner if inner.startswith("-") else "") + text[match.end() :]
    return text


def resolve(argv: list[str]) -> tuple[click.Command, list[str], str]:
    """The command an argv names and the words left for it; fails naming the unknown subcommand."""
    command: click.Command = main
    name = "movr"
    words = list(argv)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        sub = command.commands.get(words[0])
        assert sub is not None, f"{name} has no command {words[0]!r}"
        command, name = sub, f"{name} {words.pop(0)}"
    return command, words, name


def check_shape(command: click.Command, words: list[str], name: str) -> None:
    """Option names exist; an option that takes a value has one; positionals are not too many."""
    options = {opt: param for param in command.params if isinstance(param, click.Option) for opt in param.opts}
    options |= {
        opt: param for param in command.params if isinstance(param, click.Option) for opt in param.secondary_opts
    }
    arguments = [param for param in command.params if isinstance(param, click.Argument)]
    positionals = 0
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word in ("-h", "--help"):
            continue
        if word.startswith("-"):
            option_name = word.split("=", 1)[0]
            assert option_name in options, f"{name} has no option {option_name}"
            param = options[option_name]
            if not (param.is_flag or param.count) and "=" not in word:
                assert index < len(words), f"{name} {option_name} needs a value"
                index += 1
            continue
        positionals += 1
    if not any(argument.nargs == -1 for argument in arguments):
        assert positionals <= sum(argument.nargs for argument in arguments), f"{name}: too many arguments in {words}"


def parse_fully(argv: list[str]) -> None:
    """Parse as `movr` would, through every group, without running anything."""
    command: click.Command = main
    ctx = command.make_context("movr", list(argv))
    while isinstance(command, click.Group):
        # Click 8 keeps the subcommand's words in protected_args (deprecated in 8.2, merged into args in 9).
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
        rest = [*protected, *ctx.args]
        if not rest:
            return
        _, sub, sub_args = command.resolve_command(ctx, rest)
        assert sub is not None
        command = sub
        ctx = command.make_context(sub.name, sub_args, parent=ctx)


DOC_LINES = doc_lines()


def test_the_docs_quote_movr_commands() -> None:
    quoted = {" ".join(resolve(argv)[2].split()[1:2]) for line in DOC_LINES for argv in commands_of(line.text)}
    assert {"serve", "db", "lab", "bench", "load", "demo"} <= quoted


@pytest.mark.parametrize("line", DOC_LINES, ids=lambda line: line.source)
def test_every_documented_command_exists(line: DocLine) -> None:
    argv_list = commands_of(line.text)
    assert argv_list, f"{line.source}: no movr command found in {line.text!r}"
    for argv in argv_list:
        command, words, name = resolve(argv)
        check_shape(command, words, name)
        if line.fenced and not any(_PLACEHOLDER.match(word) for word in argv):
            try:
                parse_fully(argv)
            except click.ClickException as error:
                pytest.fail(f"{line.source}: `movr {' '.join(argv)}` does not parse: {error.format_message()}")


def test_the_checker_catches_a_dropped_command_and_option() -> None:
    with pytest.raises(AssertionError, match="no command 'serv'"):
        resolve(["serv", "--port", "1"])
    command, words, name = resolve(["serve", "--prot", "1"])
    with pytest.raises(AssertionError, match="no option --prot"):
        check_shape(command, words, name)
    assert commands_of("movr bench actions | journey | links") == [
        ["bench", "actions"],
        ["bench", "journey"],
        ["bench", "links"],
    ]
    assert commands_of("movr lab status [--json] | movr lab placement") == [
        ["lab", "status", "--json"],
        ["lab", "placement"],
    ]
