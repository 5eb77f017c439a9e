"""Eq. 8 as a least-squares problem for the Gauss-Newton / CG solver: class-balanced L2 residuals of
D's scores plus weight decay, over all of D (frame 1) or its fc layers (updates)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..discriminator import fc_forward
from ..optimization import LeastSquaresProblem, ridge_residuals


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """sqrt of per-sample loss weights: each class gets half the loss, whatever its count.

    Without this the 1000 (or 4000) negatives would outweigh the 200 positives five to one and the
    cheapest fit would score everything low.  With one class only, a plain mean.
    """
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return torch.full_like(labels, 1.0 / math.sqrt(max(len(labels), 1)))
    w = torch.where(pos, torch.tensor(0.5 / n_pos, dtype=labels.dtype, device=labels.device),
                    torch.tensor(0.5 / n_neg, dtype=labels.dtype, device=labels.device))
    return w.sqrt()


class DiscriminatorProblem(LeastSquaresProblem):
    """Eq. 8: residuals sqrt(w_i) (D(x_i) - y_i) and sqrt(lambda) * params.

    ``fit_conv=True`` (frame 1): params are [conv_w, conv_b, fc1_w, fc1_b, fc2_w, fc2_b] and
    ``inputs`` are RoIAlign features (n, C, S, S); with ``conv_basis`` (k, C) the conv weight is
    ``A @ conv_basis`` and params[0] is A (out, k) (same weight decay: the basis is orthonormal).  ``fit_conv=False`` (updates): params are the
    four fc tensors and ``inputs`` are the fixed conv's flattened activations (n, F).
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, weight_decay: float, fit_conv: bool,
                 sample_weights: Optional[torch.Tensor] = None, conv_basis: Optional[torch.Tensor] = None):
        self.labels = labels.to(inputs.dtype)
        self.sqrt_w = sample_weights if sample_weights is not None else class_balanced_weights(self.labels)
        self.weight_decay = weight_decay
        self.fit_conv = fit_conv
        if fit_conv:
            # A 1x1 conv is a matrix product over (sample, cell) rows; as one matmul it runs about
            # three times faster on the CPU than conv2d and its backward, and each CG iteration
            # runs it twice.  Rows are laid out once here.
            n, c, s1, s2 = inputs.shape
            self.n, self.cells = n, s1 * s2
            self.inputs = inputs.permute(0, 2, 3, 1).reshape(n * self.cells, c).contiguous()
            if conv_basis is not None:
                # Conv weight W = A @ basis (basis: k orthonormal rows): the rows are projected once
                # and the unknown is A (out x k), so every pass costs k / C of the full conv.
                self.inputs = self.inputs @ conv_basis.T
        else:
            self.inputs = inputs

    def predict(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.fit_conv:
            w, b = params[0], params[1]
            h = torch.relu(torch.addmm(b, self.inputs, w.reshape(w.shape[0], -1).T))  # (n*cells, out)
            # The rows come out cell-major within each sample; conv_forward(...).flatten(1) is
            # channel-major.  Permuting fc1's columns (73k numbers) instead of the activations
            # (n * 36 * 32) spares a large copy in every forward and backward pass.
            hidden = h.reshape(self.n, -1)
            fc1_w = params[2]
            fc1_w = fc1_w.reshape(fc1_w.shape[0], h.shape[1], self.cells).transpose(1, 2).reshape(fc1_w.shape[0], -1)
            fc = [fc1_w, *params[3:]]
        else:
            hidden, fc = self.inputs, params
        return fc_forward(hidden, *fc)

    def residuals(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.sqrt_w * (self.predict(params) - self.labels)] + ridge_residuals(params, self.weight_decay)


class _SubsetProblem(LeastSquaresProblem):
    """A problem over some of another problem's parameters, the others held at given values."""

    def __init__(self, problem: LeastSquaresProblem, params: Sequence[torch.Tensor], free: Sequence[int]):
        self.problem = problem
        self.params = [p.detach() for p in params]
        self.free = list(free)

    def residuals(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        full = list(self.params)
        for i, p in zip(self.free, params):
            full[i] = p
        return self.problem.residuals(full)
