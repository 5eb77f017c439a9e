"""Training targets (paper Sec. 3.4): anchor labels for the RPN, proposal samples for R and I.

Anchors: positive when IoU with the target > pos_iou (0.6), negative when < neg_iou (0.3), ignored
between; ``anchor_samples`` (64) are drawn per pair with at most ``pos_fraction`` positives.  In a
negative pair (the search crop shows another object) every anchor is a negative.
Proposals: R trains on up to ``reg_proposals`` (16) proposals with IoU >= proposal_iou (0.5); I on up
to ``ide_proposals`` (32), labelled positive when IoU >= 0.5 in a positive pair, half of them
positive at most.
"""
from __future__ import annotations

import torch

from . import geometry

IGNORE = -1


def assign_anchor_labels(
    anchors_xyxy: torch.Tensor,
    gt_xyxy: torch.Tensor,
    positive_pair: bool,
    pos_iou: float,
    neg_iou: float,
    num_samples: int,
    pos_fraction: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Labels (num_anchors,) in {1, 0, -1 (ignored)} for one pair, ``num_samples`` non-ignored at most."""
    n = anchors_xyxy.shape[0]
    labels = torch.full((n,), IGNORE, dtype=torch.long, device=anchors_xyxy.device)
    if positive_pair:
        ious = geometry.iou(anchors_xyxy, gt_xyxy.reshape(1, 4).expand(n, 4))
        pos = torch.nonzero(ious > pos_iou).flatten()
        neg = torch.nonzero(ious < neg_iou).flatten()
    else:
        pos = torch.zeros(0, dtype=torch.long, device=anchors_xyxy.device)
        neg = torch.arange(n, device=anchors_xyxy.device)
    max_pos = int(round(num_samples * pos_fraction))
    pos = _subsample(pos, max_pos, generator)
    neg = _subsample(neg, num_samples - pos.numel(), generator)
    labels[pos] = 1
    labels[neg] = 0
    return labels


def _subsample(idx: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    if idx.numel() <= k:
        return idx
    perm = torch.randperm(idx.numel(), generator=generator, device="cpu")[:k].to(idx.device)
    return idx[perm]


def jitter_boxes(
    gt_xyxy: torch.Tensor, count: int, max_shift: float, max_log_scale: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``count`` boxes around the target: centre moved by up to max_shift of the size, sides scaled by up to e^max_log_scale."""
    gt = geometry.xyxy_to_cxcywh(gt_xyxy.reshape(1, 4)).expand(count, 4)
    r = torch.rand(count, 4, generator=generator).to(gt) * 2 - 1
    cx = gt[:, 0] + r[:, 0] * max_shift * gt[:, 2]
    cy = gt[:, 1] + r[:, 1] * max_shift * gt[:, 3]
    w = gt[:, 2] * torch.exp(r[:, 2] * max_log_scale)
    h = gt[:, 3] * torch.exp(r[:, 3] * max_log_scale)
    return geometry.cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=1))


def regression_samples(
    candidates_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, positive_pair: bool, min_iou: float, max_count: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of up to ``max_count`` candidates with IoU >= min_iou (none in a negative pair)."""
    if not positive_pair or candidates_xyxy.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=candidates_xyxy.device)
    ious = geometry.iou(candidates_xyxy, gt_xyxy.reshape(1, 4).expand_as(candidates_xyxy))
    return _subsample(torch.nonzero(ious >= min_iou).flatten(), max_count, generator)


def identification_samples(
    candidates_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, positive_pair: bool, min_iou: float, max_count: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of up to ``max_count`` candidates for I, at most half of them positive."""
    n = candidates_xyxy.shape[0]
    if positive_pair:
        ious = geometry.iou(candidates_xyxy, gt_xyxy.reshape(1, 4).expand_as(candidates_xyxy))
        positive = ious >= min_iou
    else:
        positive = torch.zeros(n, dtype=torch.bool, device=candidates_xyxy.device)
    pos = _subsample(torch.nonzero(positive).flatten(), max_count // 2, generator)
    neg = _subsample(torch.nonzero(~positive).flatten(), max_count - pos.numel(), generator)
    idx = torch.cat([pos, neg])
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    return idx, labels
