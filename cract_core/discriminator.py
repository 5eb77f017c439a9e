"""The online discriminator D of CRACT (Eq. 7): one 1x1 conv + ReLU, then fc -> ReLU -> fc.

D takes pyramid-RoIAlign features ``(n, C, S, S)`` of boxes and returns a score tau per box
(trained towards 1 for the target, 0 for background, with an L2 loss; clamped to [0, 1] when it
is used as a score).  It is written functionally, ``forward(features, conv, fc)``, because its
weights are not a module's state: the first frame fits the conv and fc layers, later updates
replace only the fc layers, and the update may be solved on another thread.  So the fc layers are
one immutable snapshot object, :class:`FCWeights`: the hot path reads one reference and the
update worker publishes a new snapshot by replacing that reference, never by writing into
tensors that a reader may hold.

Initialisation follows ATOM's projection layer: the conv is the PCA of the first frame's
features (deterministic; the sign of each component is fixed so that the result does not depend
on the eigen-solver), fc1 is small and random from a seeded generator, fc2 is zero.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)
class ConvParams:
    """D's 1x1 conv: weight (out, C, 1, 1), bias (out,).  Fitted on frame 1, fixed afterwards."""

    weight: torch.Tensor
    bias: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight, self.bias]


def _checksum(tensors: list[torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        arr = t.detach().to("cpu", copy=False).contiguous().numpy()
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class FCWeights:
    """One immutable snapshot of D's two fc layers.

    fc1_weight (H, F), fc1_bias (H,), fc2_weight (1, H), fc2_bias (1,) with F = conv_channels * S * S.
    ``version`` increases with every new snapshot a learner publishes.  ``built_checksum`` is the
    checksum of the tensors when the snapshot was made: :meth:`checksum` recomputes it, so a
    reader can prove that nobody wrote into the tensors afterwards (the torn-weights check).
    Nothing may write into these tensors; make a new snapshot instead (:meth:`from_tensors`).
    """

    fc1_weight: torch.Tensor
    fc1_bias: torch.Tensor
    fc2_weight: torch.Tensor
    fc2_bias: torch.Tensor
    version: int = 0
    built_checksum: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.built_checksum:
            object.__setattr__(self, "built_checksum", _checksum(self.tensors()))

    def tensors(self) -> list[torch.Tensor]:
        return [self.fc1_weight, self.fc1_bias, self.fc2_weight, self.fc2_bias]

    def checksum(self) -> str:
        return _checksum(self.tensors())

    @classmethod
    def from_tensors(cls, tensors: list[torch.Tensor], version: int) -> "FCWeights":
        # detach + clone: the snapshot owns its memory, whatever the caller does with its tensors.
        t = [x.detach().clone() for x in tensors]
        return cls(t[0], t[1], t[2], t[3], version=version)

    @property
    def device(self) -> torch.device:
        return self.fc1_weight.device


def conv_forward(features: torch.Tensor, conv: ConvParams) -> torch.Tensor:
    """ReLU(conv1x1(features)): (n, C, S, S) -> (n, out, S, S)."""
    return F.relu(F.conv2d(features, conv.weight, conv.bias))


def fc_forward(hidden: torch.Tensor, fc1_w: torch.Tensor, fc1_b: torch.Tensor,
               fc2_w: torch.Tensor, fc2_b: torch.Tensor) -> torch.Tensor:
    """The fc part on flattened conv activations (n, F) -> raw tau (n,)."""
    h = F.relu(F.linear(hidden, fc1_w, fc1_b))
    return F.linear(h, fc2_w, fc2_b).squeeze(-1)


def forward(features: torch.Tensor, conv: ConvParams, fc: FCWeights) -> torch.Tensor:
    """D(features; w): raw output tau (n,), unclamped (the L2 loss is on this)."""
    hidden = conv_forward(features, conv).flatten(1)
    return fc_forward(hidden, *fc.tensors())


def score(features: torch.Tensor, conv: ConvParams, fc: FCWeights) -> torch.Tensor:
    """tau clamped to [0, 1]: what the tracker mixes into s = alpha v+ + (1 - alpha) tau (Eq. 9)."""
    with torch.no_grad():
        return forward(features, conv, fc).clamp_(0.0, 1.0)


def init_conv_pca(features: torch.Tensor, out_channels: int) -> ConvParams:
    """The 1x1 conv as the projection on the top ``out_channels`` principal components.

    Every spatial cell of every sample is one C-dimensional observation.  The bias centres the
    projection (bias = -W mean), so that about half of the ReLU inputs are positive and the
    following fc layer sees informative activations from the first step.
    """
    n, c = features.shape[:2]
    if out_channels > c:
        raise ValueError(f"cannot take {out_channels} principal components of {c}-channel features")
    x = features.detach().to(torch.float64).permute(0, 2, 3, 1).reshape(-1, c)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(x.shape[0] - 1, 1)
    # eigh returns ascending eigenvalues; take the largest.  float64 and a fixed sign rule make
    # the result reproducible across runs and BLAS libraries (up to exactly tied eigenvalues).
    _, vecs = torch.linalg.eigh(cov)
    comps = vecs[:, -out_channels:].flip(-1).T  # (out, C), largest first
    idx = comps.abs().argmax(dim=1)
    signs = torch.sign(comps[torch.arange(out_channels), idx])
    signs[signs == 0] = 1.0
    comps = comps * signs[:, None]
    weight = comps.to(features.dtype).reshape(out_channels, c, 1, 1).contiguous()
    bias = -(comps @ mean).to(features.dtype)
    return ConvParams(weight, bias)


def init_fc(in_features: int, hidden: int, seed: int = 0, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32, version: int = 0, scale: Optional[float] = None) -> FCWeights:
    """fc1 small random (seeded generator, so two learners with one seed start identically), fc2 zero.

    fc2 = 0 makes D's first output exactly 0 (so the loss starts at the positives' share); the first
    Gauss-Newton step then fits fc2 on fc1's random features and later steps move everything.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    std = scale if scale is not None else 1.0 / (in_features ** 0.5)
    fc1_w = (torch.randn(hidden, in_features, generator=gen, dtype=torch.float64) * std).to(dtype)
    return FCWeights(
        fc1_w.to(device),
        torch.zeros(hidden, dtype=dtype, device=device),
        torch.zeros(1, hidden, dtype=dtype, device=device),
        torch.zeros(1, dtype=dtype, device=device),
        version=version,
    )
