"""CRACTNet: backbone + fusion neck + Siamese RPN + CRAC heads (R, I), for training and inference.

The online discriminator D is not part of this module: it is fitted per target at run time
(cract_core/online/) and only reads the pooled features that :meth:`CRACTNet.refine` returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import geometry, targets
from .backbone import STRIDE, Backbone, FusionNeck, LastStage, fold_batchnorm_, nanotrack_weights_path
from .config import ExperimentConfig, to_dict
from .crac import BoxRegressor, Identifier
from .nanotrack import BANProposalHead, load_nanotrack_weights, read_nanotrack_state
from .pooling import PyramidRoIAlign, boxes_to_rois
from .rpn import RPNHead, decode_anchor_offsets, make_anchors, score_map_size, select_proposals

# Offsets are divided by these before regression (Faster R-CNN's normalisation): the centre terms
# are ~0.1 of the size and the log-size terms ~0.2, so both losses get similar scale.
OFFSET_STD = (0.1, 0.1, 0.2, 0.2)
# Boxes jittered around the ground truth join the RPN's proposals as candidates for R and I: early
# in training the RPN's own proposals are poor, and R must see misaligned boxes of every kind.
JITTER_BOXES = 16
JITTER_SHIFT = 0.35
JITTER_LOG_SCALE = 0.35
TRAIN_PROPOSALS = 16


@dataclass
class TemplateState:
    """What the tracker keeps of the first frame: the RPN's template kernels and f_init."""

    kernels: tuple[torch.Tensor, torch.Tensor]
    f_init: torch.Tensor  # (1, P, S, S)


@dataclass
class Refinement:
    offsets: torch.Tensor  # (K, 4) Eq. 4 offsets predicted by R (already multiplied by OFFSET_STD)
    refined_xyxy: torch.Tensor  # (K, 4) p~_i in crop pixels
    features: torch.Tensor  # (K, P, S, S) the features classification used (f~_i, or f_i when parallel)
    identity_prob: torch.Tensor  # (K,) v_i+ of the identifier


