"""Dice evaluation of confidence maps and masks, the morphological post-processing, and the intensity-threshold
baseline of Table 3.

Everything here works on numpy; torch tensors are accepted and moved to the CPU first, so the training loop can
pass its outputs directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.morphology import disk

from sustainml_exp.errors import ConfigError, UserError

__all__ = ["POSTPROCESS_STEPS", "THRESHOLD_CANDIDATES", "channel_dice", "dice", "fit_intensity_threshold",
           "greyscale", "mean_channel_dice", "postprocess", "threshold_predict"]

# (operation, disk radius) in order. The paper's "two iterations of morphological opening and closing with radius 3
# and 1" is opening and closing at radius 3, then at radius 1: what the public reference code's evaluation runs.
# open3_close1 keeps the other reading (one opening at radius 3, one closing at radius 1).
POSTPROCESS_STEPS: dict[str, tuple[tuple[str, int], ...]] = {
    "paper": (("opening", 3), ("closing", 3), ("opening", 1), ("closing", 1)),
    "open3_close1": (("opening", 3), ("closing", 1)),
}
# scipy.ndimage's binary operations with a disk structuring element, as the reference code calls them: outside the
# image counts as background (border_value=0), so a closing also erodes foreground that touches the border.
_MORPHOLOGY = {"opening": ndimage.binary_opening, "closing": ndimage.binary_closing}

THRESHOLD_CANDIDATES = np.linspace(0.0, 1.0, 100)


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _as_mask(array: Any, what: str) -> np.ndarray:
    mask = _to_numpy(array)
    if mask.ndim != 2:
        raise UserError(f"{what} must be a 2-D (H, W) mask, got shape {tuple(mask.shape)}")
    return mask.astype(bool, copy=False)


def postprocess(mask: Any, mode: str) -> np.ndarray:
    """Binary opening/closing with disk structuring elements, in the order of ``POSTPROCESS_STEPS[mode]``."""
    if mode not in POSTPROCESS_STEPS:
        raise ConfigError(f"postprocess={mode!r} is not allowed; allowed: {', '.join(POSTPROCESS_STEPS)}")
    out = _as_mask(mask, "mask")
    for operation, radius in POSTPROCESS_STEPS[mode]:
        out = _MORPHOLOGY[operation](out, structure=disk(radius))
    return out


def dice(pred: Any, truth: Any) -> float:
    """2 |P ∩ T| / (|P| + |T|); 1.0 when both masks are empty (nothing to find, nothing found)."""
    pred_mask, truth_mask = _as_mask(pred, "pred"), _as_mask(truth, "truth")
    if pred_mask.shape != truth_mask.shape:
        raise UserError(f"pred and truth differ in shape: {pred_mask.shape} vs {truth_mask.shape}")
    total = int(pred_mask.sum()) + int(truth_mask.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred_mask, truth_mask).sum()) / total


def channel_dice(conf: Any, truth: Any, threshold: float, mode: str) -> np.ndarray:
    """Dice of every channel of ``conf`` (K, H, W) against ``truth`` (H, W): pixels strictly above ``threshold``,
    then ``postprocess(.., mode)``. Returns a float64 array of shape (K,)."""
    maps = _to_numpy(conf)
    if maps.ndim != 3:
        raise UserError(f"conf must be (K, H, W) confidence maps, got shape {tuple(maps.shape)}")
    truth_mask = _as_mask(truth, "truth")
    return np.array([dice(postprocess(channel > threshold, mode), truth_mask) for channel in maps],
                    dtype=np.float64)


def mean_channel_dice(confs: Sequence[Any], truths: Sequence[Any], threshold: float, mode: str) -> np.ndarray:
    """Per-channel Dice averaged over images (the per-image mean the paper reports), shape (K,)."""
    if len(confs) != len(truths):
        raise UserError(f"{len(confs)} confidence maps but {len(truths)} masks")
    if len(confs) == 0:
        raise UserError("no images to evaluate")
    return np.mean([channel_dice(c, t, threshold, mode) for c, t in zip(confs, truths)], axis=0)


def greyscale(image: Any) -> np.ndarray:
    """Luminance (skimage.color.rgb2gray weights) of an RGB image in [0, 1]: (3, H, W) as the loaders give it,
    or (H, W, 3) as stored in overlays; an (H, W) image is taken as grey already."""
    array = _to_numpy(image).astype(np.float64, copy=False)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[0] == 3:
        return rgb2gray(array, channel_axis=0)
    if array.ndim == 3 and array.shape[-1] == 3:
        return rgb2gray(array, channel_axis=-1)
    raise UserError(f"image must be RGB (3, H, W) or (H, W, 3), or grey (H, W); got shape {tuple(array.shape)}")


def threshold_predict(image: Any, t: float) -> np.ndarray:
    """Nuclei are darker than the background: predict every pixel whose grey value is below ``t``."""
    return greyscale(image) < t


def fit_intensity_threshold(images: Sequence[Any], masks: Sequence[Any]) -> float:
    """The value of ``THRESHOLD_CANDIDATES`` whose ``threshold_predict`` has the highest mean Dice over the
    images (the smallest such value on ties)."""
    if len(images) != len(masks):
        raise UserError(f"{len(images)} images but {len(masks)} masks")
    if len(images) == 0:
        raise UserError("no training images to fit the intensity threshold on")
    total = np.zeros_like(THRESHOLD_CANDIDATES)
    for image, mask in zip(images, masks):
        grey = greyscale(image)
        truth = _as_mask(mask, "mask")
        if grey.shape != truth.shape:
            raise UserError(f"image and mask differ in shape: {grey.shape} vs {truth.shape}")
        # Counts of pixels below every candidate at once: a binary search in the sorted grey values replaces one
        # full-image comparison per candidate.
        predicted = np.searchsorted(np.sort(grey, axis=None), THRESHOLD_CANDIDATES, side="left")
        hits = np.searchsorted(np.sort(grey[truth]), THRESHOLD_CANDIDATES, side="left")
        denominator = predicted + int(truth.sum())
        total += np.where(denominator == 0, 1.0, 2.0 * hits / np.maximum(denominator, 1))
    return float(THRESHOLD_CANDIDATES[int(np.argmax(total))])
