"""Entropy-weighted patch sampling and the intra/inter-class contrastive loss (D3.2 Section 3), vectorised.

One training step: ``draw_patches`` makes every random choice of the step from the detached confidence maps
(patch statistics, drawn patches, positive flags, anchors) and ``contrastive_loss`` turns those choices into a
differentiable loss whose gradient reaches the maps only through the attended patch contents C_k * I.
``contrastive_loss_loop`` computes the same loss with plain Python loops over images, classes and patches (the
way the reference code does) and serves as the test oracle: on the same draws both agree to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.csl_segmentation.config import SIMILARITIES

N_ANCHORS = 10  # anchors per class and step; the reference fixes 10 whatever the number of drawn patches
MIN_WEIGHT = 1e-3  # sampling weight floor: a maximally uncertain patch is still drawn now and then
CE_EPS = 1e-6  # the compared patch is clamped to [eps, 1 - eps] so that the CE similarity stays finite


@dataclass
class PatchDraws:
    """Every random choice of one step, for a batch of B images, K classes and n patches per image and class.

    Candidate patches lie on a grid: patch g = gy * grid_w + gx has its top-left pixel at (gy, gx) * stride.
    A class's pooled patches are those of all images, image after image, each image's in draw order; its
    positives in that order are what ``anchor_rank`` counts.
    """

    patch_size: int
    stride: int
    grid_w: int
    index: torch.Tensor  # (B, K, n) int64: grid index of each drawn patch
    positive: torch.Tensor  # (B, K, n) bool: the drawn patch is a positive of its class
    anchor_rank: torch.Tensor  # (K, n_anchors) int64: rank of each anchor among the class's pooled positives
    mean_conf: torch.Tensor  # (B, K, grid_h, grid_w): A, mean confidence per candidate patch
    mean_entropy: torch.Tensor  # (B, K, grid_h, grid_w): B, mean per-pixel Bernoulli entropy in bits
    weights: torch.Tensor  # (B, K, grid_h, grid_w): max(1 - B, MIN_WEIGHT), unnormalised sampling weights

    @property
    def n_patches(self) -> int:
        return self.index.shape[-1]

    @property
    def n_anchors(self) -> int:
        return self.anchor_rank.shape[-1]

    def top_left(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel row and column of each drawn patch's top-left corner, both (B, K, n)."""
        return (self.index // self.grid_w) * self.stride, (self.index % self.grid_w) * self.stride

    def skip_reason(self) -> str:
        """Why the step cannot be contrasted ("" when it can): a class without a positive or a negative patch."""
        n_pos = self.positive.sum(dim=(0, 2)).tolist()
        n_all = self.positive.shape[0] * self.positive.shape[2]
        for k, count in enumerate(n_pos):
            if count == 0:
                return f"class {k} has no positive patch in the batch"
            if count == n_all:
                return f"class {k} has no negative patch in the batch"
        return ""


def bernoulli_entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy of Bernoulli(p) in bits; xlogy makes 0 log 0 = 0, so p = 0 or 1 gives exactly 0."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / math.log(2.0)


def draw_patches(conf: torch.Tensor, patch_size: int, stride: int, n_patches: int,
                 generator: torch.Generator | None = None, n_anchors: int = N_ANCHORS) -> PatchDraws:
    """Draw n patches per image and class with weights max(1 - B, 1e-3), flag each positive with probability A.

    ``conf``: (B, K, H, W) confidence maps; only their values are read (the weights are not differentiated).
    Random numbers come from ``generator`` on its own device (a CPU generator gives the same draws whatever
    device the maps are on); the draws are returned on the maps' device. As in the reference code, the positive
    flag is drawn once per candidate patch and step, so a patch drawn twice has the same flag both times.
    """
    if conf.dim() != 4:
        raise ValueError(f"conf must be (B, K, H, W), got shape {tuple(conf.shape)}")
    batch, n_classes, height, width = conf.shape
    if patch_size > min(height, width):
        raise ConfigError(f"patch_size={patch_size} is larger than the {height}x{width} maps; "
                          f"allowed: patch_size <= {min(height, width)}")
    if stride < 1 or n_patches < 1 or n_anchors < 1:
        raise ConfigError(f"stride={stride}, n_patches={n_patches}, n_anchors={n_anchors}; allowed: each >= 1")
    with torch.no_grad():
        conf = conf.detach()
        mean_conf = F.avg_pool2d(conf, patch_size, stride).clamp(0.0, 1.0)
        mean_entropy = F.avg_pool2d(bernoulli_entropy_bits(conf), patch_size, stride)
        weights = (1.0 - mean_entropy).clamp_min(MIN_WEIGHT)
        grid_w = weights.shape[-1]
        rng_device = generator.device if generator is not None else conf.device
        flat_weights = weights.reshape(batch * n_classes, -1).to(rng_device)
        index = torch.multinomial(flat_weights, n_patches, replacement=True, generator=generator)
        index = index.reshape(batch, n_classes, n_patches)
        grid_flags = torch.bernoulli(mean_conf.reshape(batch, n_classes, -1).to(rng_device), generator=generator)
        positive = grid_flags.gather(2, index).bool()
        # Anchors as uniform ranks among each class's pooled positives, fixed here so that every implementation
        # of the loss contrasts the same anchors; float64 keeps floor(u * count) unbiased and below count.
        n_pos = positive.sum(dim=(0, 2))
        uniform = torch.rand(n_classes, n_anchors, generator=generator, dtype=torch.float64, device=rng_device)
        anchor_rank = torch.minimum((uniform * n_pos[:, None]).floor().long(), (n_pos - 1).clamp_min(0)[:, None])
    device = conf.device
    return PatchDraws(patch_size=patch_size, stride=stride, grid_w=grid_w, index=index.to(device),
                      positive=positive.to(device), anchor_rank=anchor_rank.to(device), mean_conf=mean_conf,
                      mean_entropy=mean_entropy, weights=weights)


def _check_inputs(images: torch.Tensor, conf: torch.Tensor, draws: PatchDraws, similarity: str) -> None:
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity={similarity!r} is not allowed; allowed: {', '.join(SIMILARITIES)}")
    if images.dim() != 4 or conf.dim() != 4 or images.shape[0] != conf.shape[0] \
            or images.shape[-2:] != conf.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and conf {tuple(conf.shape)} must be (B, C, H, W) and "
                         f"(B, K, H, W) with the same B, H, W")
    if tuple(draws.index.shape[:2]) != tuple(conf.shape[:2]):
        raise ValueError(f"draws for {tuple(draws.index.shape[:2])} (images, classes) do not match conf "
                         f"{tuple(conf.shape)}")


