"""One source of truth: the gradient registry, the options' declared constraints, the model
protocol and odeint's parameters (declared once, on solve)."""

from __future__ import annotations

import inspect

import pytest
import torch

from physnode import InvalidInputError, odeint, solve
from physnode.constraints import Constraint
from physnode.solver import GRAD_METHODS
from physnode.solver.gradients import base, get_gradient
from physnode.solver.gradients.base import GradientMethod, register_gradient
from physnode.solver.options import SolverOptions
from physnode.solver.vector_field import is_autonomous

Y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
T = torch.tensor([0.0, 1.0], dtype=torch.float64)


def rot(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], -1)


def test_grad_methods_come_from_the_registry():
    assert GRAD_METHODS == ("aca", "adjoint", "backprop", "naive", "forward")
    assert GRAD_METHODS == base.gradient_names()
    for name in GRAD_METHODS:
        method = get_gradient(name)
        assert isinstance(method, GradientMethod) and method.name == name


def test_unknown_gradient_lists_the_choices():
    with pytest.raises(InvalidInputError, match=r"choose one of \['aca', 'adjoint'"):
        get_gradient("magic")
    with pytest.raises(InvalidInputError, match="choose one of"):
        get_gradient(["aca"])  # unhashable: still the typed error


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_a_registered_method_is_dispatched_by_solve(scratch_registry):
    calls = []

    @register_gradient("spy")
    class Spy(GradientMethod):
        def apply(self, problem, t, y0, params):
            calls.append((len(problem.t_out), tuple(y0.shape), len(params)))
            return get_gradient("backprop").apply(problem, t, y0, params)

    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ys = odeint(lambda t, y: w * rot(t, y), Y0, T, grad="spy", params=[w])
    ys.sum().backward()
    assert calls == [(2, (2,), 1)] and w.grad is not None
    with pytest.raises(InvalidInputError, match="registered already"):
        register_gradient("spy")(Spy)


def test_options_constraints_declared_once():
    constraints = SolverOptions.CONSTRAINTS
    assert all(isinstance(c, Constraint) for c in constraints.values())
    for name, value in [("controller", "pid"), ("max_steps", 0), ("seminorm", 1),
                        ("first_step", 0.0), ("adjoint_atol", -1.0)]:  # fmt: skip
        with pytest.raises(InvalidInputError, match=rf"^options\['{name}'\] must be "):
            SolverOptions.from_dict({name: value})
    assert SolverOptions.from_dict({"max_step": float("inf")}).max_step == float("inf")
    with pytest.raises(InvalidInputError, match="dfactor < 1 < ifactor"):
        SolverOptions.from_dict({"ifactor": 0.5})


def test_autonomous_is_read_in_one_place():
    class Model:
        autonomous = True

        def __call__(self, t, y):
            return y

    assert is_autonomous(Model()) and not is_autonomous(rot)


def test_odeint_has_solves_parameters():
    got = inspect.signature(odeint)
    want = inspect.signature(solve)
    assert list(got.parameters.values()) == list(want.parameters.values())
    assert got.return_annotation in (torch.Tensor, "torch.Tensor")
    assert torch.equal(odeint(rot, Y0, T, 1e-7, 1e-9, "dopri5", "aca", None, None),
                       solve(rot, Y0, T).ys)  # fmt: skip
