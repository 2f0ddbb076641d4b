"""``physnode`` with test seams taken from the environment, for tests that launch it in
subprocesses (``torchrun ... tests/distributed/launch.py fit a.h5 b.h5``).

``PHYSNODE_TEST_LBFGS_STEPS=n``: fits use ``Fitter(lbfgs_steps=n)`` (short fits; the CLI has
no such option). ``PHYSNODE_TEST_DIE_RANK=r``: the rank ``r`` (torchrun's ``RANK``) dies with
``os._exit(1)`` at the first epoch of its first fit: a process killed mid-run, with no chance
to clean up. Both act on shared fits (``--shared``) too. ``PHYSNODE_TEST_STOP_AFTER=n``: a
shared fit's rank 0 asks to stop at its ``n + 1``-th poll (as Ctrl-C there would).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import physnode.cli.fit as cli_fit
import physnode.cli.shared as cli_shared
from physnode.cli.app import main
from physnode.fit import Fitter
from physnode.fit.shared import fit_shared


class DyingFitter(Fitter):
    """A Fitter whose process dies at its first poll of ``should_stop`` (after one epoch)."""

    def fit(self, data: Any, **kwargs: Any) -> Fitter:
        def die() -> bool:
            os._exit(1)

        return super().fit(data, **{**kwargs, "should_stop": die})


def fitter_class() -> Any:
    """The Fitter the CLI builds, as the environment asks."""
    cls: Any = Fitter
    if os.environ.get("PHYSNODE_TEST_DIE_RANK") == os.environ.get("RANK", "0"):
        cls = DyingFitter
    steps = os.environ.get("PHYSNODE_TEST_LBFGS_STEPS")
    return cls if steps is None else functools.partial(cls, lbfgs_steps=int(steps))


def shared_fit(data: Any, settings: dict, *args: Any, **kwargs: Any) -> Any:
    """:func:`fit_shared` with the environment's seams: fewer L-BFGS steps, a dying rank."""
    steps = os.environ.get("PHYSNODE_TEST_LBFGS_STEPS")
    if steps is not None:
        settings = {**settings, "lbfgs_steps": int(steps)}
    if os.environ.get("PHYSNODE_TEST_DIE_RANK") == os.environ.get("RANK", "0"):

        def die() -> bool:
            os._exit(1)

        kwargs["should_stop"] = die
    after = os.environ.get("PHYSNODE_TEST_STOP_AFTER")
    if after is not None and os.environ.get("RANK", "0") == "0":
        kwargs["should_stop"] = stop_after(int(after))
    return fit_shared(data, settings, *args, **kwargs)


def stop_after(polls: int) -> Any:
    """A ``should_stop`` that says stop from its ``polls + 1``-th poll on."""
    seen = [0]

    def stop() -> bool:
        seen[0] += 1
        return seen[0] > polls

    return stop


if __name__ == "__main__":
    cli_fit._fitter_class = fitter_class
    cli_shared._fit_shared_seam = lambda: shared_fit
    main()
