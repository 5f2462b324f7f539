"""The vocabulary every command's parser shares: argument types that say what they
expected, the default variant, old spellings that still work, and a ``--help`` that has a
description and examples. A bad option is one line and exit 2, as bad input is everywhere."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from . import spec
from .spec import MAX_CLASSES

# The variant a command runs when none is named, in every command that takes one:
# torchvision's GoogLeNet, whose weights most users hold.
DEFAULT_VARIANT = "googlenet_bn"
VARIANT_DEFAULT_HELP = f"default: {DEFAULT_VARIANT}, torchvision's, as in every command"

TRANSFORM_HELP = "the variant's input transform: torchvision's (googlenet_bn), Caffe's BGR 0-255 (googlenet_lrn)"
# --framework and --frameworks are one option in every command: the framework or
# frameworks it runs in, comma-separated; each command says how many it takes.
FRAMEWORK_FLAGS = ("--frameworks", "--framework")
HELP_WIDTH = 88  # a description fits a terminal of 100 columns


class Parser(argparse.ArgumentParser):
    """A parser whose refusal is one line (the command, the option, what was expected),
    not argparse's usage block: the usage is one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def typed(convert: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``convert``, then ``ok``; otherwise say what was expected."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive = typed(int, lambda v: v >= 1, "a positive integer")
non_negative = typed(int, lambda v: v >= 0, "a non-negative integer")
classes = typed(int, lambda v: 1 <= v <= MAX_CLASSES, f"an integer from 1 to {MAX_CLASSES:,}")


class Renamed(argparse.Action):
    """Stores the value as ``store`` does; an old spelling (``old``) still works and says
    the new one on stderr, in one line."""

    def __init__(self, option_strings: list[str], dest: str, old: Iterable[str] = (), **kwargs: Any) -> None:
        self.old = tuple(old)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string in self.old:
            new = next(o for o in self.option_strings if o not in self.old)
            print(f"notice: {option_string} is now {new}; the old spelling still works", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def command(
    sub: Any, name: str, summary: str, description: str, examples: Iterable[tuple[str, str]]
) -> argparse.ArgumentParser:
    """A command's parser on ``sub``: ``summary`` in the list of commands; its ``--help``
    opens with ``description`` (paragraphs wrapped to fit a terminal) and ends with
    ``examples``, each (what it does, the arguments after the command's name)."""
    text = "\n\n".join(
        textwrap.fill(paragraph, HELP_WIDTH, break_on_hyphens=False) for paragraph in description.split("\n\n")
    )
    shown = [f"  # {what}\n  python -m conformance {name} {arguments}" for what, arguments in examples]
    return sub.add_parser(
        name,
        help=summary,
        description=text,
        epilog="examples:\n" + "\n".join(shown),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def variant(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--variant`` with the default every command shares."""
    parser.add_argument(
        "--variant", default=DEFAULT_VARIANT, choices=list(spec.VARIANTS), help=f"{help_text} ({VARIANT_DEFAULT_HELP})"
    )
