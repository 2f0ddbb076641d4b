"""Every failure raises its typed exception with a message that says what to change."""

from __future__ import annotations

import re

import pytest
import torch

from physnode import (
    DtypeMismatchError,
    InvalidInputError,
    InvalidTimeGridError,
    MaxStepsReachedError,
    NonFiniteError,
    PhysnodeError,
    ShapeMismatchError,
    StepSizeTooSmallError,
    UnknownOptionError,
    odeint,
)

Y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
T = torch.tensor([0.0, 1.0], dtype=torch.float64)


def rot(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], -1)


@pytest.mark.parametrize(
    "t, fragment",
    [
        ([0.0], "at least 2"),
        ([[0.0, 1.0]], "1-D"),
        ([0.0, 1.0, 1.0], "strictly"),
        ([0.0, 2.0, 1.0], "t[1]=2.0 and t[2]=1.0"),
        ([0.0, float("nan")], "NaN"),
        ([0.0, float("inf")], "NaN or inf"),
    ],
)
def test_invalid_time_grid(t, fragment):
    with pytest.raises(InvalidTimeGridError, match=re.escape(fragment)):
        odeint(rot, Y0, t)


def test_bad_arguments_name_the_fix():
    with pytest.raises(InvalidInputError, match="choose one of"):
        odeint(rot, Y0, T, method="rk45")
    with pytest.raises(InvalidInputError, match="choose one of"):
        odeint(rot, Y0, T, grad="magic")
    with pytest.raises(UnknownOptionError, match="valid options are"):
        odeint(rot, Y0, T, options={"step_sise": 0.1})
    with pytest.raises(InvalidInputError, match="positive"):
        odeint(rot, Y0, T, method="rk4", options={"step_size": -0.1})
    with pytest.raises(InvalidInputError, match="both be zero"):
        odeint(rot, Y0, T, rtol=0, atol=0)
    with pytest.raises(InvalidInputError, match=">= 0"):
        odeint(rot, Y0, T, rtol=-1e-3)
    with pytest.raises(DtypeMismatchError, match=r"float32 or torch\.float64"):
        odeint(rot, torch.tensor([1, 0]), T)
    with pytest.raises(InvalidInputError, match="shape"):
        odeint(rot, torch.tensor(1.0), T)
    with pytest.raises(InvalidInputError, match="callable"):
        odeint(42, Y0, T)


def test_function_output_checked():
    with pytest.raises(ShapeMismatchError, match=r"returned shape \(3,\)"):
        odeint(lambda t, y: torch.zeros(3, dtype=y.dtype), Y0, T)
    with pytest.raises(DtypeMismatchError, match="float32"):
        odeint(lambda t, y: y.float(), Y0, T)
    with pytest.raises(DtypeMismatchError, match="must return a tensor"):
        odeint(lambda t, y: 1.0, Y0, T)


def test_max_steps():
    with pytest.raises(MaxStepsReachedError, match="max_steps=5") as info:
        odeint(rot, Y0, torch.tensor([0.0, 100.0]), rtol=1e-10, options={"max_steps": 5})
    assert 0 <= info.value.t < 100


def test_step_below_floor_near_singularity():
    """y' = y² blows up at t = 1: the step size collapses there and the error says where."""
    with pytest.raises((StepSizeTooSmallError, NonFiniteError)) as info:
        odeint(lambda t, y: y**2, torch.tensor([1.0], dtype=torch.float64),
               torch.tensor([0.0, 2.0], dtype=torch.float64))  # fmt: skip
    # reported at the blow-up time t = 1; the numerical solution (rtol 1e-7) reaches its own
    # singularity within ~1e-6 of the exact one, so 1e-2 is a generous window
    assert abs(info.value.t - 1.0) < 1e-2
    assert "t=" in str(info.value)


def test_min_step_option():
    with pytest.raises(StepSizeTooSmallError, match="min_step"):
        odeint(rot, Y0, torch.tensor([0.0, 10.0]), rtol=1e-12, atol=1e-12,
               options={"min_step": 0.5, "first_step": 0.6})  # fmt: skip


def test_non_finite_derivative():
    with pytest.raises(NonFiniteError, match="not finite"):
        odeint(lambda t, y: y / 0.0 * 0.0, Y0, T)
    with pytest.raises(NonFiniteError, match="y0"):
        odeint(rot, torch.tensor([float("nan"), 0.0]), T)


def test_non_finite_fixed_step():
    with pytest.raises(NonFiniteError, match="step_size"):
        odeint(lambda t, y: 50 * y**2, torch.tensor([1.0], dtype=torch.float64),
               torch.tensor([0.0, 1.0], dtype=torch.float64), method="euler",
               options={"step_size": 0.1})  # fmt: skip


def test_float32_tolerance_refused():
    """rtol far below float32 resolution would make the steps shrink without end (a crawl, not
    an error): refused up front, and the message says what to use instead."""
    with pytest.raises(InvalidInputError, match="float32"):
        odeint(rot, Y0.float(), torch.tensor([0.0, 50.0]), rtol=1e-14, atol=1e-14)


def test_all_errors_share_one_base():
    for cls in (InvalidInputError, MaxStepsReachedError, NonFiniteError, DtypeMismatchError):
        assert issubclass(cls, PhysnodeError)


def test_collision_reports_softening_hint():
    """Two bodies released at rest fall onto each other in finite time: the step collapses at
    the collision and the error names the fix (softening)."""
    from physnode.systems import NBody

    system = NBody([1.0, 1.0], dim=2)
    y0 = torch.tensor([-0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    with pytest.raises((StepSizeTooSmallError, NonFiniteError), match="softening"):
        odeint(system, y0, torch.tensor([0.0, 5.0], dtype=torch.float64), rtol=1e-10)


@pytest.mark.parametrize(
    ("method", "grad", "options", "match"),
    [
        ("dopri5", "aca", {"step_size": 0.1}, "fixed-step methods only"),
        ("rk4", "aca", {"step_size": 0.1, "controller": "pi"}, "adaptive methods only"),
        ("rk4", "aca", {"step_size": 0.1, "max_step": 0.5}, "adaptive methods only"),
        ("euler", "aca", {"step_size": 0.1, "first_step": 0.01}, "adaptive methods only"),
        ("rk4", "aca", None, "takes fixed steps"),
        ("dopri5", "aca", {"seminorm": True}, "grad='adjoint' only"),
        ("dopri5", "backprop", {"adjoint_rtol": 1e-6}, "grad='adjoint' only"),
        ("dopri5", "adjoint", {"replay": "batched"}, "grad='aca' only"),
    ],
)
def test_options_that_would_be_ignored_are_refused(method, grad, options, match):
    """A setting that is accepted must act: an option for another kind of method is refused."""
    with pytest.raises(InvalidInputError, match=match):
        odeint(rot, Y0, T, method=method, grad=grad, options=options)
