"""Pyramid RoIAlign (PRoIAlign): pool each box at 6x6, 3x3 and 1x1 and fuse, on torchvision's roi_align.

Fusion: the coarser poolings are upsampled (nearest) to the finest size and concatenated along
channels, so a proposal's feature is (levels * C, 6, 6): the 6x6 level keeps layout, the 3x3 and
1x1 levels add context that is robust to a misaligned box.  With ``pooling: single`` only the 6x6
RoIAlign is used (the paper's Table 9 baseline).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align


def boxes_to_rois(boxes_xyxy: torch.Tensor, batch_index: torch.Tensor | int = 0) -> torch.Tensor:
    """(K,4) xyxy boxes + the batch index of each -> (K,5) rois as roi_align takes them."""
    if isinstance(batch_index, int):
        idx = torch.full((boxes_xyxy.shape[0], 1), float(batch_index), dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
    else:
        idx = batch_index.to(boxes_xyxy.dtype).reshape(-1, 1)
    return torch.cat([idx, boxes_xyxy], dim=1)


class PyramidRoIAlign(nn.Module):
    def __init__(self, in_channels: int, sizes: Sequence[int], stride: int, mode: str = "pyramid", sampling_ratio: int = 2,
                 pixel_offset: float | None = None):
        super().__init__()
        # roi_align (aligned=True) takes feature cell j to look at pixel stride * j + stride / 2;
        # a backbone whose cells look at stride * j + pixel_offset needs its boxes shifted by the
        # difference, or every pooled feature sits off its box.
        self.box_shift = 0.0 if pixel_offset is None else stride / 2.0 - pixel_offset
        self.sizes = [int(s) for s in sizes] if mode == "pyramid" else [int(max(sizes))]
        self.output_size = max(self.sizes)
        self.spatial_scale = 1.0 / stride
        self.sampling_ratio = sampling_ratio
        self.out_channels = in_channels * len(self.sizes)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """features (B,C,H,W) in crop-feature space, rois (K,5) [batch, x1, y1, x2, y2] in crop pixels."""
        if self.box_shift:
            rois = torch.cat([rois[:, :1], rois[:, 1:] + self.box_shift], dim=1)
        levels = []
        for s in self.sizes:
            pooled = roi_align(
                features, rois.to(features.dtype), output_size=(s, s), spatial_scale=self.spatial_scale,
                sampling_ratio=self.sampling_ratio, aligned=True,
            )
            if s != self.output_size:
                pooled = F.interpolate(pooled, size=(self.output_size, self.output_size), mode="nearest")
            levels.append(pooled)
        return levels[0] if len(levels) == 1 else torch.cat(levels, dim=1)
