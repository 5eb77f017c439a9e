"""Least-squares problems and a matrix-free Gauss-Newton / conjugate-gradient solver.

The shape follows pytracking's ``libs/optimization.py`` (a problem object that returns residuals,
and a Gauss-Newton solver whose inner loop is conjugate gradient), written afresh for cract:

* A :class:`LeastSquaresProblem` maps a list of parameter tensors to a list of residual tensors.
  The loss is ``sum_k ||r_k||^2``.  Regularisation is part of the problem: Eq. 8's weight decay
  ``lambda ||w||^2`` is the residual ``sqrt(lambda) * w`` (see :func:`ridge_residuals`), so the
  Gauss-Newton matrix ``J^T J`` already contains the ``lambda I`` block and the solver needs no
  special case for it.
* :func:`gauss_newton_cg` solves ``(J^T J + mu I) dx = -J^T r`` with conjugate gradient at each
  Gauss-Newton step and never forms ``J`` or ``J^T J``.  ``J^T u`` is one backward pass.
  ``J v`` comes either from the double-backward trick (the default: ``g(u) = J^T u`` is built once
  per GN step with ``create_graph=True``; it is linear in ``u``, so its vector-Jacobian product
  with ``v`` is ``J v``) or from forward-mode AD (``torch.func.jvp``, which re-runs the forward
  each time).  ``mu`` is an optional extra damping (Levenberg-Marquardt style, 0 by default).

The solver never modifies the tensors it is given: it returns new ones.  The online learner
relies on that, because the tensors of a published weight snapshot must never change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Sequence

import torch

TensorList = list[torch.Tensor]


class LeastSquaresProblem:
    """A problem ``min_x sum_k ||r_k(x)||^2``; subclasses implement :meth:`residuals`."""

    def residuals(self, params: TensorList) -> TensorList:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, params: TensorList) -> float:
        with torch.no_grad():
            return _sum_sq(self.residuals(params))


class FunctionProblem(LeastSquaresProblem):
    """Wrap a plain function ``params -> residuals`` as a problem."""

    def __init__(self, fn: Callable[[TensorList], TensorList]):
        self._fn = fn

    def residuals(self, params: TensorList) -> TensorList:
        return list(self._fn(params))


def ridge_residuals(params: Sequence[torch.Tensor], weight_decay: float) -> TensorList:
    """The residuals ``sqrt(lambda) * w`` whose squared norm is Eq. 8's ``lambda ||w||^2``."""
    if weight_decay <= 0:
        return []
    s = math.sqrt(weight_decay)
    return [s * p.reshape(-1) for p in params]


@dataclass
class SolverStats:
    """What one :func:`gauss_newton_cg` run did.

    loss_history: the loss at the start and after every Gauss-Newton step (len = steps + 1).
    cg_iterations: CG iterations used in each GN step (fewer than asked when it met the tolerance).
    cg_residuals: per GN step, the relative CG residual norm after each CG iteration.
    step_scales: the step length accepted in each GN step (1.0 unless backtracking shortened it;
        0.0 when no shortened step lowered the loss and the parameters were left as they were).
    """

    loss_history: list[float] = field(default_factory=list)
    cg_iterations: list[int] = field(default_factory=list)
    cg_residuals: list[list[float]] = field(default_factory=list)
    step_scales: list[float] = field(default_factory=list)


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _sum_sq(rs: Sequence[torch.Tensor]) -> float:
    return float(sum((r.detach() ** 2).sum() for r in rs))


def _zeros_for_none(grads: Sequence[Optional[torch.Tensor]], like: Sequence[torch.Tensor]) -> TensorList:
    # A parameter (or residual) that the graph does not reach has a zero block in J.
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


def conjugate_gradient(
    apply_a: Callable[[TensorList], TensorList],
    rhs: TensorList,
    iterations: int,
    tolerance: float = 0.0,
) -> tuple[TensorList, list[float]]:
    """Solve ``A x = rhs`` for symmetric positive (semi-)definite ``A`` given as a function.

    Starts from x = 0.  Stops after ``iterations`` steps, when the residual norm falls to
    ``tolerance * ||rhs||``, or when a search direction has no positive curvature (A only
    semi-definite: going on would divide by ~0).  Returns x and the relative residual norms.
    """
    x = [torch.zeros_like(b) for b in rhs]
    r = [b.clone() for b in rhs]
    p = [b.clone() for b in rhs]
    rs = _dot(r, r)
    rs0 = float(rs)
    history: list[float] = []
    if rs0 == 0.0:
        return x, history
    for _ in range(iterations):
        ap = apply_a(p)
        pap = _dot(p, ap)
        if not float(pap) > 0.0:
            break
        alpha = rs / pap
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * api for ri, api in zip(r, ap)]
        rs_new = _dot(r, r)
        rel = math.sqrt(max(float(rs_new), 0.0) / rs0)
        history.append(rel)
        if rel <= tolerance:
            break
        beta = rs_new / rs
        p = [ri + beta * pi for ri, pi in zip(r, p)]
        rs = rs_new
    return x, history


