"""The concept head: is there a person, a vehicle, a truck, a dog, a suitcase in this frame?

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

Concepts are groups (person, vehicle, animal, fire: what rules and payloads
mostly read) and object categories (car, truck, train, suitcase, ...: what
decoding bans one by one). A group's probability is the largest of its own and
its categories' (`groups`), so "truck 0.9" always comes with "vehicle >= 0.9"
and the two can never contradict each other in a rule or a payload.

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
    # group -> its categories among `concepts`; empty in the heads made before categories
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "concepts": list(self.concepts), "groups": {g: list(m) for g, m in self.groups}}

    @classmethod
    def from_dict(cls, data: dict) -> "ConceptHeadConfig":
        groups = tuple((g, tuple(m)) for g, m in data.get("groups", {}).items())
        return cls(**{**data, "concepts": tuple(data["concepts"]), "groups": groups})

    def membership(self) -> torch.Tensor:
        """(C, C) 0/1: row g has g itself and, for a group, its categories."""
        index = {c: i for i, c in enumerate(self.concepts)}
        member = torch.eye(len(self.concepts))
        for group, categories in self.groups:
            for category in categories:
                member[index[group], index[category]] = 1.0
        return member


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
        self.register_buffer("member", config.membership(), persistent=False)  # (C, C)

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
        """Calibrated concept probabilities (B, C), each group at least as sure as its surest category."""
        return combine_groups(torch.sigmoid(self.logits(grid) * self.calib_scale + self.calib_bias), self.member)


def combine_groups(probs: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """probs (B, C), member (C, C) -> (B, C): a group's probability becomes the max over itself and its categories."""
    if not bool((member.sum(1) > 1).any()):
        return probs
    return (probs[:, None, :] * member[None]).amax(2)  # (B, C, C) -> (B, C)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the known labels only (mask 0: nobody could tell)."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # (B, C)
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


MIN_CALIBRATION_EXAMPLES = 20  # of each class; with fewer, Platt scaling fits noise


def fit_calibration(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Platt scaling: per-concept (scale > 0, bias) that minimise the held-out log loss.

    `mask` is 0 where the label is unknown and otherwise each example's weight.

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
    known = (mask > 0).float()  # mask may carry weights; the minimum counts examples
    positives = (labels * known).sum(0)  # (C,)
    negatives = ((1 - labels) * known).sum(0)  # (C,)
    enough = (positives >= MIN_CALIBRATION_EXAMPLES) & (negatives >= MIN_CALIBRATION_EXAMPLES)
    scale = torch.where(enough, log_scale.detach().exp(), torch.ones(C))
    return scale, torch.where(enough, bias.detach(), torch.zeros(C))
