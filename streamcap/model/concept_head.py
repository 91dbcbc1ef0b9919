"""The concept head: is there a person, a vehicle, an animal, a fire in this frame?

A multi-label classifier on the encoder's grid, trained from the words of the
training captions (Fang et al. 2015, "From captions to visual concepts and
back"): an image is positive for a concept when its captions name it. Every
grid cell scores every concept, and the cells are pooled by multiple-instance
pooling, so one small car in one corner of a wide car park is enough (the mean
of the grid, which a linear probe sees, dilutes it 49 times). A global score
on the mean grid is added for concepts that are the whole scene (a crowd).

Pooling is log-sum-exp with a learned sharpness per concept: between the mean
(sharpness 0) and the max (sharpness large), and smooth, so every cell gets
gradient. The output is calibrated by a per-concept temperature and bias fit
on held-out images after training (`calibrate`), so 0.7 means about 70 % of
such frames show the concept.

Shapes: B batch, P grid cells, D encoder feature, C concepts, H hidden.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ConceptHeadConfig:
    concepts: tuple[str, ...]
    feature_dim: int
    hidden_dim: int = 256
    dropout: float = 0.3
    pooling: str = "lse"  # "lse" (multiple instance), "max", "mean" (a linear probe on the mean grid)

    def to_dict(self) -> dict:
        return {**asdict(self), "concepts": list(self.concepts)}

    @classmethod
    def from_dict(cls, data: dict) -> "ConceptHeadConfig":
        return cls(**{**data, "concepts": tuple(data["concepts"])})


class ConceptHead(nn.Module):
    def __init__(self, config: ConceptHeadConfig):
        super().__init__()
        self.config = config
        C, D, H = len(config.concepts), config.feature_dim, config.hidden_dim
        self.cell = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(H, C))
        self.scene = nn.Linear(D, C)
        self.log_sharpness = nn.Parameter(torch.full((C,), math.log(4.0)))
        # Calibration (Platt scaling per concept), fit after training; identity until then.
        self.register_buffer("calib_scale", torch.ones(C))
        self.register_buffer("calib_bias", torch.zeros(C))

    def logits(self, grid: torch.Tensor) -> torch.Tensor:
        """Uncalibrated concept logits (B, C)."""
        scene = self.scene(grid.mean(1))  # (B, C)
        if self.config.pooling == "mean":
            return scene
        cells = self.cell(grid)  # (B, P, C)
        if self.config.pooling == "max":
            return cells.max(1).values + scene  # (B, C)
        r = self.log_sharpness.exp()  # (C,)
        P = grid.shape[1]
        pooled = (torch.logsumexp(cells * r, dim=1) - math.log(P)) / r  # (B, C)
        return pooled + scene

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """Calibrated concept probabilities (B, C)."""
        return torch.sigmoid(self.logits(grid) * self.calib_scale + self.calib_bias)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the known labels only (mask 0: nobody could tell)."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # (B, C)
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


MIN_CALIBRATION_EXAMPLES = 20  # of each class; with fewer, Platt scaling fits noise


def fit_calibration(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Platt scaling: per-concept (scale > 0, bias) that minimise the held-out log loss.

    The scale is kept positive (a calibration may soften or sharpen the head,
    never invert it), and a concept with too few held-out positives or
    negatives keeps the identity.
    """
    C = logits.shape[1]
    log_scale = torch.zeros(C, requires_grad=True)
    bias = torch.zeros(C, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = masked_bce(logits * log_scale.exp() + bias, labels, mask)
        loss.backward()
        return loss

    optimizer.step(closure)
    positives = (labels * mask).sum(0)  # (C,)
    negatives = ((1 - labels) * mask).sum(0)  # (C,)
    enough = (positives >= MIN_CALIBRATION_EXAMPLES) & (negatives >= MIN_CALIBRATION_EXAMPLES)
    scale = torch.where(enough, log_scale.detach().exp(), torch.ones(C))
    return scale, torch.where(enough, bias.detach(), torch.zeros(C))