class CRACTNet(nn.Module):
    def __init__(self, cfg: ExperimentConfig, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone)
        if cfg.backbone.neck == "fuse":
            c = cfg.backbone.fused_channels
            self.neck: nn.Module = FusionNeck(self.backbone.phi3_channels, self.backbone.phi4_channels, c)
        else:
            c = self.backbone.phi4_channels
            self.neck = LastStage()
        if cfg.rpn.type == "ban":
            # NanoTrack's pretrained head, frozen: trained on far more data than ours, it is the
            # proposal stage as it is, and its weights come from the backbone's tensors file.
            self.rpn: nn.Module = BANProposalHead(cfg.tracker.search_size)
            if cfg.backbone.weights != "none":
                load_nanotrack_weights(read_nanotrack_state(nanotrack_weights_path(cfg.backbone)), head=self.rpn.head)
            self.rpn.requires_grad_(False)
            self.score_size = self.rpn.score_size
            self.boxes_per_cell = BANProposalHead.boxes_per_cell
        else:
            self.rpn = RPNHead(c, cfg.rpn.head_channels, len(cfg.rpn.anchor_ratios))
            self.score_size = score_map_size(cfg.tracker.search_size, cfg.tracker.template_size, STRIDE)
            self.boxes_per_cell = len(cfg.rpn.anchor_ratios)
            anchors = make_anchors(cfg.rpn.anchor_ratios, cfg.rpn.anchor_scale, STRIDE, self.score_size, cfg.tracker.search_size)
            self.register_buffer("anchors", anchors, persistent=False)
            self.register_buffer("anchors_xyxy", geometry.cxcywh_to_xyxy(anchors), persistent=False)
        self.pooler = PyramidRoIAlign(c, cfg.crac.pyramid_sizes, STRIDE, cfg.crac.pooling,
                                      pixel_offset=self.backbone.pixel_offset)
        p, s = self.pooler.out_channels, self.pooler.output_size
        self.regressor = BoxRegressor(p, s, cfg.crac.regressor_conv_channels, cfg.crac.regressor_fc)
        self.identifier = Identifier(p, s, cfg.crac.identifier_conv_channels, cfg.crac.identifier_fc)
        self.register_buffer("offset_std", torch.tensor(OFFSET_STD), persistent=False)
        self.to(device)

    # ------------------------------------------------------------------ parameters and checkpoints
    @property
    def head_modules(self) -> tuple[str, ...]:
        """What a heads checkpoint holds: the modules training changes (not a parameter-free neck,
        not NanoTrack's frozen proposal head, which ships in its own tensors file)."""
        names = ["neck", "rpn", "regressor", "identifier"]
        if self.cfg.rpn.type == "ban":
            names.remove("rpn")
        if not any(True for _ in self.neck.parameters()):
            names.remove("neck")
        return tuple(names)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Heads, plus any backbone tensors that training may change (trainable stages)."""
        heads = self.head_modules
        state = {k: v for k, v in self.state_dict().items() if k.split(".")[0] in heads}
        if not self.backbone.frozen:
            # Only the fine-tuned stages: the rest is the ImageNet backbone the package ships, and
            # stays out of the checkpoint (a Lite0 starter keeps to a few MB).
            n = self.cfg.backbone.trainable_stages
            stages = self.backbone.body.trainable_stage_modules()[:n]
            tuned = {id(t) for m in stages for t in (*m.parameters(), *m.buffers())}
            state.update({k: v.detach() for k, v in self.state_dict(keep_vars=True).items()
                          if k.startswith("backbone.") and id(v) in tuned})
        return state

    def load_head_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        unknown = sorted(set(state) - set(own))
        heads = self.head_modules
        missing = sorted(k for k in own if k.split(".")[0] in heads and k not in state)
        if unknown or missing:
            raise KeyError(f"head checkpoint does not fit this model: unknown {unknown[:5]}, missing {missing[:5]}")
        self.load_state_dict(state, strict=False)

    def train_mode(self) -> "CRACTNet":
        """Train the heads; the backbone's batch norms stay in eval (ImageNet statistics), frozen or
        not: tracking batches are small and correlated, and SiamRPN++ freezes them too."""
        self.train()
        if self.backbone.frozen:
            self.backbone.eval()
        if self.cfg.rpn.type == "ban":
            self.rpn.eval()  # NanoTrack's frozen head keeps its own batch-norm statistics
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def fuse_for_inference(self) -> "CRACTNet":
        """Fold the frozen backbone's batch norms into its convolutions and run it channels_last
        (same outputs; bench_stages.py measured the pair as the fastest Lite0 and NanoTrack search
        branch: NanoTrack's 255 crop 5.1 -> 1.8 ms on 2 threads), and fold NanoTrack's frozen head."""
        self.eval()
        if self.backbone.frozen and self.cfg.backbone.name in ("efficientnet_lite0", "nanotrack_v3"):
            fold_batchnorm_(self.backbone.body)
            self.backbone.body.to(memory_format=torch.channels_last)
            self.backbone.channels_last = True
        if self.cfg.rpn.type == "ban":
            fold_batchnorm_(self.rpn)
        return self

    # ------------------------------------------------------------------ shared pieces
    def extract(self, crops_bgr: torch.Tensor) -> torch.Tensor:
        """uint8 BGR crops (B,3,H,W) -> phi_34 (B,C,H/16,W/16)."""
        return self.neck(*self.backbone(crops_bgr))

    def pool(self, features: torch.Tensor, boxes_xyxy: torch.Tensor, batch_index: torch.Tensor | int = 0) -> torch.Tensor:
        return self.pooler(features, boxes_to_rois(boxes_xyxy, batch_index))

    def rpn_outputs(self, kernels: tuple[torch.Tensor, torch.Tensor], phi_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per crop: (target scores (B, A*S*S), decoded boxes (B, A*S*S, 4) xyxy) in crop pixels."""
        if self.cfg.rpn.type == "ban":
            return self.rpn.proposals(kernels, phi_x)
        cls, loc = self.rpn.forward_with_kernels(kernels, phi_x)
        b = cls.shape[0]
        scores = F.softmax(cls.reshape(b, 2, -1), dim=1)[:, 1]
        return scores, decode_anchor_offsets(loc, self.anchors, OFFSET_STD)

    @torch.no_grad()
    def identify(self, features: torch.Tensor, f_init: torch.Tensor) -> torch.Tensor:
        """I's v+ (K,) on features already pooled (K, P, S, S): for a caller that pooled the boxes
        itself (the appearance memory), so the same RoIs are not pooled twice a frame."""
        return F.softmax(self.identifier(features, f_init), dim=1)[:, 1]

    def refine(
        self, phi_x: torch.Tensor, boxes_xyxy: torch.Tensor, f_init: torch.Tensor, batch_index: torch.Tensor | int = 0,
        identify: bool = True,
    ) -> Refinement:
        """The CRAC cascade on K proposals: R -> Eq. 4 -> re-pool -> I (skipped when not ``identify``)."""
        f = self.pool(phi_x, boxes_xyxy, batch_index)
        f_init_k = f_init if isinstance(batch_index, int) else f_init[batch_index]
        if self.cfg.crac.refinement == "none":  # no R: the proposals as they are (the ablation baseline)
            offsets = boxes_xyxy.new_zeros(boxes_xyxy.shape)
            refined = boxes_xyxy
        else:
            offsets = self.regressor(f, f_init_k) * self.offset_std
            refined = geometry.decode_offsets(boxes_xyxy, offsets, fmt="xyxy")
        if self.cfg.crac.refinement == "cascade":
            features = self.pool(phi_x, refined, batch_index)
        else:
            features = f
        identity = self.identify(features, f_init_k) if identify else features.new_zeros(0)
        return Refinement(offsets, refined, features, identity)

    # ------------------------------------------------------------------ inference (one target)
    @torch.no_grad()
    def init_target(self, template_crop: torch.Tensor, box_in_crop_xyxy: torch.Tensor) -> TemplateState:
        phi_z = self.extract(template_crop)
        f_init = self.pool(phi_z, box_in_crop_xyxy.reshape(1, 4).to(phi_z.dtype))
        return TemplateState(self.rpn.kernels(phi_z), f_init)

    @torch.no_grad()
    def propose(
        self, phi_x: torch.Tensor, state: TemplateState, score_adjust: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """N proposals of one search crop: (boxes xyxy (N,4), raw coarse scores c_i (N,), adjusted
        scores used for ranking (N,), all raw scores (A*S*S,)).

        ``score_adjust`` (A*S*S,) multiplies the scores before ranking and NMS (the tracker's scale
        penalty and cosine window); the returned c_i are the RPN's own probabilities.
        """
        scores, boxes = self.rpn_outputs(state.kernels, phi_x)
        scores, boxes = scores[0], boxes[0]
        ranked = scores if score_adjust is None else scores * score_adjust
        rpn = self.cfg.rpn
        props, adjusted, idx = select_proposals(ranked, boxes, rpn.num_proposals, rpn.nms_iou, rpn.pre_nms_top_n)
        return props, scores[idx], adjusted, scores

    # ------------------------------------------------------------------ training
    def compute_losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """L = l_rpn (CE + smooth L1) + l_reg (smooth L1) + l_ide (CE) for a batch of pairs.

        With NanoTrack's pretrained BAN head (``rpn.type: ban``) there is no l_rpn: the head is frozen
        and only gives the proposals that R and I learn on.
        """
        dev = self.offset_std.device
        z = batch["template"].to(dev, non_blocking=True)
        x = batch["search"].to(dev, non_blocking=True)
        gt_z = geometry.xywh_to_xyxy(batch["template_box"].to(dev).float())
        gt_x = geometry.xywh_to_xyxy(batch["search_box"].to(dev).float())
        positive = batch["positive"].to(dev).bool()
        b = z.shape[0]

        phi_z, phi_x = self.extract(z), self.extract(x)
        if self.cfg.rpn.type == "ban":
            with torch.no_grad():
                scores, boxes = self.rpn_outputs(self.rpn.kernels(phi_z), phi_x)
            rpn_cls = rpn_reg = phi_x.new_zeros(())
        else:
            rpn_cls, rpn_reg, scores, boxes = self._anchor_rpn_losses(phi_z, phi_x, gt_x, positive, generator)
        return self._crac_losses(phi_z, phi_x, gt_z, gt_x, positive, scores, boxes, rpn_cls, rpn_reg, generator)

    def _anchor_rpn_losses(self, phi_z: torch.Tensor, phi_x: torch.Tensor, gt_x: torch.Tensor, positive: torch.Tensor,
                           generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """l_rpn of the paper's anchor RPN, and its detached scores and boxes (B, A*S*S[, 4])."""
        tcfg = self.cfg.train
        b = phi_x.shape[0]
        cls, loc = self.rpn(phi_z, phi_x)
        logits = cls.reshape(b, 2, -1).transpose(1, 2)  # (B, A*S*S, 2)
        deltas = loc.reshape(b, 4, -1).transpose(1, 2)  # (B, A*S*S, 4)

        labels = torch.stack([
            targets.assign_anchor_labels(
                self.anchors_xyxy, gt_x[i], bool(positive[i]), tcfg.anchor_pos_iou, tcfg.anchor_neg_iou,
                tcfg.anchor_samples, tcfg.anchor_pos_fraction, generator,
            )
            for i in range(b)
        ])
        rpn_cls = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1), ignore_index=targets.IGNORE)
        pos_mask = labels == 1
        anchor_targets = geometry.encode_offsets(
            self.anchors.unsqueeze(0).expand(b, -1, -1), geometry.xyxy_to_cxcywh(gt_x).unsqueeze(1).expand(-1, self.anchors.shape[0], -1),
            fmt="cxcywh",
        ) / self.offset_std
        rpn_reg = _smooth_l1(deltas[pos_mask], anchor_targets[pos_mask])
        with torch.no_grad():
            scores = F.softmax(logits.detach(), dim=2)[..., 1]
            boxes = decode_anchor_offsets(loc.detach(), self.anchors, OFFSET_STD)
        return rpn_cls, rpn_reg, scores, boxes

    def _crac_losses(self, phi_z: torch.Tensor, phi_x: torch.Tensor, gt_z: torch.Tensor, gt_x: torch.Tensor,
                     positive: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, rpn_cls: torch.Tensor,
                     rpn_reg: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """l_reg and l_ide on the proposals (detached: their distractors are the hard negatives I must
        reject) plus boxes jittered around the target."""
        dev = phi_x.device
        tcfg = self.cfg.train
        b = phi_x.shape[0]
        cand, cand_batch = [], []
        for i in range(b):
            props, _, _ = select_proposals(scores[i], boxes[i], TRAIN_PROPOSALS, self.cfg.rpn.nms_iou, self.cfg.rpn.pre_nms_top_n)
            parts = [props]
            if positive[i]:
                parts.append(targets.jitter_boxes(gt_x[i], JITTER_BOXES, JITTER_SHIFT, JITTER_LOG_SCALE, generator))
            c = torch.cat(parts)
            cand.append(c)
            cand_batch.append(torch.full((c.shape[0],), i, dtype=torch.long, device=dev))
        cand_xyxy = torch.cat(cand)
        cand_b = torch.cat(cand_batch)
        f_init = self.pool(phi_z, gt_z, torch.arange(b, device=dev))

        ref = self.refine(phi_x, cand_xyxy, f_init, cand_b, identify=False)

        reg_idx, ide_idx, ide_lab = [], [], []
        for i in range(b):
            rows = torch.nonzero(cand_b == i).flatten()
            r = targets.regression_samples(cand_xyxy[rows], gt_x[i], bool(positive[i]), tcfg.proposal_iou, tcfg.reg_proposals, generator)
            reg_idx.append(rows[r])
            # I is trained on what it sees at run time: the re-aligned boxes in cascade mode.
            boxes_for_i = ref.refined_xyxy[rows].detach() if self.cfg.crac.refinement == "cascade" else cand_xyxy[rows]
            k, lab = targets.identification_samples(boxes_for_i, gt_x[i], bool(positive[i]), tcfg.proposal_iou, tcfg.ide_proposals, generator)
            ide_idx.append(rows[k])
            ide_lab.append(lab)
        reg_idx_t = torch.cat(reg_idx)
        reg_pred = (ref.offsets[reg_idx_t] / self.offset_std)
        reg_target = geometry.encode_offsets(cand_xyxy[reg_idx_t], gt_x[cand_b[reg_idx_t]], fmt="xyxy") / self.offset_std
        l_reg = _smooth_l1(reg_pred, reg_target)

        ide_idx_t = torch.cat(ide_idx)
        ide_lab_t = torch.cat(ide_lab)
        ide_logits = self.identifier(ref.features[ide_idx_t], f_init[cand_b[ide_idx_t]])
        l_ide = F.cross_entropy(ide_logits, ide_lab_t) if ide_idx_t.numel() else ide_logits.sum() * 0.0

        total = rpn_cls + rpn_reg + l_reg + l_ide
        return {"total": total, "rpn_cls": rpn_cls, "rpn_reg": rpn_reg, "reg": l_reg, "ide": l_ide}


def _smooth_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean smooth L1 over elements; 0 (still in the graph) when there is nothing to regress."""
    if pred.numel() == 0:
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred, target, beta=1.0 / 9.0)


def describe(net: CRACTNet) -> dict:
    """Sizes worth printing (model card, logs)."""
    heads = sum(v.numel() for v in net.head_state_dict().values())
    return {"config": to_dict(net.cfg)["name"], "head_tensors": heads, "score_size": net.score_size}
