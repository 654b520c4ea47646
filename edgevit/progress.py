"""Progress bars and step messages on stderr; bars stay quiet when not on a terminal.

Messages carry user text (paths, model and class names), so they are printed as
``rich.text.Text``: a file called ``[/red]`` must print as such, never as console markup
(rich raises on an unmatched closing tag, turning any message into a traceback).
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True, highlight=False)


def say(label: str, style: str, message: str, **kwargs) -> None:
    """``label`` in ``style`` then ``message`` as plain text (never parsed as markup)."""
    console.print(Text.assemble((label, style), " ", message), **kwargs)


def step(message: str) -> None:
    say(">", "bold", message)


def warn(message: str) -> None:
    say("warning:", "yellow", message)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    bar = Progress(
        # markup=False: the description may be a path or a class name
        TextColumn("  {task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, disable=not sys.stderr.isatty(), transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
