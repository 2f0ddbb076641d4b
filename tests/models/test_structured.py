"""The structured corrections (``field``, ``pairwise`` and their conservative variants): each
symmetry checked against an independent reference — the permuted input, the total momentum
computed by hand, a central difference of the learned potential, the energy along a solve, the
same network in other units, and autograd itself for the hand-written gradients."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from physnode.errors import DtypeMismatchError, InvalidInputError
from physnode.models import (
    CORRECTION_KINDS,
    CORRECTIONS,
    CorrectionScales,
    FieldCorrection,
    HybridModel,
    PairwiseCorrection,
    resolve_correction,
)
from physnode.models.structured import StructuredCorrection, TanhMLP
from physnode.solver import odeint, solve
from physnode.solver.gradients.aca import ReplayFallbackWarning
from physnode.systems import NBody, make_system

T0 = torch.tensor(0.0, dtype=torch.float64)
PARTICLE_KINDS = [k for k in CORRECTION_KINDS if CORRECTIONS[k].particles]
#: scales unlike 1 in every entry, so a scale applied in the wrong place shows
SCALES = CorrectionScales(length=0.8, speed=1.3, acceleration=0.6, center=(0.1, -0.2))


@pytest.fixture(autouse=True)
def _own_rng():
    """Each test seeds its own network initialisation and leaves the global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        yield


def _system(masses=(0.7, 1.6, 1.1, 0.9)) -> NBody:
    return NBody(list(masses), G=1.0, dim=2)  # 4 bodies in 2-D: D = 16


def _states(n_bodies: int = 4, batch: int = 6, dim: int = 2) -> torch.Tensor:
    """Random states ``(batch, 2 N dim)`` with bodies on a jittered ring (no two close)."""
    angle = 2 * torch.pi * torch.arange(n_bodies, dtype=torch.float64) / n_bodies
    ring = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    if dim == 3:
        ring = torch.cat([ring, torch.zeros(n_bodies, 1, dtype=torch.float64)], -1)
    q = ring + 0.15 * torch.randn(batch, n_bodies, dim, dtype=torch.float64)
    v = torch.randn(batch, n_bodies, dim, dtype=torch.float64)
    return torch.cat([q.flatten(-2), v.flatten(-2)], -1)


def _hybrid(kind: str, system: NBody | None = None, **kwargs) -> HybridModel:
    """A hybrid model of ``kind`` with every weight random (as if trained)."""
    model = HybridModel.with_correction(system or _system(), kind, SCALES, hidden=16, **kwargs)
    with torch.no_grad():
        for p in model.correction.parameters():
            p.normal_(std=0.7)
    return model


