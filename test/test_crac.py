"""CRAC heads: R and I as relation heads over (f_i, f_init); shapes, order of the concat, R's zero start."""
from __future__ import annotations

import torch
import torch.nn as nn

from cract_core.crac import BoxRegressor, Identifier, RelationHead


def test_relation_head_by_hand() -> None:
    # One channel, 1x1 pooled, conv weights (+1 on f, -1 on f_init), no hidden fc, out = 2 * h + 1:
    #   f = 3, f_init = 1 -> relu(3 - 1) = 2 -> 5
    #   f = 1, f_init = 3 -> relu(1 - 3) = 0 -> 1       (so the concat is [f, f_init] and the ReLU is there)
    head = RelationHead(1, 1, 1, [], 1)
    with torch.no_grad():
        head.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        head.conv.bias.zero_()
        head.out.weight.fill_(2.0)
        head.out.bias.fill_(1.0)
    f = torch.tensor([3.0, 1.0]).view(2, 1, 1, 1)
    f_init = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(head(f, f_init).flatten(), torch.tensor([5.0, 1.0]))


def test_relation_head_layers() -> None:
    # conv 1x1 on 2 * P channels -> 64; fc 64*6*6 -> 256 -> 256; out -> 4 (R) or 2 (I)
    r = BoxRegressor(384, 6, 64, [256, 256])
    assert isinstance(r.conv, nn.Conv2d) and r.conv.in_channels == 768 and r.conv.kernel_size == (1, 1)
    assert [(fc.in_features, fc.out_features) for fc in r.fcs] == [(64 * 36, 256), (256, 256)]
    assert (r.out.in_features, r.out.out_features) == (256, 4)
    i = Identifier(384, 6, 64, [256, 256])
    assert (i.out.in_features, i.out.out_features) == (256, 2)
    # "three fc": two hidden + the output layer
    assert len(r.fcs) + 1 == 3 and len(i.fcs) + 1 == 3


def test_f_init_broadcasts_over_proposals() -> None:
    torch.manual_seed(0)
    head = Identifier(8, 6, 4, [16, 16])
    f = torch.randn(5, 8, 6, 6)
    f_init = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(head(f, f_init), head(f, f_init.expand(5, -1, -1, -1).contiguous()))
    assert head(f, f_init).shape == (5, 2)


def test_box_regressor_starts_at_zero_offsets() -> None:
    torch.manual_seed(0)
    r = BoxRegressor(8, 6, 4, [16, 16])
    out = r(torch.randn(7, 8, 6, 6), torch.randn(1, 8, 6, 6))
    assert out.shape == (7, 4)
    assert torch.count_nonzero(out) == 0
    # but it is trainable: the output layer gets a gradient
    out.sum().backward()
    assert r.out.weight.grad is not None and torch.count_nonzero(r.out.weight.grad) > 0
