"""Siamese RPN: anchors, depthwise cross-correlation heads, decoding and NMS down to N proposals.

Layouts: classification logits (B, 2, A, S, S) (background, target), box offsets (B, 4, A, S, S);
anchors (A * S * S, 4) cxcywh in search-crop pixels, flattened in (anchor, row, column) order, the
same order as ``logits[:, 1].reshape(B, -1)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import nms

from . import geometry


def score_map_size(search_size: int, template_size: int, stride: int) -> int:
    """Side of the RPN output: feature sides ceil(size / stride) (TF "same" padding), minus the
    two 3x3 valid convolutions' trims, cross-correlated: (fx - 2) - (fz - 2) + 1."""
    fx = math.ceil(search_size / stride)
    fz = math.ceil(template_size / stride)
    return fx - fz + 1


def make_anchors(ratios: Sequence[float], scale: float, stride: int, score_size: int, search_size: int) -> torch.Tensor:
    """Anchors (A*S*S, 4) as cxcywh in search-crop pixels.

    For ratio r = h / w and base side b = scale * stride: w = b / sqrt(r), h = b * sqrt(r) (area b^2).
    Centres lie on the score grid, spaced by ``stride`` around the crop centre as in SiamRPN:
    c_i = search_size / 2 + (i - S // 2) * stride.
    """
    base = scale * stride
    sizes = torch.tensor([[base / math.sqrt(r), base * math.sqrt(r)] for r in ratios], dtype=torch.float32)
    offsets = (torch.arange(score_size, dtype=torch.float32) - score_size // 2) * stride + search_size / 2.0
    a = len(ratios)
    cy, cx = torch.meshgrid(offsets, offsets, indexing="ij")
    cx = cx.reshape(1, -1).expand(a, -1)
    cy = cy.reshape(1, -1).expand(a, -1)
    w = sizes[:, 0:1].expand(-1, score_size * score_size)
    h = sizes[:, 1:2].expand(-1, score_size * score_size)
    return torch.stack([cx, cy, w, h], dim=-1).reshape(-1, 4)


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def xcorr_depthwise(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel cross-correlation of each search map with its own template kernel (SiamRPN++)."""
    b, c = kernel.shape[:2]
    x = search.reshape(1, b * c, search.shape[2], search.shape[3])
    k = kernel.reshape(b * c, 1, kernel.shape[2], kernel.shape[3])
    out = F.conv2d(x, k, groups=b * c)
    return out.reshape(b, c, out.shape[2], out.shape[3])


class DepthwiseXCorr(nn.Module):
    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.conv_kernel = conv_bn_relu(in_channels, hidden, 3)
        self.conv_search = conv_bn_relu(in_channels, hidden, 3)
        self.head = nn.Sequential(
            nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def kernel(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_kernel(z)

    def forward_with_kernel(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.head(xcorr_depthwise(self.conv_search(x), kernel))


class RPNHead(nn.Module):
    """Classification and regression branches; the template kernels can be computed once per target."""

    def __init__(self, in_channels: int, hidden: int, num_anchors: int):
        super().__init__()
        self.num_anchors = num_anchors
        self.cls = DepthwiseXCorr(in_channels, hidden, 2 * num_anchors)
        self.loc = DepthwiseXCorr(in_channels, hidden, 4 * num_anchors)

    def kernels(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls.kernel(z), self.loc.kernel(z)

    def forward_with_kernels(self, kernels: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls = self.cls.forward_with_kernel(kernels[0], x)
        loc = self.loc.forward_with_kernel(kernels[1], x)
        b, _, s, _ = cls.shape
        return cls.reshape(b, 2, self.num_anchors, s, s), loc.reshape(b, 4, self.num_anchors, s, s)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_with_kernels(self.kernels(z), x)


def decode_anchor_offsets(loc: torch.Tensor, anchors: torch.Tensor, offset_std: Sequence[float]) -> torch.Tensor:
    """(B, 4, A, S, S) offsets -> (B, A*S*S, 4) boxes xyxy in crop pixels (Eq. 4 on the anchors)."""
    b = loc.shape[0]
    deltas = loc.reshape(b, 4, -1).transpose(1, 2) * torch.as_tensor(offset_std, dtype=loc.dtype, device=loc.device)
    boxes = geometry.decode_offsets(anchors.unsqueeze(0).expand(b, -1, -1), deltas, fmt="cxcywh")
    return geometry.cxcywh_to_xyxy(boxes)


def select_proposals(
    scores: torch.Tensor,
    boxes_xyxy: torch.Tensor,
    num_proposals: int,
    nms_iou: float,
    pre_nms_top_n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top ``pre_nms_top_n`` by score, NMS, keep N: returns (boxes (N,4) xyxy, scores (N,), anchor indices (N,)).

    One crop at a time (the tracker's case).  When NMS leaves fewer than N boxes the last one is
    repeated, so downstream shapes stay fixed; its duplicate can never win the argmax over itself.
    """
    k = min(pre_nms_top_n, scores.numel())
    top_scores, top_idx = scores.topk(k)
    top_boxes = boxes_xyxy[top_idx]
    keep = nms(top_boxes.float(), top_scores.float(), nms_iou)[:num_proposals]
    if keep.numel() < num_proposals:
        keep = torch.cat([keep, keep[-1:].expand(num_proposals - keep.numel())])
    return top_boxes[keep], top_scores[keep], top_idx[keep]

