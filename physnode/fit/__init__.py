"""Fitting hybrid models to trajectories: the :class:`Fitter` and its pieces."""

from physnode.fit.fitter import MODELS, SCHEDULES, Fitter

__all__ = ["MODELS", "SCHEDULES", "Fitter"]
