"""Less common uses that used to break quietly: closures over computed tensors, inputs changed
in place before backward, double backward. Each is supported or refused with a typed error."""

from __future__ import annotations

import math

import pytest
import torch

from physnode import odeint
from physnode.errors import DoubleBackwardError, HiddenParameterError, ModifiedInputError

T = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
Y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
# rtol 1e-10 on a smooth decay: the solves' gradients agree with the closed forms to ~1e-9
# relative; 1e-7 leaves two orders for the step control's error.
CLOSED_FORM = 1e-7


def decay_gradient(k: float) -> float:
    """d/dk of sum_i sum_t y(t) for dy/dt = -k² y: y = y0 exp(-k² t)."""
    return sum(-2 * k * float(ti) * float(Y0.sum()) * math.exp(-(k**2) * float(ti)) for ti in T)


@pytest.mark.parametrize("grad", ["aca", "adjoint", "forward"])
def test_closure_over_a_computed_tensor_is_refused_by_function_methods(grad: str) -> None:
    k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    k2 = k**2
    with pytest.raises(HiddenParameterError, match="params="):
        odeint(lambda t, y: -k2 * y, Y0, T, grad=grad)


@pytest.mark.parametrize("grad", ["aca", "adjoint", "backprop", "naive", "forward"])
def test_a_computed_tensor_passed_in_params_gets_its_gradient(grad: str) -> None:
    k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    k2 = k**2
    ys = odeint(lambda t, y: -k2 * y, Y0, T, grad=grad, params=[k2], rtol=1e-10, atol=1e-12)
    ys.sum().backward()
    assert float(k.grad) == pytest.approx(decay_gradient(2.0), rel=CLOSED_FORM)


@pytest.mark.parametrize("grad", ["backprop", "naive"])
def test_autograd_methods_follow_closures(grad: str) -> None:
    k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    k2 = k**2  # neither y0 nor any declared tensor requires grad: only the closure does
    ys = odeint(lambda t, y: -k2 * y, Y0, T, grad=grad, rtol=1e-10, atol=1e-12)
    ys.sum().backward()
    assert float(k.grad) == pytest.approx(decay_gradient(2.0), rel=CLOSED_FORM)


def test_closure_over_y0_itself_is_refused() -> None:
    # the dependence of f on y0 through the closure is one ACA's replay cannot see
    y0 = Y0.clone().requires_grad_()
    with pytest.raises(HiddenParameterError):
        odeint(lambda t, y: y0 - y, y0, T, grad="aca")


def test_declared_module_parameters_are_not_hidden() -> None:
    lin = torch.nn.Linear(2, 2, dtype=torch.float64)
    ys = odeint(lambda t, y: lin(y), Y0, T, grad="aca", params=list(lin.parameters()))
    ys.sum().backward()  # no HiddenParameterError: every leaf is declared
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2, dtype=torch.float64)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lin(y)


@pytest.mark.parametrize("grad", ["aca", "adjoint", "forward"])
def test_parameter_changed_before_backward_is_detected(grad: str) -> None:
    model = Linear()
    ys = odeint(model, Y0, T, grad=grad)
    with torch.no_grad():
        model.lin.weight.add_(0.1)
    with pytest.raises(ModifiedInputError, match="parameter #0"):
        ys.sum().backward()


@pytest.mark.parametrize("grad", ["aca", "adjoint", "forward"])
def test_y0_changed_before_backward_is_detected(grad: str) -> None:
    y0 = Y0.clone().requires_grad_()
    start = y0 * 1.0
    ys = odeint(Linear(), start, T, grad=grad)
    with torch.no_grad():
        start.add_(0.1)
    with pytest.raises(ModifiedInputError, match="y0"):
        ys.sum().backward()


def test_time_gradient_path_detects_changes_too() -> None:
    model = Linear()
    t = T.clone().requires_grad_()
    ys = odeint(model, Y0, t, grad="backprop")
    with torch.no_grad():
        model.lin.bias.add_(0.1)
    with pytest.raises(ModifiedInputError):
        ys.sum().backward()


@pytest.mark.parametrize("grad", ["aca", "adjoint", "forward"])
def test_double_backward_is_refused(grad: str) -> None:
    y0 = Y0.clone().requires_grad_()
    ys = odeint(Linear(), y0, T, grad=grad)
    with pytest.raises(DoubleBackwardError, match="backprop"):
        torch.autograd.grad(ys.sum(), y0, create_graph=True)


@pytest.mark.parametrize("grad", ["backprop", "naive"])
def test_second_derivative_through_autograd_methods(grad: str) -> None:
    # dy/dt = -y²: y(t) = y0 / (1 + y0 t), d²y/dy0² = -2t / (1 + y0 t)³
    y0 = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.5], dtype=torch.float64)
    ys = odeint(lambda t, y: -(y**2), y0, t, grad=grad, rtol=1e-11, atol=1e-12)
    (g,) = torch.autograd.grad(ys[-1].sum(), y0, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), y0)
    exact = -2 * 1.5 / (1 + 0.7 * 1.5) ** 3
    # the second derivative of the discrete solve at rtol 1e-11: ~1e-9 from the exact flow's
    # (the step sequence differs from the flow by the tolerance); 1e-7 leaves room for it.
    assert float(h) == pytest.approx(exact, rel=1e-7)


def test_no_probe_evaluation_without_grad_mode() -> None:
    from physnode import solve

    model = Linear()
    with torch.no_grad():
        quiet = solve(model, Y0, T).stats.nfe_forward
    loud = solve(model, Y0, T).stats.nfe_forward
    assert loud == quiet + 1  # the one documented check for undeclared tensors


def test_no_probe_where_autograd_records_the_solve_anyway() -> None:
    from physnode import solve

    model = Linear()  # its parameters require grad: backprop differentiates through closures
    with torch.no_grad():
        quiet = solve(model, Y0, T, grad="backprop").stats.nfe_forward
    assert solve(model, Y0, T, grad="backprop").stats.nfe_forward == quiet


def test_sensitivities_refuse_a_non_callable() -> None:
    from physnode import InvalidInputError, sensitivities

    with pytest.raises(InvalidInputError, match="callable"):
        sensitivities("not a function", Y0, T)
