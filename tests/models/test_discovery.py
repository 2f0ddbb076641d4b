"""The discovered law: sparse regression of a sampled correction onto named terms, and the
named terms as a correction with learnable coefficients.

Every field is written here in plain NumPy from its formula (independent of the library's torch
terms); samples are random states, so no orbit's accidents help.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnode.errors import InvalidInputError
from physnode.models import CORRECTIONS
from physnode.models.discovery import discover_particles, discover_state, particle_library
from physnode.models.symbolic import COEFFICIENTS, StateTerms, SymbolicTerms
from physnode.systems import NBody, make_system

MASSES = np.array([0.8, 1.3, 1.0])
RNG = np.random.default_rng(7)
Q = RNG.normal(size=(150, 3, 2)) * 1.5
V = RNG.normal(size=(150, 3, 2)) * 0.7


def _norm(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x, axis=-1, keepdims=True)


def _pair(q: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
    """Σ_j m_j (q_j - q_i) / |q_j - q_i|^n, by loops."""
    out = np.zeros_like(q)
    for i in range(q.shape[-2]):
        for j in range(q.shape[-2]):
            if i != j:
                d = q[..., j, :] - q[..., i, :]
                out[..., i, :] += m[j] * d / np.linalg.norm(d, axis=-1, keepdims=True) ** n
    return out


CASES = {
    "tidal": ({"q": -0.05}, lambda q, v: -0.05 * q),
    "drag": ({"v": -0.1}, lambda q, v: -0.1 * v),
    "quadratic drag and a uniform field": (
        {"|v| v": -0.1, "e_y": 0.02}, lambda q, v: -0.1 * _norm(v) * v + [0.0, 0.02]
    ),
    "point mass": ({"q/|q|^3": -0.3}, lambda q, v: -0.3 * q / _norm(q) ** 3),
    "inverse-cube pair": (
        {"sum_j m_j r_ij/|r_ij|^4": 0.25}, lambda q, v: 0.25 * _pair(q, MASSES, 4)
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_field_in_the_library_is_found_with_its_coefficients(case: str) -> None:
    """With 1 % noise on the samples (a learned correction is never exact): exactly the true
    terms, coefficients within 1 % (the noise is 1 % of the field's RMS and averages over
    900 rows, so the coefficients' scatter is ~0.03 %), and explained ≥ 0.99 (1 - noise²)."""
    truth, field = CASES[case]
    a = field(Q, V)
    a = a + 0.01 * np.sqrt(np.mean(a**2)) * RNG.normal(size=a.shape)
    found = discover_particles(Q, V, MASSES, a)
    assert sorted(found.terms) == sorted(truth), found.formula
    for term, c in zip(found.terms, found.coefficients, strict=True):
        assert abs(c - truth[term]) < 0.01 * abs(truth[term]), found.formula
    assert found.explained > 0.99


def test_a_field_outside_the_library_is_reported_as_unexplained() -> None:
    """A Gaussian bump a = -q exp(-|q|²) is no finite sum of the terms: the library explains
    visibly less than all of it (bound 0.98: measured 0.79), and the formula says so through
    ``library_explained``, not by inventing a perfect fit."""
    a = -Q * np.exp(-(_norm(Q) ** 2))
    found = discover_particles(Q, V, MASSES, a)
    assert found.library_explained < 0.98
    assert found.explained <= found.library_explained + 1e-12


def test_no_correction_gives_no_terms() -> None:
    found = discover_particles(Q, V, MASSES, np.zeros_like(Q))
    assert found.terms == [] and found.explained == 1.0


def test_a_field_correction_is_read_from_its_own_families() -> None:
    """A per-body field cannot represent pair terms: its library has none, so near-collinear
    pair terms (Σ_j m_j r_ij ∝ the centre of mass minus q_i) cannot cancel against q."""
    names = particle_library(2, CORRECTIONS["field"].families)
    assert "q" in names and "v" in names
    assert not any(n.startswith("sum_j") for n in names)
    names = particle_library(2, CORRECTIONS["pairwise"].families)
    assert all(n.startswith("sum_j") for n in names)
    names = particle_library(2, CORRECTIONS["field-conservative"].families)
    assert "v" not in names and "q" in names


def test_a_pair_kind_reads_a_field_about_the_origin_as_q_only_where_they_agree() -> None:
    """Σ_j m_j r_ij = M (q_cm - q_i): with the centre of mass at the origin in every sample it
    is -M q_i, so a pair correction 0.02 Σ_j m_j r_ij is the harmonic field -0.02 M q and
    reads ``q`` (coefficient -0.02 M to rounding: an exact identity, 1e-10); with the centre
    of mass moving (the random states as drawn) the two differ and it stays a pair term."""
    pairs = CORRECTIONS["pairwise"].families
    centred = Q - np.sum(MASSES[:, None] * Q, axis=-2, keepdims=True) / MASSES.sum()
    found = discover_particles(centred, V, MASSES, 0.02 * _pair(centred, MASSES, 0), pairs)
    assert found.terms == ["q"], found.formula
    assert abs(found.coefficients[0] + 0.02 * MASSES.sum()) < 1e-10
    found = discover_particles(Q, V, MASSES, 0.02 * _pair(Q, MASSES, 0), pairs)
    assert found.terms == ["sum_j m_j r_ij"], found.formula
    assert abs(found.coefficients[0] - 0.02) < 1e-10


def test_lotka_volterra_interactions_are_found() -> None:
    """The universal-differential-equations case (Rackauckas et al. 2020): the missing terms
    of Lotka–Volterra are -β x y in dx/dt and +γ x y in dy/dt (β = 0.9, γ = 0.8), sampled with
    0.5 % noise: exactly x y in each, coefficients within 1 %."""
    x = RNG.uniform(0.2, 3.0, size=(200, 2))
    corr = np.stack([-0.9 * x[:, 0] * x[:, 1], 0.8 * x[:, 0] * x[:, 1]], axis=1)
    corr = corr + 0.005 * np.sqrt(np.mean(corr**2)) * RNG.normal(size=corr.shape)
    found = discover_state(x, ["x", "y"], corr, ["x", "y"])
    assert found.terms == ["x y", "x y"] and found.targets == ["x", "y"], found.formula
    np.testing.assert_allclose(found.coefficients, [-0.9, 0.8], rtol=0.01)


def test_symbolic_terms_match_their_formulas() -> None:
    """SymbolicTerms with every library term and coefficients c_k gives Σ_k c_k term_k as
    computed here in NumPy, to 1e-13 relative (a few roundings of O(1) sums); gradients reach
    the coefficients (a learnable physical parameter of the system)."""
    system = NBody(list(MASSES), dim=2)
    names = list(particle_library(2))
    c = RNG.normal(size=len(names))
    terms = SymbolicTerms(system, names, c)
    system.set_learnable(COEFFICIENTS)
    by_hand = {
        "e_x": np.broadcast_to([1.0, 0.0], Q.shape), "e_y": np.broadcast_to([0.0, 1.0], Q.shape),
        "q": Q, "|q| q": _norm(Q) * Q, "|q|^2 q": _norm(Q) ** 2 * Q, "q/|q|^3": Q / _norm(Q) ** 3,
        "v": V, "|v| v": _norm(V) * V, "|v|^2 v": _norm(V) ** 2 * V,
        "sum_j m_j r_ij": _pair(Q, MASSES, 0),
        **{f"sum_j m_j r_ij/|r_ij|^{n}": _pair(Q, MASSES, n) for n in (2, 4, 5)},
    }  # fmt: skip
    expected = sum(ck * by_hand[n] for ck, n in zip(c, names, strict=True))
    y = torch.tensor(np.concatenate([Q.reshape(150, -1), V.reshape(150, -1)], axis=1))
    out = terms(y)
    np.testing.assert_allclose(out.detach().numpy(), expected.reshape(150, -1), rtol=0,
                               atol=1e-13 * np.abs(expected).max())  # fmt: skip
    out.sum().backward()
    assert system.params[COEFFICIENTS].raw.grad is not None


def test_unknown_terms_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown term"):
        SymbolicTerms(NBody(list(MASSES)), ["q", "sin q"])


def test_state_terms_add_each_monomial_to_its_component() -> None:
    """StateTerms: ``c_k · monomial_k`` added to ``d<target_k>/dt``, against NumPy by hand on
    random states, to 1e-13 relative (a few roundings); gradients reach the coefficients."""
    system = make_system("lotka-volterra")
    terms = ["prey: prey predator", "predator: prey predator", "prey: 1", "predator: predator^2",
             "prey: prey^2 predator"]  # fmt: skip
    c = RNG.normal(size=len(terms))
    module = StateTerms(system, terms, c)
    system.set_learnable(COEFFICIENTS)
    u = np.abs(RNG.normal(size=(40, 2))) + 0.1
    x, y = u[:, 0], u[:, 1]
    expected = np.stack([c[0] * x * y + c[2] + c[4] * x**2 * y, c[1] * x * y + c[3] * y**2], 1)
    out = module(torch.tensor(u))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-13, atol=0)
    out.sum().backward()
    assert system.params[COEFFICIENTS].raw.grad is not None


