"""Counters of one solve: :class:`SolverStats`."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class SolverStats:
    """Counters of one solve; the backward fields fill in when ``.backward()`` runs.

    Attributes:
        nfe_forward: function evaluations of the forward solve (with grad mode on, one of
            them may be the check for undeclared tensors, see :func:`~physnode.solver.odeint`).
        nfe_backward: function evaluations of the backward pass (ACA replay, adjoint solve,
            time gradients).
        n_accepted, n_rejected: accepted and rejected steps of the forward solve.
        n_checkpoints: states held for the backward pass (ACA: one per accepted step).
        n_steps_backward: step attempts of the adjoint's backward solve.
        n_replayed_batched: ACA: accepted steps the backward pass replayed in batches (the
            rest, ``n_checkpoints - n_replayed_batched``, were replayed one by one).
        n_sample_evals: per-sample steps: the rows (members) the vector field was evaluated
            on, summed over its calls: the right-hand-side work (a shared-step solve of a
            ``(B, D)`` batch does ``B · nfe_forward``).
        compile_seconds: ``options["compile"]``: wall seconds this solve spent tracing and
            compiling its step (0.0 when the kernel was cached or not asked for).
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    n_checkpoints: int = 0
    n_steps_backward: int = 0
    n_replayed_batched: int = 0
    n_sample_evals: int = 0
    compile_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def count_forward_eval(self) -> None:
        """One evaluation of the vector field by the forward solve (an ``RHS`` callback)."""
        self.nfe_forward += 1

    def count_backward_eval(self) -> None:
        """One evaluation of the vector field by the backward pass (an ``RHS`` callback)."""
        self.nfe_backward += 1