def _gather_attended_patches(images: torch.Tensor, conf: torch.Tensor, draws: PatchDraws) -> torch.Tensor:
    """(K, B * n, C * P * P): the chosen patches of C_k * I, pooled per class (image after image, draw order).

    Index arithmetic on the flattened planes reads only the chosen pixels; the attended image itself
    (B x K x C x H x W) is never formed. The gather's backward scatters into the maps' pixels.
    """
    batch, n_classes, height, width = conf.shape
    n_colours = images.shape[1]
    size = draws.patch_size
    n = draws.n_patches
    rows, cols = draws.top_left()
    offsets = torch.arange(size, device=conf.device)
    offsets = (offsets[:, None] * width + offsets[None, :]).reshape(-1)
    pixel = ((rows * width + cols)[..., None] + offsets).reshape(batch, n_classes * n * size * size)
    conf_patches = conf.reshape(batch, n_classes, height * width).gather(2, pixel.view(batch, n_classes, -1))
    image_patches = images.reshape(batch, n_colours, height * width).gather(
        2, pixel[:, None, :].expand(batch, n_colours, -1))
    conf_patches = conf_patches.view(batch, n_classes, n, 1, size * size)
    image_patches = image_patches.view(batch, n_colours, n_classes, n, size * size).permute(0, 2, 3, 1, 4)
    attended = conf_patches * image_patches  # (B, K, n, C, P*P)
    return attended.transpose(0, 1).reshape(n_classes, batch * n, n_colours * size * size)


def _pairwise_similarity(anchors: torch.Tensor, others: torch.Tensor, similarity: str) -> torch.Tensor:
    """s(a, x) for every row a of anchors (N, D) and x of others (M, D): (N, M), each a single matmul."""
    dim = anchors.shape[1]
    if similarity == "mse":
        sq_anchors = (anchors * anchors).sum(1)
        sq_others = (others * others).sum(1)
        return -(sq_anchors[:, None] + sq_others[None, :] - 2.0 * anchors @ others.T) / dim
    clamped = others.clamp(CE_EPS, 1.0 - CE_EPS)
    log_one = torch.log2(clamped)
    log_zero = torch.log2(1.0 - clamped)
    # x1 log x2 + (1 - x1) log(1 - x2) = x1 (log x2 - log(1 - x2)) + log(1 - x2)
    return (anchors @ (log_one - log_zero).T + log_zero.sum(1)[None, :]) / dim


