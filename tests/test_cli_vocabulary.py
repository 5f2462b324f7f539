"""Issue 25, item 5: one flag vocabulary across commands. Every command's ``--help`` has
a description and two examples; ``--framework`` and ``--frameworks`` are one option
everywhere; ``--batch`` everywhere, an old spelling still working with a one-line
notice; one default variant; ``--to`` offers only formats that can be written; a bad
option is one line and exit 2."""

from __future__ import annotations

import argparse

import pytest

from conformance import arguments, spec
from conformance.__main__ import _parse, _parser
from conformance.formats.registry import FORMATS

from .conftest import cli

COMMANDS = _parser()[1]
# Each command with what it requires, so that only the option under test is wrong.
REQUIRED = {
    "check": [],
    "port": ["a.pth", "b.npz", "--variant", "googlenet"],
    "init": ["b.npz", "--variant", "googlenet"],
    "train": ["--framework", "torch", "--variant", "inception_mnist"],
    "bench": [],
    "spec": [],
    "pitfalls": [],
    "diff": ["a.pth", "--variant", "googlenet"],
    "page": ["site"],
    "verify": ["tests/user_nets.py:d2l_softmax"],
}


def help_faults(parser: argparse.ArgumentParser, name: str) -> list[str]:
    """What a command's ``--help`` lacks: a description, or two examples of the command."""
    faults = []
    if not (parser.description or "").strip():
        faults.append("no description")
    text = parser.format_help()
    examples = text.split("\nexamples:\n", 1)[1] if "\nexamples:\n" in text else ""
    if sum(line.startswith(f"  python -m conformance {name} ") for line in examples.splitlines()) < 2:
        faults.append("fewer than two examples")
    if any(len(line) > 100 for line in f"{parser.description}\n{parser.epilog}".splitlines()):
        faults.append("wider than 100 columns")  # the width a terminal's output fits (issue 25)
    return faults


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings]


def test_every_command_is_listed_here():
    assert sorted(COMMANDS) == sorted(REQUIRED)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_help_has_a_description_and_two_examples(name):
    assert help_faults(COMMANDS[name], name) == []


