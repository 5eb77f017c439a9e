"""CRAC: cascaded regression-align-classification on each RPN proposal (paper Sec. 3.2-3.3).

    f_i  = PRoIAlign(phi_34(x), p_i)
    r_i  = R(f_i, f_init)                  box regression, conv + 3 fc -> 4 offsets
    p~_i = Eq. 4 (p_i, r_i)                re-align
    f~_i = PRoIAlign(phi_34(x), p~_i)      re-pool
    v_i  = I(f~_i, f_init)                 offline identifier (relation network), conv + 3 fc -> 2 logits
    tau_i = D(f~_i)                        online discriminator (cract_core/discriminator.py)

With ``refinement: parallel`` (Table 7) classification uses f_i instead of f~_i.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class RelationHead(nn.Module):
    """concat(f, f_init) -> 1x1 conv -> fc -> fc -> fc.  Used for R (4 outputs) and I (2 outputs).

    The conv is 1x1 because it runs on up to 3*C*2 channels for every proposal; a 3x3 conv there
    cost ten times more per frame on the CPU for no measurable gain in the head's capacity.
    """

    def __init__(self, in_channels: int, pooled_size: int, conv_channels: int, fc: Sequence[int], outputs: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * in_channels, conv_channels, 1)
        dims = [conv_channels * pooled_size * pooled_size, *fc]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], outputs)

    def forward(self, f: torch.Tensor, f_init: torch.Tensor) -> torch.Tensor:
        """f (K, C, S, S); f_init (1 or K, C, S, S): the target's feature from the first frame."""
        if f_init.shape[0] != f.shape[0]:
            f_init = f_init.expand(f.shape[0], -1, -1, -1)
        x = F.relu(self.conv(torch.cat([f, f_init], dim=1))).flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.out(x)


class BoxRegressor(RelationHead):
    """R: offsets (dx, dy, dw, dh) of Eq. 4, divided by the offset std (Faster R-CNN's normalisation)."""

    def __init__(self, in_channels: int, pooled_size: int, conv_channels: int, fc: Sequence[int]):
        super().__init__(in_channels, pooled_size, conv_channels, fc, 4)
        # Untrained, R leaves every proposal where it is (offset 0), so the cascade is safe to run.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)


class Identifier(RelationHead):
    """I: 2 logits (different object, same object) for a proposal given the target's first-frame feature."""

    def __init__(self, in_channels: int, pooled_size: int, conv_channels: int, fc: Sequence[int]):
        super().__init__(in_channels, pooled_size, conv_channels, fc, 2)
