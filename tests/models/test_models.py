"""The hybrid model, the neural ODE, the learnable initial state and the MLP correction: each
property checked against an independent reference (the bare system, the input state, a
central difference, the textbook parameter count of dense layers)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from physnode.errors import InvalidInputError
from physnode.models import HybridModel, InitialState, MLPCorrection, NeuralODE
from physnode.systems import NBody, make_system

T = torch.tensor(0.3, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _own_rng():
    """Each test seeds its own network initialisation and leaves the global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        yield


def _states(dim: int, batch: int = 5) -> torch.Tensor:
    """A batch of well-separated states (no two bodies close), shape ``(batch, dim)``."""
    return torch.linspace(-1.0, 1.0, dim, dtype=torch.float64) + 0.3 * torch.randn(
        batch, dim, dtype=torch.float64
    )


def _nbody() -> NBody:
    return NBody([1.0, 0.8, 1.3], G=1.0, dim=2)  # D = 2 * 3 * 2 = 12


def _randomise_last_layer(mlp: MLPCorrection) -> None:
    """Move the correction away from its zero start, as training would."""
    last = mlp.net[-1]
    with torch.no_grad():
        last.weight.normal_(std=0.5)
        last.bias.normal_(std=0.5)


def _dense_count(widths: list[int]) -> int:
    """Weights plus biases of a chain of dense layers ``widths[0] -> ... -> widths[-1]``."""
    return sum(a * b + b for a, b in itertools.pairwise(widths))


# -- HybridModel ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["n-body", "lorenz"])
def test_zero_initialised_correction_is_pure_physics(name):
    """A new hybrid model is the bare system: exact equality, since the correction is exactly
    zero (zero last layer) and ``x + 0.0 == x`` in IEEE arithmetic."""
    system = _nbody() if name == "n-body" else make_system("lorenz")
    hybrid = HybridModel.with_mlp(system, hidden=8)
    y = _states(system.dimension)
    with torch.no_grad():
        assert torch.equal(hybrid(T, y), system(T, y))


def test_correction_changes_only_the_accelerations():
    """Second order: with a non-zero correction, dq/dt is still the velocity half of the state
    (exactly: it is copied, never computed) and the accelerations differ from the physics."""
    system = _nbody()
    hybrid = HybridModel.with_mlp(system, hidden=8)
    _randomise_last_layer(hybrid.correction)
    y = _states(system.dimension)
    half = system.dimension // 2
    with torch.no_grad():
        f, f0 = hybrid(T, y), system(T, y)
    assert torch.equal(f[..., :half], y[..., half:])
    # a random last layer of std 0.5 moves every acceleration by O(0.1), far above rounding
    assert ((f[..., half:] - f0[..., half:]).abs() > 1e-6).all()


def test_first_order_correction_acts_on_every_component():
    """First order (Lorenz): the correction reaches the whole derivative, not half of it."""
    system = make_system("lorenz")
    hybrid = HybridModel.with_mlp(system, hidden=8)
    _randomise_last_layer(hybrid.correction)
    y = _states(system.dimension)
    with torch.no_grad():
        diff = hybrid(T, y) - system(T, y)
    # as above: O(0.1) changes against a rounding level of ~1e-14 of Lorenz's O(10) values
    assert (diff.abs() > 1e-6).all()


def _central_difference(loss, param: torch.Tensor, index: tuple[int, ...], h: float) -> float:
    with torch.no_grad():
        base = param[index].item()
        param[index] = base + h
        up = loss().item()
        param[index] = base - h
        down = loss().item()
        param[index] = base
    return (up - down) / (2 * h)


