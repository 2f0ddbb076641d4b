"""A rich progress bar on stderr, only when stderr is a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.progress import Progress

from physnode.cli._errors import err_console


@contextlib.contextmanager
def progress_bar(*columns: Any) -> Iterator[Progress | None]:
    """A transient bar of ``columns`` on a terminal; None otherwise, so that piped or captured
    output stays clean."""
    if not err_console.is_terminal:
        yield None
        return
    with Progress(*columns, console=err_console, transient=True) as bar:
        yield bar
