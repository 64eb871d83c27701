"""Post-processing, Dice and the intensity-threshold baseline on hand-made masks and images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.csl_segmentation.evaluate import (
    THRESHOLD_CANDIDATES,
    channel_dice,
    dice,
    fit_intensity_threshold,
    greyscale,
    mean_channel_dice,
    postprocess,
    threshold_predict,
)


def _square(size: int = 40, lo: int = 8, hi: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


@pytest.mark.parametrize("mode", ["paper", "open3_close1"])
def test_opening_removes_a_speck_and_keeps_the_body(mode: str) -> None:
    mask = _square()
    mask[2, 36] = True  # isolated pixel, far from the square
    mask[3, 3] = True
    out = postprocess(mask, mode)
    assert out.dtype == bool and out.shape == mask.shape
    assert not out[2, 36] and not out[3, 3]
    assert out[12:28, 12:28].all()  # the inside of the square survives
    assert not out[:6].any() and not out[:, :6].any()


@pytest.mark.parametrize("mode", ["paper", "open3_close1"])
def test_closing_fills_a_one_pixel_hole(mode: str) -> None:
    mask = _square()
    mask[20, 20] = False
    assert postprocess(mask, mode)[20, 20]


def test_the_two_readings_differ_on_a_three_pixel_hole() -> None:
    # Closing with disk(1) alone cannot fill the centre of a 3x3 hole; the paper's closing with disk(3) can.
    mask = _square()
    mask[19:22, 19:22] = False
    paper, other = postprocess(mask, "paper"), postprocess(mask, "open3_close1")
    assert paper[19:22, 19:22].all()
    assert not other[20, 20]
    assert not np.array_equal(paper, other)


def test_outside_the_image_is_background_as_in_scipy_ndimage() -> None:
    # A closing's erosion sees background beyond the border: on a mask that fills the image, the paper's closing
    # at radius 3 strips a 3-pixel band and the closing at radius 1 a 1-pixel ring (scikit-image's closing would
    # keep the mask whole).
    full = np.ones((12, 12), dtype=bool)
    paper = postprocess(full, "paper")
    assert not paper[:3].any() and not paper[-3:].any() and not paper[:, :3].any() and not paper[:, -3:].any()
    assert paper[4:8, 4:8].all() and paper[3:9, 3:9].sum() == 32  # disk(3)-rounded corners
    other = postprocess(full, "open3_close1")
    assert other[1:-1, 1:-1].all() and other.sum() == 10 * 10


def test_postprocess_accepts_a_torch_mask_and_rejects_unknown_modes() -> None:
    mask = _square()
    assert np.array_equal(postprocess(torch.from_numpy(mask), "paper"), postprocess(mask, "paper"))
    with pytest.raises(ConfigError, match="postprocess='open3'.*allowed: paper, open3_close1"):
        postprocess(mask, "open3")


def test_dice_on_hand_made_masks() -> None:
    pred = np.zeros((4, 4), dtype=bool)
    truth = np.zeros((4, 4), dtype=bool)
    assert dice(pred, truth) == 1.0  # nothing to find, nothing found
    truth[0, :4] = True
    assert dice(pred, truth) == 0.0
    assert dice(truth, pred) == 0.0
    pred[0, 2:4] = True
    pred[1, 0:2] = True  # 2 of 4 right, 2 wrong: 2 * 2 / (4 + 4)
    assert dice(pred, truth) == pytest.approx(0.5)
    pred[1] = False  # 2 predicted, both right: 2 * 2 / (2 + 4)
    assert dice(pred, truth) == pytest.approx(2 / 3)
    assert dice(torch.from_numpy(truth), torch.from_numpy(truth)) == 1.0


def test_channel_dice_finds_the_nucleus_channel() -> None:
    square = _square()
    truth = postprocess(square, "paper")  # the shape the post-processed prediction of channel 1 has
    conf = torch.zeros(3, 40, 40)
    conf[1][torch.from_numpy(square)] = 0.9
    conf[2] = 1.0 - conf[1]  # the background channel
    conf[0] = 0.5  # never strictly above the threshold: empty prediction
    scores = channel_dice(conf, truth, 0.5, "paper")
    assert scores.shape == (3,)
    assert scores[0] == 0.0
    assert scores[1] == 1.0
    assert scores[2] < 0.6
    assert int(np.argmax(scores)) == 1
    # Raising the threshold above every confidence empties every channel.
    assert channel_dice(conf, truth, 0.95, "paper").tolist() == [0.0, 0.0, 0.0]


def test_mean_channel_dice_averages_per_image() -> None:
    square = _square()
    truth = postprocess(square, "paper")
    hit = np.stack([square * 0.9, np.zeros_like(square, dtype=float)])
    miss = np.stack([np.zeros_like(square, dtype=float), square * 0.9])
    assert mean_channel_dice([hit, miss], [truth, truth], 0.5, "paper").tolist() == [0.5, 0.5]
    assert mean_channel_dice([hit, hit], [truth, truth], 0.5, "paper").tolist() == [1.0, 0.0]


def _grey_rgb(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(values[None].astype(np.float32), 3, axis=0))


def test_fit_recovers_a_known_threshold() -> None:
    # One pixel value halfway between each pair of neighbouring candidates: only candidate 37 separates the
    # pixels darker than it (the nuclei) exactly.
    mids = (THRESHOLD_CANDIDATES[:-1] + THRESHOLD_CANDIDATES[1:]) / 2
    rng = np.random.default_rng(0)
    grey = rng.permutation(np.repeat(mids, 4)).reshape(18, 22)
    mask = grey < THRESHOLD_CANDIDATES[37]
    t = fit_intensity_threshold([_grey_rgb(grey)], [torch.from_numpy(mask)])
    assert t == THRESHOLD_CANDIDATES[37]
    assert np.array_equal(threshold_predict(_grey_rgb(grey), t), mask)


def test_fit_matches_a_loop_over_candidates() -> None:
    rng = np.random.default_rng(1)
    images = [rng.random((3, 12, 15)).astype(np.float32) for _ in range(3)]
    masks = [rng.random((12, 15)) < 0.3 for _ in range(3)]
    masks[2][:] = False  # an image without nuclei counts too
    scores = [np.mean([dice(threshold_predict(im, t), m) for im, m in zip(images, masks)])
              for t in THRESHOLD_CANDIDATES]
    assert fit_intensity_threshold(images, masks) == THRESHOLD_CANDIDATES[int(np.argmax(scores))]


def test_greyscale_layouts_agree() -> None:
    rng = np.random.default_rng(2)
    channels_first = rng.random((3, 5, 7))
    grey = greyscale(channels_first)
    assert grey.shape == (5, 7)
    assert np.allclose(grey, greyscale(np.moveaxis(channels_first, 0, -1)))
    assert np.allclose(grey, 0.2125 * channels_first[0] + 0.7154 * channels_first[1] + 0.0721 * channels_first[2])


def test_fit_predicts_strictly_below_the_threshold() -> None:
    # Pixels exactly at candidate values: 'pixel < t' makes candidate 31 the first perfect one ('<=' would give 30).
    grey = np.full((6, 6), THRESHOLD_CANDIDATES[40])
    grey[1:4, 1:4] = THRESHOLD_CANDIDATES[30]
    mask = grey < THRESHOLD_CANDIDATES[35]
    assert fit_intensity_threshold([grey], [mask]) == THRESHOLD_CANDIDATES[31]
    assert not threshold_predict(grey, THRESHOLD_CANDIDATES[30]).any()
