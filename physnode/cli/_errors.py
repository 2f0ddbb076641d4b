"""Turn expected failures into one readable line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import enum
import functools
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperCommand

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


class Command(TyperCommand):
    """A typer command on which an invalid choice (``--method magic``, an unknown SYSTEM) is one
    ``error:`` line and exit code 1, like every other value the library rejects.

    typer itself would print a usage box and exit 2; other usage errors (a missing argument, an
    unknown option, a non-number) stay typer's. Register commands with ``cls=Command``.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:
            param = exc.param
            if param is None or param.name not in _choice_parameters(self.callback):
                raise
            reason = exc.message.removeprefix("Value error, ")
            raise fail(f"{param.opts[0]}: {reason}") from None


def _choice_parameters(callback: Callable[..., Any] | None) -> set[str]:
    """Names of ``callback``'s parameters annotated with an enum (or an optional enum)."""
    if callback is None:
        return set()
    names = set()
    for name, hint in typing.get_type_hints(callback).items():
        members = typing.get_args(hint) or (hint,)  # `Choice | None` -> (Choice, None)
        if any(_is_enum(t) for t in members):
            names.add(name)
    return names


def _is_enum(hint: Any) -> bool:
    # get_origin: `list[str]` passes isinstance(..., type) on Python 3.10 but is no class.
    return (
        typing.get_origin(hint) is None and isinstance(hint, type) and issubclass(hint, enum.Enum)
    )