def test_gradient_reaches_the_correction():
    """Autograd's gradient of a loss on the hybrid's derivative with respect to one weight of
    the (zero-initialised) last layer matches a central difference; at the zero start the inner
    layers get none (the last layer's zero weights block it), so the last layer moves first."""
    system = _nbody()
    hybrid = HybridModel.with_mlp(system, hidden=8)
    y = _states(system.dimension)
    w = torch.randn(y.shape, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return (w * hybrid(T, y)).square().sum()

    loss().backward()
    last, first = hybrid.correction.net[-1].weight, hybrid.correction.net[0].weight
    fd = _central_difference(loss, last, (1, 2), h=1e-6)
    # the loss is quadratic in a last-layer weight, so the central difference is exact up to
    # rounding: ~1e-16 * |loss| / h ~ 1e-9 relative; 1e-7 leaves a margin of 100
    assert last.grad[1, 2].item() == pytest.approx(fd, rel=1e-7)
    assert fd != 0.0
    assert torch.equal(first.grad, torch.zeros_like(first))


def test_gradient_reaches_the_inner_layers_once_trained():
    """Once the last layer is non-zero, an inner weight's gradient matches a central
    difference too."""
    system = _nbody()
    hybrid = HybridModel.with_mlp(system, hidden=8)
    _randomise_last_layer(hybrid.correction)
    y = _states(system.dimension)
    w = torch.randn(y.shape, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return (w * hybrid(T, y)).square().sum()

    loss().backward()
    first = hybrid.correction.net[0].weight
    fd = _central_difference(loss, first, (3, 0), h=1e-5)
    # tanh layers make the loss non-quadratic: truncation error ~ h² |L'''| ~ 1e-10 relative,
    # rounding ~ 1e-16 / h ~ 1e-11; 1e-6 is a wide margin that still catches a wrong gradient
    assert first.grad[3, 0].item() == pytest.approx(fd, rel=1e-6)


def test_autonomous_follows_the_physics():
    assert HybridModel(_nbody()).autonomous is True  # N-body gravity has no explicit t
    assert NeuralODE(4).autonomous is True


def test_closed_form_jacobians_are_the_physics_only_without_a_correction():
    """A physics-only hybrid's ``jacobians`` against autograd's Jacobian of its forward (to
    1e-13 of the largest entry: ulps of O(1..10) sums); with a network correction, or as a
    subclass with its own forward, it declines (``None``: autograd's rows are used), so a
    hybrid never passes off the physics' Jacobian as its own."""
    system = _nbody()
    system.set_learnable("masses")
    raw = system.params["masses"].raw
    y = torch.randn(system.dimension, dtype=torch.float64)
    t = torch.tensor(0.0)
    hybrid = HybridModel(system)
    f, jac, (rows,) = hybrid.jacobians(t, y, [raw])
    assert float((f - hybrid(t, y).detach()).abs().max()) < 1e-13 * float(f.abs().max())
    want = torch.autograd.functional.jacobian(lambda x: hybrid(t, x), y)
    assert float((jac - want).abs().max()) < 1e-13 * float(want.abs().max())
    out = hybrid(t, y)
    grads = [torch.autograd.grad(out[i], raw, retain_graph=True)[0] for i in range(len(y))]
    want = torch.stack(grads)
    assert float((rows - want).abs().max()) < 1e-13 * float(want.abs().max())
    assert HybridModel.with_mlp(system, hidden=4).jacobians(t, y, [raw]) is None

    class Dragged(HybridModel):
        def forward(self, t, y):
            return super().forward(t, y) - 0.1 * torch.cat([torch.zeros_like(y[:6]), y[6:]])

    assert Dragged(system).jacobians(t, y, [raw]) is None


def test_physical_parameters_are_the_systems():
    system = _nbody()
    hybrid = HybridModel.with_mlp(system, hidden=4)
    mine, theirs = hybrid.physical_parameters(), system.physical_parameters()
    assert set(mine) == set(theirs)
    for name in theirs:
        assert torch.equal(mine[name], theirs[name])


@pytest.mark.parametrize("hidden", [4, 16])
def test_hybrid_parameter_count_follows_hidden(hidden):
    """Only the correction is trainable (no physical parameter set learnable): D -> h -> h ->
    D/2 dense layers for a second-order system."""
    system = _nbody()
    hybrid = HybridModel.with_mlp(system, hidden=hidden)
    d = system.dimension
    count = sum(p.numel() for p in hybrid.parameters())
    assert count == _dense_count([d, hidden, hidden, d // 2])


# -- NeuralODE --------------------------------------------------------------------------------
@pytest.mark.parametrize("second_order", [True, False])
def test_neural_ode_shape_and_dtype(second_order):
    node = NeuralODE(6, second_order=second_order, hidden=8)
    y = _states(6, batch=4)
    out = node(T, y)
    assert out.shape == (4, 6)
    assert out.dtype == torch.float64
    assert node(T, y[0]).shape == (6,)  # an unbatched state works too


def test_neural_ode_second_order_keeps_dq_dt_equal_to_v():
    node = NeuralODE(6, second_order=True, hidden=8)
    y = _states(6)
    with torch.no_grad():
        assert torch.equal(node(T, y)[..., :3], y[..., 3:])  # copied, hence exact


def test_neural_ode_starts_with_gradient_to_inner_layers():
    """Unlike the hybrid's correction, a pure network starts with a small random last layer,
    so its inner layers get a gradient from the first step."""
    node = NeuralODE(6, second_order=False, hidden=8)
    node(T, _states(6)).square().sum().backward()
    assert node.net.net[0].weight.grad.abs().max() > 0


@pytest.mark.parametrize(("hidden", "second_order"), [(4, True), (16, True), (16, False)])
def test_neural_ode_parameter_count_follows_hidden(hidden, second_order):
    dim = 8
    node = NeuralODE(dim, second_order=second_order, hidden=hidden)
    out = dim // 2 if second_order else dim
    count = sum(p.numel() for p in node.parameters())
    assert count == _dense_count([dim, hidden, hidden, out])
    assert node.physical_parameters() == {}


# -- MLPCorrection ----------------------------------------------------------------------------
def test_correction_input_scale():
    """``scale`` divides the inputs: the same weights at scale 4 on ``4 y`` give what scale 1
    gives on ``y``. Exact, since multiplying and dividing by a power of two is exact."""
    scaled = MLPCorrection(5, 3, hidden=8, scale=4.0)
    _randomise_last_layer(scaled)
    plain = MLPCorrection(5, 3, hidden=8, scale=1.0)
    plain.load_state_dict(scaled.state_dict())
    y = _states(5)
    with torch.no_grad():
        assert torch.equal(scaled(4.0 * y), plain(y))


@pytest.mark.parametrize("depth", [1, 3])
def test_correction_depth(depth):
    mlp = MLPCorrection(5, 3, hidden=7, depth=depth)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == depth + 1
    assert sum(p.numel() for p in mlp.parameters()) == _dense_count([5] + [7] * depth + [3])
    assert torch.equal(mlp(_states(5)), torch.zeros(5, 3, dtype=torch.float64))


# -- InitialState -----------------------------------------------------------------------------
def _y0() -> torch.Tensor:
    return torch.arange(1.0, 9.0, dtype=torch.float64)  # positions 1..4, velocities 5..8


def _train_one_step(start: InitialState) -> None:
    """One optimiser step on a loss that pulls every component."""
    opt = torch.optim.SGD(start.parameters(), lr=0.1)
    opt.zero_grad()
    start().square().sum().backward()
    opt.step()


def test_initial_state_velocities_only():
    y0 = _y0()
    start = InitialState(y0, "velocities")
    assert torch.equal(start(), y0)  # positions + velocities put back together
    assert sum(p.numel() for p in start.parameters()) == 4
    _train_one_step(start)
    assert torch.equal(start()[:4], y0[:4])  # positions stay fixed
    assert not torch.equal(start()[4:], y0[4:])  # velocities moved


def test_initial_state_all_and_none():
    y0 = _y0()
    learned, fixed = InitialState(y0, "all"), InitialState(y0, "none")
    assert torch.equal(learned(), y0) and torch.equal(fixed(), y0)
    assert sum(p.numel() for p in learned.parameters()) == 8
    assert list(fixed.parameters()) == []
    _train_one_step(learned)
    assert not torch.equal(learned()[:4], y0[:4])  # every component moves


def test_initial_state_is_a_float64_copy():
    y0 = _y0().to(torch.float32)
    start = InitialState(y0, "all")
    y0[0] = 100.0
    assert start().dtype == torch.float64
    assert start()[0].item() == 1.0  # the caller's tensor is not shared


def test_initial_state_refuses_unknown_learning():
    with pytest.raises(InvalidInputError, match="'none', 'all' or 'velocities'"):
        InitialState(_y0(), "positions")


def test_float32_hybrid_model_trains_in_float32() -> None:
    from physnode import odeint
    from physnode.errors import DtypeMismatchError
    from physnode.models import HybridModel
    from physnode.systems import NBody, three_body

    system = NBody([1.0, 1.0, 1.0], dim=2)
    system.set_learnable("masses")
    model = HybridModel.with_mlp(system, dtype=torch.float32)
    _, y0, _ = three_body("figure-eight")
    t = torch.linspace(0.0, 1.0, 5)
    ys = odeint(model, y0.float(), t, rtol=1e-5, atol=1e-6)
    assert ys.dtype == torch.float32
    ys.pow(2).sum().backward()
    last = model.correction.net[-1]
    assert last.weight.grad.dtype == torch.float32 and last.weight.grad.abs().sum() > 0
    with pytest.raises(DtypeMismatchError, match=r"dtype=torch\.float32"):
        odeint(HybridModel.with_mlp(system), y0.float(), t)
