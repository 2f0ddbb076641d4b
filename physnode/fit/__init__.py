"""Fitting hybrid models to trajectories: the :class:`Fitter` and its pieces."""

from physnode.fit.fitter import Fitter

__all__ = ["Fitter"]
