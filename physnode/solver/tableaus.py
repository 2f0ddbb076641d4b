"""Runge–Kutta methods as data: Butcher tableaus, embedded error weights and dense output.

A :class:`ButcherTableau` holds everything the generic stepper in :mod:`physnode.solver.stepper`
needs. Dense output: between ``t_n`` and ``t_n + h`` the solution is
``y(t_n + θh) = y_n + h · Σ_i B_i(θ) k_i``, where ``k_i`` runs over the step's stages followed by
the tableau's extra dense-output stages. ``B(θ)`` is kept as rows ``F_j`` (vectors over the
stages) evaluated by a nested Horner scheme: either the monomial form
``θ(F0 + θ(F1 + θ(F2 + ...)))`` or Hairer's alternating form
``θ(F0 + (1-θ)(F1 + θ(F2 + (1-θ)(F3 + ...))))``, which is exact at ``θ = 1`` and avoids the
cancellation of large monomial coefficients (DOP853).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from physnode.solver import _dop853_coefficients as _d853


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    Attributes:
        name: the method's name as accepted by ``odeint(method=...)``.
        c: nodes, shape ``(s,)``.
        a: strictly lower-triangular coupling coefficients, row ``i`` has ``i`` entries.
        b: solution weights, shape ``(s,)``.
        order: order of the propagated solution.
        b_err: weights of the embedded error estimate ``b - b_hat`` (``None`` for fixed-step
            methods).
        error_order: order of the embedded estimate; the controller uses ``1/(error_order+1)``.
        fsal: the last stage is ``f(t + h, y_{n+1})`` (first same as last).
        b_err3: DOP853's second (3rd-order) estimate, combined with ``b_err`` as in Hairer's code.
        dense: rows ``F_j`` of the dense output, shape ``(degree, s + s_extra)``.
        dense_alternating: ``dense`` is in Hairer's alternating form (else monomial form).
        extra_c, extra_a: nodes and coupling rows of extra stages evaluated only when a
            dense output is requested inside a step (DOP853's stages 14–16).
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    error_order: int = 0
    fsal: bool = False
    b_err3: tuple[float, ...] | None = None
    dense: np.ndarray | None = field(default=None, repr=False)
    dense_alternating: bool = True
    extra_c: tuple[float, ...] = ()
    extra_a: tuple[tuple[float, ...], ...] = ()
    #: tensors of the weights per (what, dtype, device), made once (see :meth:`error_weights`)
    _tensors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def error_weights(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The embedded estimates' weights as one matrix, shape ``(r, s)``: ``b_err`` and, for
        DOP853, ``b_err3`` (``r = 2``); cached per dtype and device."""
        key = ("error", dtype, device)
        if key not in self._tensors:
            self._tensors[key] = torch.tensor(self.error_rows, dtype=dtype, device=device)
        return self._tensors[key]

    @property
    def error_rows(self) -> list[tuple[float, ...]]:
        """The embedded estimates' weights: ``[b_err]``, or ``[b_err, b_err3]`` (DOP853)."""
        assert self.b_err is not None  # internal invariant: only adaptive tableaus get here
        return [self.b_err] + ([self.b_err3] if self.b_err3 is not None else [])

    @property
    def n_stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    def dense_weights(self, theta: float | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``B(θ)``, shape ``(s + s_extra,)``, float64; a tensor when ``theta`` is one."""
        if self.dense is None:
            raise ValueError(f"method {self.name!r} has no dense output")
        rows: np.ndarray | torch.Tensor = self.dense
        if isinstance(theta, torch.Tensor):
            rows = torch.as_tensor(self.dense, dtype=torch.float64, device=theta.device)
        acc = rows[-1] * 0.0
        for j in reversed(range(len(rows))):
            mult = theta if (j % 2 == 0 or not self.dense_alternating) else 1.0 - theta
            acc = (acc + rows[j]) * mult
        return acc


def _unit(n: int, i: int) -> np.ndarray:
    e = np.zeros(n)
    e[i] = 1.0
    return e


def _hermite_rows(b: np.ndarray, last: int) -> list[np.ndarray]:
    """Cubic Hermite rows (order 3) from ``k_1 = f(y_n)`` and ``k_last = f(y_{n+1})``."""
    n = len(b)
    e1, el = _unit(n, 0), _unit(n, last)
    return [b, e1 - b, 2 * b - e1 - el]


# --- fixed-step methods (outputs land on step ends; no dense output needed) -------------------

EULER = ButcherTableau("euler", c=(0.0,), a=((),), b=(1.0,), order=1)
MIDPOINT = ButcherTableau("midpoint", c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)
RK4 = ButcherTableau(
    "rk4",
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
)

# --- Bogacki–Shampine 3(2), FSAL, cubic Hermite dense output ----------------------------------

_bs_b = np.array([2 / 9, 1 / 3, 4 / 9, 0.0])
BOSH3 = ButcherTableau(
    "bosh3",
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), tuple(_bs_b[:3])),
    b=tuple(_bs_b),
    order=3,
    b_err=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    error_order=2,
    fsal=True,
    dense=np.array(_hermite_rows(_bs_b, 3)),
)

# --- Dormand–Prince 5(4), FSAL, Shampine's 4th-order dense output ------------------------------

_dp_b = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
_dp_bhat = np.array(
    [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]
)
_dp_d = np.array(
    [
        -12715105075 / 11282082432,
        0.0,
        87487479700 / 32700410799,
        -10690763975 / 1880347072,
        701980252875 / 199316789632,
        -1453857185 / 822651844,
        69997945 / 29380423,
    ]
)
DOPRI5 = ButcherTableau(
    "dopri5",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        tuple(_dp_b[:6]),
    ),
    b=tuple(_dp_b),
    order=5,
    b_err=tuple(_dp_b - _dp_bhat),
    error_order=4,
    fsal=True,
    dense=np.array([*_hermite_rows(_dp_b, 6), _dp_d]),
)

# --- Tsitouras 5(4) (2011), FSAL, its own 4th-order dense output -------------------------------

_ts_b = np.array(
    [
        0.09646076681806523,
        0.01,
        0.4798896504144996,
        1.379008574103742,
        -3.290069515436081,
        2.324710524099774,
        0.0,
    ]
)
TSIT5 = ButcherTableau(
    "tsit5",
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ),
        tuple(_ts_b[:6]),
    ),
    b=tuple(_ts_b),
    order=5,
    # b - b_hat; the published table lists these differences (with the sign of the last fixed)
    b_err=(
        -0.0017800110522257771,
        -0.0008164344596567469,
        0.007880878010261995,
        -0.1447110071732629,
        0.5823571654525552,
        -0.458082105929187,
        1 / 66,
    ),
    error_order=4,
    fsal=True,
    dense=np.array(
        [
            [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
            [0.0, 0.13169999999999998, -0.2234, 0.1017],
            [0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
            [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
            [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
            [0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
            [0.0, 1.5, -4.0, 2.5],
        ]
    ).T.copy(),
    dense_alternating=False,
)

# --- DOP853 (Hairer): 8th order, 5th+3rd order error estimates, 7th-order dense output ----------

_d8_b = np.array([*_d853.B, 0.0])  # 12 stages + FSAL stage 13
_d8_n = 16  # stages incl. FSAL (13) and the dense output's 3 extra ones
_d8_bx = np.concatenate([_d8_b, np.zeros(3)])
_d8_rows = [
    _d8_bx,
    _unit(_d8_n, 0) - _d8_bx,
    2 * _d8_bx - _unit(_d8_n, 0) - _unit(_d8_n, 12),
    *[np.array(r) for r in _d853.D],
]
DOP853 = ButcherTableau(
    "dop853",
    c=tuple(_d853.C[:13]),
    a=tuple(tuple(r) for r in _d853.A[:13]),
    b=tuple(_d8_b),
    order=8,
    b_err=tuple(_d853.E5),
    error_order=7,
    fsal=True,
    b_err3=tuple(_d853.E3),
    dense=np.array(_d8_rows),
    extra_c=tuple(_d853.C[13:]),
    extra_a=tuple(tuple(r) for r in _d853.A[13:]),
)

RK_METHODS: dict[str, ButcherTableau] = {
    t.name: t for t in (EULER, MIDPOINT, RK4, BOSH3, DOPRI5, TSIT5, DOP853)
}
FIXED_STEP_METHODS = tuple(name for name, t in RK_METHODS.items() if not t.adaptive)
ADAPTIVE_METHODS = tuple(name for name, t in RK_METHODS.items() if t.adaptive)