def contrastive_loss(images: torch.Tensor, conf: torch.Tensor, draws: PatchDraws,
                     similarity: str) -> tuple[torch.Tensor | None, str]:
    """sum_k (intra_k + inter_k) / (n_anchors^2 * B), or (None, reason) when the step must be skipped.

    ``images``: (B, C, H, W), already shifted by ``shift_input``; ``conf``: (B, K, H, W) the maps the draws were
    made from. For class k with pooled positives P_k, negatives N_k and anchors a (drawn from P_k):
    intra_k = sum_a sum_{p in P_k} [-s(a, p) + logsumexp_{m in N_k} s(a, m)], and inter_k the same with the
    positives of every other class in place of N_k.
    """
    _check_inputs(images, conf, draws, similarity)
    reason = draws.skip_reason()
    if reason:
        return None, reason
    batch, n_classes = conf.shape[:2]
    patches = _gather_attended_patches(images, conf, draws)  # (K, M, D)
    pooled = patches.shape[1]
    positive = draws.positive.transpose(0, 1).reshape(n_classes, pooled)
    # The rank-r positive sits where the running count of positives first reaches r + 1.
    anchor_at = torch.searchsorted(positive.long().cumsum(1), draws.anchor_rank + 1)
    anchors = patches.gather(1, anchor_at[..., None].expand(-1, -1, patches.shape[2]))  # (K, A, D)
    n_anchors = anchors.shape[1]
    sim = _pairwise_similarity(anchors.reshape(n_classes * n_anchors, -1), patches.reshape(n_classes * pooled, -1),
                               similarity).view(n_classes, n_anchors, n_classes, pooled)
    classes = torch.arange(n_classes, device=conf.device)
    own = sim[classes, :, classes]  # (K, A, M): anchors against their own class's pooled patches
    pos_weight = positive.to(sim.dtype)
    n_pos = pos_weight.sum(1)[:, None]  # (K, 1)
    pull = -(own * pos_weight[:, None, :]).sum(2)  # (K, A): -sum_p s(a, p)
    negatives_lse = torch.logsumexp(own.masked_fill(positive[:, None, :], float("-inf")), dim=2)
    total = (pull + n_pos * negatives_lse).sum()
    if n_classes > 1:  # with one class there are no other classes to contrast against
        other_positive = positive[None, :, :] & ~torch.eye(n_classes, dtype=torch.bool, device=conf.device)[..., None]
        others = sim.masked_fill(~other_positive[:, None], float("-inf")).flatten(2)
        total = total + (pull + n_pos * torch.logsumexp(others, dim=2)).sum()
    return total / (n_anchors * n_anchors * batch), ""


def contrastive_loss_loop(images: torch.Tensor, conf: torch.Tensor, draws: PatchDraws,
                          similarity: str) -> tuple[torch.Tensor | None, str]:
    """Plain-loop oracle of ``contrastive_loss``: one slice per drawn patch, one similarity call per anchor."""
    _check_inputs(images, conf, draws, similarity)
    batch, n_classes = conf.shape[:2]
    size = draws.patch_size
    # Host lists once, so that the loops time the per-patch kernels and not one device sync per index.
    rows, cols = (t.tolist() for t in draws.top_left())
    flags = draws.positive.tolist()
    positives: list[list[torch.Tensor]] = [[] for _ in range(n_classes)]
    negatives: list[list[torch.Tensor]] = [[] for _ in range(n_classes)]
    for b in range(batch):
        for k in range(n_classes):
            for j in range(draws.n_patches):
                r, c = rows[b][k][j], cols[b][k][j]
                patch = conf[b, k, r:r + size, c:c + size] * images[b, :, r:r + size, c:c + size]
                (positives if flags[b][k][j] else negatives)[k].append(patch)
    for k in range(n_classes):
        if not positives[k]:
            return None, f"class {k} has no positive patch in the batch"
        if not negatives[k]:
            return None, f"class {k} has no negative patch in the batch"

    def similarity_to(anchor: torch.Tensor, patches: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(patches)
        if similarity == "mse":
            return -((anchor - stacked) ** 2).mean(dim=(1, 2, 3))
        target = stacked.clamp(CE_EPS, 1.0 - CE_EPS)
        return (anchor * torch.log2(target) + (1 - anchor) * torch.log2(1 - target)).mean(dim=(1, 2, 3))

    total = conf.new_zeros(())
    for k in range(n_classes):
        other_positives = [p for other in range(n_classes) if other != k for p in positives[other]]
        for rank in draws.anchor_rank[k].tolist():
            anchor = positives[k][rank]
            to_positives = similarity_to(anchor, positives[k])
            total = total + (-to_positives + torch.logsumexp(similarity_to(anchor, negatives[k]), dim=0)).sum()
            if other_positives:
                total = total + (-to_positives + torch.logsumexp(similarity_to(anchor, other_positives), dim=0)).sum()
    return total / (draws.n_anchors ** 2 * batch), ""