def _correction(model: HybridModel, y: torch.Tensor) -> torch.Tensor:
    """The accelerations the correction adds, ``(..., N D)``."""
    return model(T0, y)[..., y.shape[-1] // 2 :] - model.system(T0, y)[..., y.shape[-1] // 2 :]


def _permute(y: torch.Tensor, perm: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """The state with its bodies reordered by ``perm`` (positions and velocities alike)."""
    q, v = y.chunk(2, -1)
    q = q.reshape(*q.shape[:-1], n, d)[..., perm, :].flatten(-2)
    v = v.reshape(*v.shape[:-1], n, d)[..., perm, :].flatten(-2)
    return torch.cat([q, v], -1)


# -- the start ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CORRECTION_KINDS)
def test_a_new_hybrid_model_is_its_physics_exactly(kind):
    """Every last layer starts at zero, so the correction is exactly 0 and ``f + 0 == f``."""
    system = _system()
    model = HybridModel.with_correction(system, kind, SCALES)
    y = _states()
    with torch.no_grad():
        assert torch.equal(model(T0, y), system(T0, y))


def test_auto_is_field_for_particles_and_mlp_otherwise():
    assert resolve_correction("auto", _system()) == "field"
    assert resolve_correction("auto", make_system("lotka-volterra")) == "mlp"
    with pytest.raises(InvalidInputError, match="needs particle data"):
        resolve_correction("pairwise", make_system("lotka-volterra"))
    with pytest.raises(InvalidInputError, match="choose one of"):
        resolve_correction("spline", _system())


# -- symmetries --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", PARTICLE_KINDS)
def test_permuting_the_bodies_permutes_the_accelerations(kind):
    """Relabelling bodies (masses with them) relabels the accelerations. 1e-14 absolute on
    accelerations up to ~6: the same per-body arithmetic, though a blocked matrix product or
    a pair sum may add the same numbers in another order (measured ≤ 2.7e-15, a few ulp)."""
    masses = torch.tensor([0.7, 1.6, 1.1, 0.9], dtype=torch.float64)
    model = _hybrid(kind, _system(masses))
    perm = torch.tensor([2, 0, 3, 1])
    permuted = _hybrid(kind, _system(masses[perm]))
    permuted.correction.load_state_dict(model.correction.state_dict())
    y = _states()
    with torch.no_grad():
        a = _correction(model, y).reshape(len(y), 4, 2)
        a_perm = _correction(permuted, _permute(y, perm, 4, 2)).reshape(len(y), 4, 2)
    assert a.abs().max() > 0.1  # the correction is not trivially zero
    torch.testing.assert_close(a_perm, a[:, perm], rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("kind", "velocity"),
    [("pairwise", False), ("pairwise", True), ("pairwise-conservative", False)],
)
def test_pair_terms_conserve_momentum(kind, velocity):
    """``Σ_i m_i a_i = 0`` for random states, masses and weights (also with the relative speed
    as an input): the pair sum cancels term by term, so what is left is rounding, 1e-14 of the
    size of the terms ``Σ_i m_i |a_i|`` (measured ~2e-16)."""
    masses = torch.tensor([0.3, 2.2, 1.1, 0.6], dtype=torch.float64)
    system = _system(masses)
    if velocity:
        correction = PairwiseCorrection(4, 2, SCALES, mass=1.0, hidden=16, velocity=True)
        model = HybridModel(system, correction)
        with torch.no_grad():
            for p in correction.parameters():
                p.normal_(std=0.7)
    else:
        model = _hybrid(kind, system)
    with torch.no_grad():
        a = _correction(model, _states(batch=20)).reshape(20, 4, 2)
    total = (masses[:, None] * a).sum(-2)
    size = (masses * a.norm(dim=-1)).sum(-1, keepdim=True)
    assert (size > 0.1).all()
    assert (total.abs() / size).max() < 1e-14


def test_the_field_acts_on_each_body_alone():
    """Moving one body changes only its own correction (the others' rows stay equal to 1e-15:
    each body's row goes through the same operations alone, though a blocked matrix product
    may round a row differently by its place in the batch)."""
    model = _hybrid("field")
    y = _states(batch=1)
    moved = y.clone()
    moved[0, 2] += 0.3  # x of body 2
    with torch.no_grad():
        a, b = _correction(model, y).reshape(4, 2), _correction(model, moved).reshape(4, 2)
    torch.testing.assert_close(a[[0, 2, 3]], b[[0, 2, 3]], rtol=0, atol=1e-15)
    assert (a[1] - b[1]).abs().max() > 1e-3


# -- the conservative kinds --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["field-conservative", "pairwise-conservative"])
def test_acceleration_is_minus_the_gradient_of_the_potential(kind):
    """``a_i = -(1/m_i) ∂W/∂q_i`` with ``W`` the learned potential energy, against central
    differences (step 1e-5: truncation ~1e-10 and rounding ~1e-11 relative; 1e-7 leaves room
    for curvature and holds no wrong sign or factor)."""
    model = _hybrid(kind)
    masses = model.system.masses.detach()
    y = _states(batch=1)[0]
    with torch.no_grad():
        a = _correction(model, y)
        step = 1e-5
        grad = torch.empty(8, dtype=torch.float64)
        for k in range(8):
            e = torch.zeros_like(y)
            e[k] = step
            up = model.correction.potential_energy(y + e, masses)
            down = model.correction.potential_energy(y - e, masses)
            grad[k] = (up - down) / (2 * step)
    expected = -grad / masses.repeat_interleave(2)
    assert a.abs().max() > 0.1
    torch.testing.assert_close(a, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", ["field-conservative", "pairwise-conservative", "field"])
def test_energy_along_a_solve(kind):
    """Kinetic + gravitational + learned potential energy along a dopri5 solve at rtol 1e-11
    over two time units: conserved to 1e-8 relative by the conservative kinds (measured
    ~1e-10: the solver's own error). The velocity-dependent ``field`` has no such energy and
    changes the physics' own by more than 1e-3 (measured 1.5): the bound can fail."""
    model = _hybrid(kind, _system((0.7, 1.6, 1.1)), depth=2)
    y0 = _states(n_bodies=3, batch=1)[0]
    t = torch.linspace(0.0, 2.0, 21, dtype=torch.float64)
    with torch.no_grad():
        ys = odeint(model, y0, t, rtol=1e-11, atol=1e-12)
        if kind == "field":
            energy = model.system.energy(ys)
        else:
            energy = model.energy(ys)
    drift = ((energy - energy[0]).abs() / energy[0].abs()).max()
    if kind == "field":
        assert drift > 1e-3, drift
        with pytest.raises(InvalidInputError, match="not conservative"):
            model.energy(ys)
    else:
        assert drift < 1e-8, drift


# -- shapes, dtypes, units ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", CORRECTION_KINDS)
def test_a_batch_equals_each_state_alone(kind):
    """Rows of a batch are independent: a batch of 2, and a (2, 3) batch, equal the states
    one by one (1e-15 relative: a batched matrix product may block the sum differently)."""
    model = _hybrid(kind)
    y = _states(batch=6)
    with torch.no_grad():
        alone = torch.stack([model(T0, row) for row in y])
        pair = torch.cat([model(T0, y[:2]), model(T0, y[2:4]), model(T0, y[4:])])
        grid = model(T0, y.reshape(2, 3, -1)).reshape(6, -1)
    torch.testing.assert_close(pair, alone, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(grid, alone, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("kind", CORRECTION_KINDS)
def test_float32_works_and_a_mismatch_is_refused(kind):
    """Built in float32, the model gives the float64 model's derivative to float32 accuracy
    (1e-5 relative: ~100 float32 ulp through a few layers and pair sums); float64 states
    into float32 weights are refused, not silently cast."""
    model = _hybrid(kind)
    single = HybridModel.with_correction(_system(), kind, SCALES, hidden=16, dtype=torch.float32)
    single.correction.load_state_dict(model.correction.state_dict())
    y = _states()
    with torch.no_grad():
        out = single(T0.float(), y.float())
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), model(T0, y), rtol=1e-5, atol=1e-5)
    with pytest.raises(DtypeMismatchError, match="float32"):
        single(T0, y)


@pytest.mark.parametrize("kind", PARTICLE_KINDS)
def test_the_same_network_in_other_units(kind):
    """Data in other units (lengths x 1000, times x 60, masses x 5) give scales in those
    units, and the same weights then give the same correction, in those units: the
    accelerations scale by 1000 / 60², to rounding (1e-12 relative)."""
    rng = np.random.default_rng(3)
    q, v, a = (rng.normal(size=(50, 4, 2)) for _ in range(3))
    scales = CorrectionScales.from_particles(q, v, a)
    alpha, beta, mu = 1000.0, 60.0, 5.0
    other = CorrectionScales.from_particles(alpha * q, alpha / beta * v, alpha / beta**2 * a)
    masses = torch.tensor([0.7, 1.6, 1.1, 0.9], dtype=torch.float64)
    model = HybridModel.with_correction(_system(masses), kind, scales, hidden=8)
    scaled = HybridModel.with_correction(_system(mu * masses), kind, other, hidden=8)
    with torch.no_grad():
        for p in model.correction.parameters():
            p.normal_(std=0.7)
    scaled.correction.net.load_state_dict(model.correction.net.state_dict())  # weights only
    y = _states()
    y_other = torch.cat([alpha * y[:, :8], alpha / beta * y[:, 8:]], -1)
    assert isinstance(scaled.correction, StructuredCorrection)
    with torch.no_grad():
        g = model.correction(y, masses)
        g_other = scaled.correction(y_other, mu * masses)
    torch.testing.assert_close(g_other, alpha / beta**2 * g, rtol=1e-12, atol=0)


def test_scales_are_robust_to_one_close_encounter():
    """The acceleration scale is a median: one sample 1000x larger barely moves it."""
    rng = np.random.default_rng(4)
    q, v, a = (rng.normal(size=(100, 3, 2)) for _ in range(3))
    base = CorrectionScales.from_particles(q, v, a).acceleration
    a[17] *= 1000.0
    assert CorrectionScales.from_particles(q, v, a).acceleration < 1.1 * base


def test_hand_written_gradient_is_autograd_s():
    """``TanhMLP.with_gradient`` against autograd on the same network (1e-13 relative: the
    same operations in another order)."""
    net = TanhMLP(3, 1, hidden=8, depth=3)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(std=0.7)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    value, grad = net.with_gradient(x)
    (reference,) = torch.autograd.grad(net(x).sum(), x)
    torch.testing.assert_close(value, net(x)[:, 0], rtol=1e-15, atol=0)
    torch.testing.assert_close(grad, reference, rtol=1e-13, atol=1e-15)


# -- gradients through the solver --------------------------------------------------------------
def _parameter_gradients(model: HybridModel, y0: torch.Tensor, grad: str) -> torch.Tensor:
    model.zero_grad()
    t = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    ys = odeint(model, y0, t, grad=grad, rtol=1e-10, atol=1e-12)
    ys.square().sum().backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("kind", CORRECTION_KINDS)
def test_aca_gradients_equal_backprop(kind):
    """Gradients of the weights and the (learnable) masses under ``grad="aca"`` equal
    backprop's to 1e-10 relative (both differentiate the same accepted steps: they differ by
    rounding, measured ~1e-15). The state of 12 numbers takes ACA's batched ``vmap`` replay,
    and no model falls back to the step-by-step one (no warning)."""
    system = _system((0.7, 1.6, 1.1)).set_learnable(["masses"])
    model = _hybrid(kind, system)
    y0 = _states(n_bodies=3, batch=1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayFallbackWarning)
        aca = _parameter_gradients(model, y0, "aca")
        sol = solve(model, y0, torch.linspace(0.0, 1.0, 6, dtype=torch.float64), grad="aca")
        sol.ys.sum().backward()
    assert sol.stats.n_replayed_batched == sol.stats.n_checkpoints > 0
    backprop = _parameter_gradients(model, y0, "backprop")
    assert backprop.norm() > 0
    assert ((aca - backprop).norm() / backprop.norm()) < 1e-10


def test_field_input_is_position_and_velocity_per_body():
    """The field network sees ``2 D`` numbers per body and gives ``D``."""
    field = FieldCorrection(5, 3, CorrectionScales())
    y = _states(n_bodies=5, batch=2, dim=3)
    assert field.net.layers[0].in_features == 6 and field.net.last.out_features == 3
    assert field(y).shape == (2, 15)