@pytest.mark.parametrize(
    ("term", "message"),
    [("prey predator", "write '<component>: <monomial>'"), ("fox: prey", "one of"),
     ("prey: prey wolf", "not a component"), ("prey: prey^x", "integer power")],
)  # fmt: skip
def test_state_terms_that_name_nothing_are_refused(term: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        StateTerms(make_system("lotka-volterra"), [term])


def _central(fun, x: torch.Tensor, h: float) -> torch.Tensor:
    """Central differences of ``fun`` (any output shape) in each entry of ``x``:
    ``(*out.shape, *x.shape)``."""
    cols = []
    for k in range(x.numel()):
        step = torch.zeros_like(x).reshape(-1)
        step[k] = h
        step = step.reshape(x.shape)
        cols.append((fun(x + step) - fun(x - step)) / (2 * h))
    return torch.stack(cols, dim=-1).reshape(*cols[0].shape, *x.shape)


@pytest.mark.parametrize("dim", [2, 3])
def test_every_library_term_has_its_closed_form_jacobian(dim: int) -> None:
    """Each term's ``jacobian`` (what forward sensitivities read in a symbolic refit) against
    central differences of the term itself in the positions, velocities and masses, at a
    random state of four bodies. h = 1e-6 on O(1) values: truncation h² ~ 1e-12 and rounding
    ~1e-10 of the entries (q/|q|^3 and |r|^-5 reach ~10 here), so 1e-7 of the largest entry
    leaves a margin and still catches a wrong factor or sign (O(1) of an entry)."""
    rng = np.random.default_rng(11)
    q = torch.tensor(rng.normal(size=(4, dim)))
    v = torch.tensor(rng.normal(size=(4, dim)))
    m = torch.tensor([0.8, 1.3, 1.0, 0.6], dtype=torch.float64)
    for name, term in particle_library(dim).items():
        jac = term.jacobian(q, v, m)
        assert torch.equal(jac.value, term(q, v, m)), name  # the value the call gives, bit for bit
        expected = {
            "q": _central(lambda x, f=term: f(x, v, m), q, 1e-6),
            "v": _central(lambda x, f=term: f(q, x, m), v, 1e-6),
            "masses": _central(lambda x, f=term: f(q, v, x), m, 1e-6),
        }
        for part, want in expected.items():
            got = getattr(jac, part)
            got = torch.zeros_like(want) if got is None else got
            scale = float(want.abs().max()) or 1.0
            assert float((got - want).abs().max()) < 1e-7 * scale, (name, part)


def test_a_symbolic_hybrids_closed_form_rows_are_autograds() -> None:
    """Physics plus every library term, with masses, G and the coefficients learned: the
    hybrid's ``jacobians`` (NBody's rows plus the terms') against autograd's Jacobian of its
    forward, to 1e-13 of the largest entry (a few ulps of sums of O(1..10) entries; measured
    ~5e-16); and it declines a network correction."""
    from physnode.models import HybridModel

    system = NBody([0.8, 1.3, 1.0, 0.6], dim=3)
    names = list(particle_library(3))
    model = HybridModel(system, SymbolicTerms(system, names, np.linspace(-0.3, 0.4, len(names))))
    learned = ["masses", COEFFICIENTS, "G"]
    system.set_learnable(learned)
    raws = [system.params[name].raw for name in learned]
    y = torch.tensor(np.random.default_rng(4).normal(size=24))
    t = torch.tensor(0.0)
    f, jac, rows = model.jacobians(t, y, raws)
    assert float((f - model(t, y).detach()).abs().max()) < 1e-13 * float(f.abs().max())
    want = torch.autograd.functional.jacobian(lambda x: model(t, x), y)
    assert float((jac - want).abs().max()) < 1e-13 * float(want.abs().max())
    out = model(t, y)
    for raw, row in zip(raws, rows, strict=True):
        grads = [torch.autograd.grad(out[i], raw, retain_graph=True)[0].reshape(-1)
                 for i in range(len(y))]  # fmt: skip
        want = torch.stack(grads)
        assert float((row - want).abs().max()) < 1e-13 * float(want.abs().max())
    assert HybridModel.with_correction(system, "field").jacobians(t, y, raws) is None


def test_state_terms_closed_form_rows_are_autograds() -> None:
    """Lotka–Volterra without interactions plus monomials up to degree 4 (a constant too),
    the rates and coefficients learned: the hybrid's ``jacobians`` (the system's rows plus
    each monomial's ``p_d y_d^(p_d - 1) Π y_e^p_e``) against autograd's Jacobian of its
    forward, to 1e-13 of the largest entry (ulps of sums of O(1) entries)."""
    from physnode.models import HybridModel

    system = make_system("lotka-volterra", beta=0.0, delta=0.0)
    terms = ["prey: prey predator", "predator: prey predator", "prey: prey^2",
             "predator: 1", "prey: predator^3 prey"]  # fmt: skip
    model = HybridModel(system, StateTerms(system, terms, [-0.9, 0.8, 0.1, 0.05, 0.02]))
    learned = ["alpha", "gamma", COEFFICIENTS]
    system.set_learnable(learned)
    raws = [system.params[name].raw for name in learned]
    y = torch.tensor([1.3, 0.7], dtype=torch.float64)
    t = torch.tensor(0.0)
    f, jac, rows = model.jacobians(t, y, raws)
    out = model(t, y)
    assert float((f - out.detach()).abs().max()) < 1e-13 * float(f.abs().max())
    want = torch.autograd.functional.jacobian(lambda x: model(t, x), y)
    assert float((jac - want).abs().max()) < 1e-13 * float(want.abs().max())
    for raw, row in zip(raws, rows, strict=True):
        grads = [torch.autograd.grad(out[i], raw, retain_graph=True)[0] for i in range(2)]
        want = torch.stack([g.reshape(-1) for g in grads])
        assert float((row - want).abs().max()) < 1e-13 * float(want.abs().max())
