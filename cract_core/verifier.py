"""The target's appearance memory: the verifier that judges whether a box holds the target.

A Siamese proposal score says how well a place matches the template *compared with the rest of
the search region*; it stays high when the target has gone (BAN's median is 0.95 on validation
frames where the target is absent), so it cannot say LOST.  The memory compares the chosen box's
pyramid RoIAlign features (CRAC's PRoIAlign, the features R, I and D read) with a running
prototype of this target's own features: absolute evidence, not relative.

The prototype starts as f_init (the first frame's features) and follows the target's appearance
on the frames the tracker verified (an exponential moving average: the short-term memory), so a
slow change of pose or light is learnt while a cut to another scene, an occluder or a drift onto
the background is not.  On the validation split's frames the cosine similarity of the chosen box
to the prototype had a median of 0.93 with the target in the box (5th percentile 0.66) and 0.55
on frames where the target was absent.

The similarity is mapped onto [0, 1] so that the tracker's confidence thresholds read as usual:
``confidence = clip((similarity - floor) / (1 - floor), 0, 1)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InvalidInputError


class AppearanceMemory:
    """A prototype of the target's RoI features and the similarity of candidates to it."""

    def __init__(self, f_init: torch.Tensor, learning_rate: float, floor: float) -> None:
        if not 0.0 <= learning_rate <= 1.0:
            raise InvalidInputError(f"memory learning rate must be in [0, 1], got {learning_rate}")
        if not -1.0 <= floor < 1.0:
            raise InvalidInputError(f"memory similarity floor must be in [-1, 1), got {floor}")
        self.prototype = f_init.detach().reshape(1, -1).float().clone()
        self.learning_rate = learning_rate
        self.floor = floor

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each of K candidates' features (K x ...) with the prototype: (K,)."""
        flat = features.reshape(features.shape[0], -1).float()
        return F.cosine_similarity(flat, self.prototype.to(flat.device), dim=1, eps=1e-8)

    def confidence(self, similarity: torch.Tensor) -> torch.Tensor:
        """Similarity on the tracker's [0, 1] confidence scale (``floor`` and below: 0)."""
        return ((similarity - self.floor) / (1.0 - self.floor)).clamp(0.0, 1.0)

    def update(self, features: torch.Tensor) -> None:
        """Blend one verified box's features (1 x ...) into the prototype."""
        flat = features.reshape(1, -1).float().to(self.prototype.device)
        self.prototype.mul_(1.0 - self.learning_rate).add_(flat, alpha=self.learning_rate)
