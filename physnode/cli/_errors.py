"""Turn expected failures into one readable line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from physnode.errors import PhysnodeError, StepSizeTooSmallError

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` in red on stderr; return the :class:`typer.Exit` to raise."""
    err_console.print(f"[bold red]error:[/] {_one_line(message)}", markup=True)
    return typer.Exit(code=code)


def _one_line(message: str) -> str:
    return " ".join(str(message).split()).replace("[", r"\[")


def handle_errors(func: F) -> F:
    """Decorator for a command: PhysnodeError / OSError -> one line, exit 1; Ctrl-C -> exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StepSizeTooSmallError as exc:
            raise fail(
                f"{exc} (close encounter? try a small softening, e.g. --param softening=1e-3, "
                "or looser --rtol/--atol)"
            ) from None
        except PhysnodeError as exc:
            raise fail(str(exc)) from None
        except FileNotFoundError as exc:
            raise fail(f"{exc.filename or exc}: no such file") from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}") from None
        except KeyboardInterrupt:
            raise fail("interrupted; no output was written", code=130) from None

    return wrapper  # type: ignore[return-value]
