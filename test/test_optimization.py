"""Gauss-Newton / conjugate-gradient solver: closed-form ridge, nonlinear descent, no mutation."""
from __future__ import annotations

import pytest
import torch

from cract_core.optimization import (
    FunctionProblem,
    conjugate_gradient,
    gauss_newton_cg,
    ridge_residuals,
)


def _ridge_problem(seed: int = 0, m: int = 40, n: int = 12, lam: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=g, dtype=torch.float64)
    b = torch.randn(m, generator=g, dtype=torch.float64)
    closed = torch.linalg.solve(a.T @ a + lam * torch.eye(n, dtype=torch.float64), a.T @ b)
    problem = FunctionProblem(lambda p: [a @ p[0] - b] + ridge_residuals(p, lam))
    return problem, closed, n


@pytest.mark.parametrize("jvp_mode", ["double_backward", "forward"])
def test_ridge_reaches_closed_form(jvp_mode: str) -> None:
    problem, closed, n = _ridge_problem()
    x0 = torch.zeros(n, dtype=torch.float64)
    # Linear residuals: one GN step is the exact normal equations; CG converges in <= n steps.
    (x,), stats = gauss_newton_cg(problem, [x0], gn_iterations=1, cg_iterations=n, cg_tolerance=0.0,
                                  jvp_mode=jvp_mode)
    rel = float((x - closed).norm() / closed.norm())
    assert rel < 1e-4, rel
    assert stats.loss_history[1] < stats.loss_history[0]
    assert torch.equal(x0, torch.zeros(n, dtype=torch.float64)), "the solver must not write into its input"


def test_ridge_in_float32_with_split_parameters() -> None:
    # The same ridge problem with the unknowns split over two tensors of other shapes (as D's
    # weight and bias are): the solver works on lists of tensors, not one flat vector.
    _, closed, _ = _ridge_problem(seed=3, n=12)
    lam = 0.3
    g = torch.Generator().manual_seed(3)
    a = torch.randn(40, 12, generator=g, dtype=torch.float64)
    b = torch.randn(40, generator=g, dtype=torch.float64)

    def residuals(p):
        x = torch.cat([p[0].reshape(-1), p[1]])
        return [a.float() @ x - b.float()] + ridge_residuals(p, lam)

    params = [torch.zeros(2, 4), torch.zeros(4)]
    out, _ = gauss_newton_cg(FunctionProblem(residuals), params, 2, 12, cg_tolerance=0.0)
    x = torch.cat([out[0].reshape(-1), out[1]]).double()
    assert float((x - closed).norm() / closed.norm()) < 1e-4


def test_cg_stops_early_on_tolerance() -> None:
    problem, closed, n = _ridge_problem()
    _, stats = gauss_newton_cg(problem, [torch.zeros(n, dtype=torch.float64)], 1, 100, cg_tolerance=1e-3)
    assert stats.cg_iterations[0] < 100
    assert stats.cg_residuals[0][-1] <= 1e-3
    # and the residual history really is what CG reached: the earlier iterations were above tolerance
    assert all(r > 1e-3 for r in stats.cg_residuals[0][:-1])


def test_conjugate_gradient_matches_dense_solve() -> None:
    g = torch.Generator().manual_seed(1)
    m = torch.randn(8, 8, generator=g, dtype=torch.float64)
    spd = m @ m.T + 0.5 * torch.eye(8, dtype=torch.float64)
    rhs = torch.randn(8, generator=g, dtype=torch.float64)
    (x,), hist = conjugate_gradient(lambda v: [spd @ v[0]], [rhs], iterations=8)
    assert torch.allclose(x, torch.linalg.solve(spd, rhs), rtol=1e-8, atol=1e-10)
    assert len(hist) <= 8


def test_nonlinear_loss_decreases_monotonically() -> None:
    # A small two-layer ReLU regression (D's shape in miniature) from a generic start.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 6, generator=g)
    y = torch.tanh(x @ torch.randn(6, generator=g)) + 0.05 * torch.randn(200, generator=g)
    lam = 1e-3

    def residuals(p):
        h = torch.relu(x @ p[0].T + p[1])
        return [(h @ p[2] - y) / 200 ** 0.5] + ridge_residuals(p, lam)

    params = [0.5 * torch.randn(16, 6, generator=g), torch.zeros(16), 0.1 * torch.randn(16, generator=g)]
    _, stats = gauss_newton_cg(FunctionProblem(residuals), params, gn_iterations=8, cg_iterations=10)
    hist = stats.loss_history
    assert len(hist) >= 2
    assert all(b <= a for a, b in zip(hist, hist[1:])), hist
    assert hist[-1] < 0.5 * hist[0], hist


def test_exponential_fit_gauss_newton_converges() -> None:
    # y = a exp(b t): the textbook nonlinear least-squares problem; GN-CG finds (a, b).
    t = torch.linspace(0, 1, 30, dtype=torch.float64)
    y = 2.0 * torch.exp(-1.5 * t)
    problem = FunctionProblem(lambda p: [p[0] * torch.exp(p[1] * t) - y])
    (a, b), stats = gauss_newton_cg(problem, [torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)],
                                    gn_iterations=15, cg_iterations=2, cg_tolerance=0.0)
    assert all(q <= p for p, q in zip(stats.loss_history, stats.loss_history[1:]))
    assert abs(float(a) - 2.0) < 1e-4 and abs(float(b) + 1.5) < 1e-4


def test_zero_iterations_returns_copy() -> None:
    problem, _, n = _ridge_problem()
    x0 = torch.ones(n, dtype=torch.float64)
    (x,), stats = gauss_newton_cg(problem, [x0], 0, 5)
    assert torch.equal(x, x0) and x is not x0
    assert len(stats.loss_history) == 1
    with pytest.raises(ValueError):
        gauss_newton_cg(problem, [x0], -1, 5)


@pytest.mark.parametrize("jvp_mode", ["double_backward", "forward"])
def test_constant_residuals_are_allowed(jvp_mode: str) -> None:
    # Weight decay of parameters held fixed gives residuals that do not depend on the unknowns:
    # they shift the loss, not the solution.
    problem, closed, n = _ridge_problem()
    const = torch.tensor([3.0, 4.0], dtype=torch.float64)
    shifted = FunctionProblem(lambda p: problem.residuals(p) + [const])
    (x,), stats = gauss_newton_cg(shifted, [torch.zeros(n, dtype=torch.float64)], 1, n, cg_tolerance=0.0,
                                  jvp_mode=jvp_mode)
    assert float((x - closed).norm() / closed.norm()) < 1e-4
    assert stats.loss_history[-1] > 25.0 - 1e-9  # the constant's 3^2 + 4^2 is in the loss
