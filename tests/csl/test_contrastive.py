"""Entropy sampler and contrastive loss: patch statistics, draw frequencies, skips, and vectorised == loop oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.csl_segmentation.contrastive import (
    PatchDraws,
    bernoulli_entropy_bits,
    contrastive_loss,
    contrastive_loss_loop,
    draw_patches,
)
from sustainml_exp.families.csl_segmentation.model import shift_input

pytestmark = pytest.mark.usefixtures("one_thread")


def _entropy_bits(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _weight(p: float) -> float:
    return max(1.0 - _entropy_bits(p), 1e-3)  # the spec's floor, not the module constant


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_case(batch: int, n_classes: int, height: int, width: int, seed: int,
                 dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = _generator(seed)
    conf = torch.sigmoid(2 * torch.randn(batch, n_classes, height, width, generator=gen, dtype=dtype))
    images = shift_input(torch.rand(batch, 3, height, width, generator=gen, dtype=dtype))
    return images, conf.requires_grad_()


def _within(count: float, expected: float, sd: float, n_sd: float = 6.0) -> bool:
    return abs(count - expected) <= n_sd * sd + 1.0


def test_entropy_is_in_bits_and_zero_at_certain_pixels() -> None:
    p = torch.tensor([0.0, 0.5, 0.8, 1.0], dtype=torch.float64)
    torch.testing.assert_close(bernoulli_entropy_bits(p),
                               torch.tensor([0.0, 1.0, _entropy_bits(0.8), 0.0], dtype=torch.float64))


def test_patch_statistics_and_weights_match_a_plain_computation() -> None:
    _, conf = _random_case(2, 3, 13, 17, seed=0)
    size, stride = 5, 3
    draws = draw_patches(conf, size, stride, 4, _generator(1))
    grid_h, grid_w = (13 - size) // stride + 1, (17 - size) // stride + 1
    assert draws.mean_conf.shape == draws.mean_entropy.shape == (2, 3, grid_h, grid_w)
    values = conf.detach().numpy()
    entropy = np.vectorize(_entropy_bits)(values)
    for b in range(2):
        for k in range(3):
            for gy in range(grid_h):
                for gx in range(grid_w):
                    window = np.s_[b, k, gy * stride:gy * stride + size, gx * stride:gx * stride + size]
                    assert abs(float(draws.mean_conf[b, k, gy, gx]) - values[window].mean()) < 1e-12
                    assert abs(float(draws.mean_entropy[b, k, gy, gx]) - entropy[window].mean()) < 1e-12
    assert torch.equal(draws.weights, (1.0 - draws.mean_entropy).clamp_min(1e-3))
    assert not draws.weights.requires_grad and not draws.mean_conf.requires_grad


def test_a_paper_sized_crop_has_a_13_by_13_grid() -> None:
    draws = draw_patches(torch.full((1, 1, 300, 300), 0.3), 50, 20, 10, _generator(0))
    assert draws.mean_conf.shape[-2:] == (13, 13)
    rows, cols = draws.top_left()
    assert int(rows.max()) <= 240 and int(cols.max()) <= 240


def test_draw_frequencies_follow_max_of_one_minus_entropy_and_the_floor() -> None:
    # 20x20 maps, 5x5 patches on a stride-5 grid: 16 disjoint patches of constant value.
    conf = torch.empty(1, 2, 20, 20, dtype=torch.float64)
    conf[0, 0, :, :10] = 0.5  # 1 bit: only the 1e-3 floor keeps these patches
    conf[0, 0, :, 10:] = 0.8
    for gy, value in enumerate((0.1, 0.3, 0.6, 0.95)):
        conf[0, 1, gy * 5:(gy + 1) * 5] = value
    n = 200_000
    draws = draw_patches(conf, 5, 5, n, _generator(0))
    assert draws.index.shape == (1, 2, n)
    for k in range(2):
        patch_value = conf[0, k, ::5, ::5].reshape(-1).tolist()
        weights = np.array([_weight(v) for v in patch_value])
        probs = weights / weights.sum()
        counts = torch.bincount(draws.index[0, k], minlength=16).numpy()
        for g in range(16):
            sd = math.sqrt(n * probs[g] * (1 - probs[g]))
            assert _within(counts[g], n * probs[g], sd), (k, g, counts[g], n * probs[g])
    # The floor is what gives the 1-bit half its ~0.36 % share.
    assert 0 < int((draws.index[0, 0] % 4 < 2).sum()) < 0.01 * n


def test_positive_frequency_equals_the_patch_mean_confidence() -> None:
    batch = 8000
    conf = torch.empty(batch, 2, 20, 20)
    for gy, value in enumerate((0.1, 0.9, 0.2, 0.8)):
        conf[:, 0, gy * 5:(gy + 1) * 5] = value
    # Stripes of certain pixels: every patch has mean 0.4 but no pixel is 0.4.
    conf[:, 1] = (torch.arange(20) % 5 < 2).float()
    draws = draw_patches(conf, 5, 5, 1, _generator(0))
    grid_row = (draws.index[:, 0, 0] // 4).numpy()
    positive = draws.positive[:, 0, 0].numpy()
    for gy, value in enumerate((0.1, 0.9, 0.2, 0.8)):
        flags = positive[grid_row == gy]
        assert len(flags) > 500
        assert _within(flags.sum(), value * len(flags), math.sqrt(len(flags) * value * (1 - value))), (gy, value)
    striped = draws.positive[:, 1, 0].numpy()
    assert _within(striped.sum(), 0.4 * batch, math.sqrt(batch * 0.24))


def test_anchor_ranks_are_uniform_over_each_class_pooled_positives() -> None:
    _, conf = _random_case(3, 2, 20, 20, seed=3)
    n_anchors = 30_000
    draws = draw_patches(conf, 5, 5, 4, _generator(0), n_anchors=n_anchors)
    for k in range(2):
        n_pos = int(draws.positive[:, k].sum())
        assert n_pos > 0
        counts = torch.bincount(draws.anchor_rank[k], minlength=n_pos).numpy()
        assert len(counts) == n_pos  # no rank at or beyond the count
        p = 1 / n_pos
        assert all(_within(c, n_anchors * p, math.sqrt(n_anchors * p * (1 - p))) for c in counts)


def test_same_seed_gives_the_same_draws() -> None:
    _, conf = _random_case(2, 3, 24, 24, seed=0)
    first, second = (draw_patches(conf, 8, 4, 6, _generator(5)) for _ in range(2))
    assert torch.equal(first.index, second.index)
    assert torch.equal(first.positive, second.positive)
    assert torch.equal(first.anchor_rank, second.anchor_rank)


@pytest.mark.parametrize("similarity", ["mse", "ce"])
@pytest.mark.parametrize("batch,n_classes,height,width,size,stride,n", [
    (2, 4, 40, 40, 10, 5, 10),
    (3, 2, 33, 27, 7, 4, 5),
    (1, 3, 24, 31, 8, 3, 12),
    (2, 1, 20, 20, 6, 2, 8),
])
def test_vectorised_loss_equals_the_loop_oracle_in_value_and_gradient(similarity: str, batch: int, n_classes: int,
                                                                      height: int, width: int, size: int,
                                                                      stride: int, n: int) -> None:
    images, conf = _random_case(batch, n_classes, height, width, seed=batch * 100 + n_classes)
    draws = draw_patches(conf, size, stride, n, _generator(7))
    fast, reason = contrastive_loss(images, conf, draws, similarity)
    assert reason == ""
    (fast_grad,) = torch.autograd.grad(fast, conf)
    slow, slow_reason = contrastive_loss_loop(images, conf, draws, similarity)
    assert slow_reason == ""
    (slow_grad,) = torch.autograd.grad(slow, conf)
    assert fast.dtype == torch.float64 and math.isfinite(fast.item())
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-9)
    assert bool(slow_grad.abs().max() > 0)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-6, atol=1e-10)


def test_gradient_reaches_only_the_drawn_patches_of_their_class() -> None:
    images, conf = _random_case(2, 3, 30, 30, seed=1)
    draws = draw_patches(conf, 6, 4, 5, _generator(2))
    loss, reason = contrastive_loss(images, conf, draws, "mse")
    assert reason == ""
    loss.backward()
    covered = torch.zeros_like(conf, dtype=torch.bool)
    rows, cols = draws.top_left()
    for b in range(2):
        for k in range(3):
            for r, c in zip(rows[b, k].tolist(), cols[b, k].tolist()):
                covered[b, k, r:r + 6, c:c + 6] = True
    assert bool(conf.grad[~covered].eq(0).all())
    assert bool(conf.grad[covered].ne(0).any())


def test_similarity_choice_changes_the_loss() -> None:
    images, conf = _random_case(2, 2, 20, 20, seed=4)
    draws = draw_patches(conf, 5, 5, 6, _generator(0))
    mse, _ = contrastive_loss(images, conf, draws, "mse")
    ce, _ = contrastive_loss(images, conf, draws, "ce")
    assert not torch.isclose(mse, ce)


def test_hand_computed_loss_of_one_class_with_one_positive_and_one_negative() -> None:
    # One image, one class, two 1x1 patches on a 1x2 map: the positive p is the only anchor candidate,
    # so loss = 10 anchors * [-s(p, p) + s(p, m)] / (10^2 * 1) with s = -mean squared difference over RGB.
    conf = torch.tensor([[[[0.9, 0.2]]]], dtype=torch.float64, requires_grad=True)
    images = torch.tensor([[[[1.0, 0.5]], [[0.5, 0.5]], [[0.25, 1.0]]]], dtype=torch.float64)
    draws = PatchDraws(patch_size=1, stride=1, grid_w=2, index=torch.tensor([[[0, 1]]]),
                       positive=torch.tensor([[[True, False]]]), anchor_rank=torch.zeros(1, 10, dtype=torch.long),
                       mean_conf=conf.detach(), mean_entropy=torch.zeros(1, 1, 1, 2, dtype=torch.float64),
                       weights=torch.ones(1, 1, 1, 2, dtype=torch.float64))
    p = 0.9 * images[0, :, 0, 0]
    m = 0.2 * images[0, :, 0, 1]
    expected = 10 * (-((p - m) ** 2).mean()) / 100
    for loss_fn in (contrastive_loss, contrastive_loss_loop):
        loss, reason = loss_fn(images, conf, draws, "mse")
        assert reason == ""
        torch.testing.assert_close(loss, expected)


def test_hand_computed_loss_of_two_classes_with_the_inter_class_term() -> None:
    # One image, K = 2, three 1x1 patches per class on a 1x4 map, one anchor per class.
    # Class 0: positive a0 = c0[0] I0; negatives c0[1] I1, c0[3] I3. Class 1: positives c1[2] I2 and
    # a1 = c1[3] I3 (its anchor, rank 1); negative c1[1] I1. With s = -mean squared difference over RGB:
    # class 0: intra = -s(a0, a0) + lse(s(a0, c0[1] I1), s(a0, c0[3] I3)); inter = -s(a0, a0) + lse over class 1's
    #          positives of s(a0, .);
    # class 1: intra = sum over its two positives p of [-s(a1, p) + s(a1, c1[1] I1)]; inter = the same with
    #          s(a1, a0), class 0's only positive, in place of the negative. Divided by 1^2 anchors x 1 image.
    c0 = [0.9, 0.3, 0.6, 0.2]
    c1 = [0.1, 0.7, 0.8, 0.95]
    conf = torch.tensor([[[c0], [c1]]], dtype=torch.float64, requires_grad=True)
    pixels = [[1.0, 0.5, 0.25], [0.5, 0.5, 1.0], [0.2, 0.9, 0.4], [0.7, 0.1, 0.6]]
    images = torch.tensor(pixels, dtype=torch.float64).T.reshape(1, 3, 1, 4)
    draws = PatchDraws(patch_size=1, stride=1, grid_w=4, index=torch.tensor([[[0, 1, 3], [2, 3, 1]]]),
                       positive=torch.tensor([[[True, False, False], [True, True, False]]]),
                       anchor_rank=torch.tensor([[0], [1]]), mean_conf=conf.detach(),
                       mean_entropy=torch.zeros(1, 2, 1, 4, dtype=torch.float64),
                       weights=torch.ones(1, 2, 1, 4, dtype=torch.float64))

    def patch(c: list[float], j: int) -> list[float]:
        return [c[j] * v for v in pixels[j]]

    def s(x: list[float], y: list[float]) -> float:
        return -sum((u - v) ** 2 for u, v in zip(x, y)) / 3

    def lse(*values: float) -> float:
        return math.log(sum(math.exp(v) for v in values))

    a0, a1, p1 = patch(c0, 0), patch(c1, 3), patch(c1, 2)
    class0 = (-s(a0, a0) + lse(s(a0, patch(c0, 1)), s(a0, patch(c0, 3)))) + (-s(a0, a0) + lse(s(a0, p1), s(a0, a1)))
    class1 = sum(-s(a1, p) + s(a1, patch(c1, 1)) for p in (p1, a1)) + sum(-s(a1, p) + s(a1, a0) for p in (p1, a1))
    expected = torch.tensor(class0 + class1, dtype=torch.float64)
    for loss_fn in (contrastive_loss, contrastive_loss_loop):
        loss, reason = loss_fn(images, conf, draws, "mse")
        assert reason == ""
        torch.testing.assert_close(loss, expected)
    # Without the inter-class term the loss would be the intra terms alone: the inter term is there.
    intra_only = (-s(a0, a0) + lse(s(a0, patch(c0, 1)), s(a0, patch(c0, 3)))) + sum(
        -s(a1, p) + s(a1, patch(c1, 1)) for p in (p1, a1))
    assert abs(float(expected) - intra_only) > 1e-3


@pytest.mark.parametrize("fill,reason", [(1.0, "class 1 has no negative patch in the batch"),
                                         (0.0, "class 1 has no positive patch in the batch")])
def test_a_class_without_positives_or_negatives_skips_the_step(fill: float, reason: str) -> None:
    images, conf = _random_case(2, 3, 20, 20, seed=0)
    conf = conf.detach().clone()
    conf[:, 1] = fill
    draws = draw_patches(conf, 5, 5, 6, _generator(0))
    assert draws.skip_reason() == reason
    for loss_fn in (contrastive_loss, contrastive_loss_loop):
        assert loss_fn(images, conf, draws, "mse") == (None, reason)


@pytest.mark.parametrize("similarity", ["ce", "mse"])
def test_loss_stays_finite_on_maps_of_exact_zeros_and_ones(similarity: str) -> None:
    conf = torch.zeros(2, 2, 40, 40)
    conf[:, 0, :, 20:] = 1.0
    conf[:, 1, 20:, :] = 1.0
    conf.requires_grad_()
    images = torch.rand(2, 3, 40, 40, generator=_generator(0))
    images[:, :, :5] = 1.0  # attended values of exactly 1 as well as 0
    images = shift_input(images)
    draws = draw_patches(conf, 10, 5, 10, _generator(3))
    results = []
    for loss_fn in (contrastive_loss, contrastive_loss_loop):
        loss, reason = loss_fn(images, conf, draws, similarity)
        assert reason == ""
        (grad,) = torch.autograd.grad(loss, conf)
        assert math.isfinite(loss.item()) and bool(torch.isfinite(grad).all())
        results.append((loss, grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-3, atol=1e-6)


def test_bad_arguments_fail_in_one_line() -> None:
    images, conf = _random_case(1, 2, 10, 10, seed=0)
    with pytest.raises(ConfigError, match="patch_size=12 is larger than the 10x10 maps"):
        draw_patches(conf, 12, 2, 3, _generator(0))
    draws = draw_patches(conf, 5, 5, 3, _generator(0))
    with pytest.raises(ConfigError, match="similarity='cosine' is not allowed; allowed: mse, ce"):
        contrastive_loss(images, conf, draws, "cosine")