def test_a_help_without_them_is_caught():
    """The negative control: a parser as argparse makes it by default fails the check."""
    bare = argparse.ArgumentParser(prog="python -m conformance bare")
    assert help_faults(bare, "bare") == ["no description", "fewer than two examples"]
    one = argparse.ArgumentParser(
        description="d",
        epilog="examples:\n  python -m conformance bare --x 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    assert help_faults(one, "bare") == ["fewer than two examples"]
    wide = argparse.ArgumentParser(
        description="d",
        epilog=f"examples:\n  python -m conformance bare --x 1\n  python -m conformance bare {'--y 2 ' * 20}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    assert help_faults(wide, "bare") == ["wider than 100 columns"]


def test_help_as_a_user_sees_it():
    r = cli("train", "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert "Train a variant in one framework" in r.stdout
    assert "examples:\n  # " in r.stdout and "  python -m conformance train --framework" in r.stdout


def _old_spellings() -> list[tuple[str, str, str]]:
    """(command, old spelling, new spelling) of every option kept under an old name."""
    return [
        (name, old, next(o for o in action.option_strings if o not in action.old))
        for name, parser in COMMANDS.items()
        for action in options(parser)
        if isinstance(action, arguments.Renamed)
        for old in action.old
    ]


def test_the_old_spellings_are_the_ones_the_issue_names():
    assert _old_spellings() == [("train", "--batch-size", "--batch")]


@pytest.mark.parametrize(("name", "old", "new"), _old_spellings())
def test_an_old_spelling_still_works_and_says_the_new_one(capsys, name, old, new):
    by_new = _parse([name, *REQUIRED[name], new, "16"])
    assert capsys.readouterr().err == ""  # the negative control: the new spelling says nothing
    by_old = _parse([name, *REQUIRED[name], old, "16"])
    assert vars(by_old) == vars(by_new)
    err = capsys.readouterr().err
    assert err == f"notice: {old} is now {new}; the old spelling still works\n"


def test_the_notice_comes_before_the_command_s_own_answer():
    """In a fresh process: the notice, then the refusal of a batch the machine cannot
    hold, named by its new spelling; nothing else."""
    r = cli("train", "--framework", "torch", "--variant", "googlenet", "--batch-size", "1000000")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert lines[0] == "notice: --batch-size is now --batch; the old spelling still works"
    assert lines[1].startswith("error: --batch 1,000,000: googlenet's training")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_one_spelling_per_concept(name):
    """--batch, never --batch-size, but as an old spelling; --framework and --frameworks
    always one option."""
    for action in options(COMMANDS[name]):
        current = [o for o in action.option_strings if o not in getattr(action, "old", ())]
        assert "--batch-size" not in current, (name, action.option_strings)
        if {"--framework", "--frameworks"} & set(action.option_strings):
            assert {"--framework", "--frameworks"} <= set(action.option_strings), (name, action.option_strings)


@pytest.mark.parametrize("name", ["check", "train", "bench", "diff"])
def test_framework_and_frameworks_mean_the_same(name):
    by_one = _parse([name, *REQUIRED[name], "--framework", "torch"])
    by_many = _parse([name, *REQUIRED[name], "--frameworks", "torch"])
    assert vars(by_one) == vars(by_many)


def test_diff_takes_one_framework_or_two(tmp_path, capsys):
    """One: A and B both run in it (what --framework meant); two: A runs in each (what
    --frameworks meant); three is refused in one line, before anything is read."""
    from conformance.__main__ import main

    assert main(["diff", str(tmp_path / "a.pth"), "--variant", "googlenet", "--framework", "torch,keras,mxnet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--frameworks: expected one framework (A and B run in it) or two" in err


def test_one_default_variant_in_every_command_that_takes_one():
    defaults = {
        name: action.default
        for name, parser in COMMANDS.items()
        for action in options(parser)
        if action.dest == "variant" and action.default in spec.VARIANTS
    }
    assert set(defaults) == {"spec", "bench", "page"}
    assert set(defaults.values()) == {arguments.DEFAULT_VARIANT}
    for name in defaults:  # and the help says the rule
        assert arguments.VARIANT_DEFAULT_HELP in " ".join(COMMANDS[name].format_help().split())


@pytest.mark.parametrize("name", ["port", "init"])
def test_to_offers_only_the_formats_that_can_be_written(name):
    (to,) = [a for a in options(COMMANDS[name]) if "--to" in a.option_strings]
    assert to.choices == [fmt for fmt, entry in FORMATS.items() if entry.writable]
    assert not {"caffe", "tf-checkpoint"} & set(to.choices)
    assert {"caffe", "tf-checkpoint"} <= {fmt for fmt, entry in FORMATS.items() if not entry.writable}


@pytest.mark.parametrize("fmt", ["caffe", "tf-checkpoint"])
def test_to_a_read_only_format_is_refused_by_the_parser_with_the_list(fmt):
    r = cli("port", "a.pth", "b.caffemodel", "--variant", "googlenet", "--to", fmt)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert f"argument --to: invalid choice: '{fmt}' (choose from 'safetensors', 'npz', 'torch'" in r.stderr
    assert "'gluon-export', 'keras-builtin')" in r.stderr
    # the negative control: reading one is still offered
    assert _parse(["port", "a.caffemodel", "b.pth", "--variant", "googlenet", "--from", fmt]).src_format == fmt


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_bad_option_is_one_line_and_exit_2(name):
    r = cli(name, *REQUIRED[name], "--no-such-option")
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout)
    assert r.stderr == (
        f"python -m conformance {name}: error: unrecognized arguments: --no-such-option "
        f"(see python -m conformance {name} --help)\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["spec", "--batch", "2"], "python -m conformance spec: error: unrecognized arguments: --batch"),
        (["check", "--seed", "-1"], "argument --seed: expected a non-negative integer, got -1"),
        (["port", "a.pth"], "the following arguments are required: DST"),
        (["frobnicate"], "python -m conformance: error: argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_every_refusal_of_the_parser_is_one_line(argv, message):
    r = cli(*argv)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