def gauss_newton_cg(
    problem: LeastSquaresProblem,
    params: Sequence[torch.Tensor],
    gn_iterations: int,
    cg_iterations: int,
    cg_tolerance: float = 1e-6,
    damping: float = 0.0,
    jvp_mode: Literal["double_backward", "forward"] = "double_backward",
    backtracking: int = 4,
) -> tuple[TensorList, SolverStats]:
    """Minimise ``sum ||r(x)||^2`` by Gauss-Newton steps with matrix-free CG inner solves.

    ``backtracking`` > 0 halves a step up to that many times when it would raise the loss (plain
    Gauss-Newton has no such guarantee on a nonlinear problem); a step that no halving rescues is
    dropped and the solver stops, so the loss history never increases.  The loss of an accepted
    trial point is reused as the next step's starting point, so this costs no extra forward pass
    when the full step is accepted.  Returns new tensors (detached) and the statistics.
    """
    if gn_iterations < 0 or cg_iterations < 0:
        raise ValueError("gn_iterations and cg_iterations must be >= 0")
    x = [p.detach().clone().requires_grad_(True) for p in params]
    stats = SolverStats()

    def live(rs: TensorList) -> TensorList:
        # Residuals that do not depend on x (e.g. the weight decay of parameters held fixed) add a
        # constant to the loss and nothing to J; autograd refuses them, so they are left out here.
        return [ri for ri in rs if ri.requires_grad]

    with torch.enable_grad():
        r_all = problem.residuals(x)
        loss = _sum_sq(r_all)
        r = live(r_all)
        stats.loss_history.append(loss)
        for _ in range(gn_iterations):
            if jvp_mode == "double_backward":
                # u is a stand-in for the residuals: J^T u built once with a graph, linear in u.
                u = [ri.detach().clone().requires_grad_(True) for ri in r]
                jtu = torch.autograd.grad(r, x, grad_outputs=u, create_graph=True, allow_unused=True)
                jtu = _zeros_for_none(jtu, x)
                # Evaluated at u = r, J^T u is the gradient half-vector J^T r.
                grad = [g.detach() for g in jtu]
                jtu_live = [g for g in jtu if g.requires_grad]

                def jvp(v: TensorList) -> TensorList:
                    if not jtu_live:
                        return [torch.zeros_like(ri) for ri in r]
                    out = torch.autograd.grad(jtu_live, u, grad_outputs=[vi for vi, g in zip(v, jtu) if g.requires_grad],
                                              retain_graph=True, allow_unused=True)
                    return _zeros_for_none(out, u)

            elif jvp_mode == "forward":
                grad = _zeros_for_none(
                    torch.autograd.grad(r, x, grad_outputs=[ri.detach() for ri in r], retain_graph=True, allow_unused=True), x)
                primals = tuple(xi.detach() for xi in x)
                live_idx = [i for i, ri in enumerate(r_all) if ri.requires_grad]

                def jvp(v: TensorList) -> TensorList:
                    _, tangent_out = torch.func.jvp(lambda *p: tuple(problem.residuals(list(p))), primals, tuple(v))
                    return [tangent_out[i] for i in live_idx]

            else:
                raise ValueError(f"unknown jvp_mode {jvp_mode!r}")

            def apply_a(v: TensorList) -> TensorList:
                jv = jvp(v)
                jtjv = torch.autograd.grad(r, x, grad_outputs=jv, retain_graph=True, allow_unused=True)
                jtjv = _zeros_for_none(jtjv, x)
                if damping > 0:
                    jtjv = [a + damping * vi for a, vi in zip(jtjv, v)]
                return [a.detach() for a in jtjv]

            dx, cg_hist = conjugate_gradient(apply_a, [-g for g in grad], cg_iterations, cg_tolerance)
            stats.cg_iterations.append(len(cg_hist))
            stats.cg_residuals.append(cg_hist)

            scale, accepted = 1.0, False
            for _attempt in range(backtracking + 1):
                x_new = [(xi.detach() + scale * di).requires_grad_(True) for xi, di in zip(x, dx)]
                r_new_all = problem.residuals(x_new)
                loss_new = _sum_sq(r_new_all)
                r_new = live(r_new_all)
                if backtracking == 0 or loss_new <= loss:
                    accepted = True
                    break
                scale *= 0.5
            if not accepted:
                stats.step_scales.append(0.0)
                stats.loss_history.append(loss)
                break
            stats.step_scales.append(scale)
            x, r, r_all, loss = x_new, r_new, r_new_all, loss_new
            stats.loss_history.append(loss)
    return [xi.detach() for xi in x], stats
