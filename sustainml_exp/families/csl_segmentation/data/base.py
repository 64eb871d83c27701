"""What every segmentation source returns, and the splitting and cropping the runs do on any of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sustainml_exp.errors import ConfigError


@dataclass
class SegImage:
    name: str
    image: torch.Tensor  # float32 (3, H, W) in [0, 1], RGB
    mask: torch.Tensor  # bool (H, W), True = nucleus


@dataclass
class SegDataset:
    name: str  # monuseg | consep | synthetic_nuclei
    train: list[SegImage]  # every training image; the runner splits validation off with split_train_val
    test: list[SegImage]
    source: str  # directory it was read from, or "embedded"




def split_train_val(images: list[SegImage], val_fraction: float, seed: int) -> tuple[list[SegImage], list[SegImage]]:
    """(train, val): a seeded random ``val_fraction`` of ``images`` (at least one each), both in input order."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction} is not a fraction of the training images; "
                          f"allowed: 0 < val_fraction < 1")
    n = len(images)
    if n < 2:
        raise ConfigError(f"val_fraction={val_fraction} needs at least 2 training images to hold one out for "
                          f"validation; the dataset has {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return ([img for img, v in zip(images, held_out) if not v], [img for img, v in zip(images, held_out) if v])


def random_crops(images: list[SegImage], crop: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly placed ``crop`` x ``crop`` window per image: (B, 3, crop, crop) float32, (B, crop, crop) bool.

    The offsets come from ``generator`` only (two draws per image, in list order), so a seeded generator
    gives the same crops on every run.
    """
    if not images:
        raise ValueError("random_crops needs at least one image")
    if crop < 1:
        raise ConfigError(f"crop_size={crop} is not a crop size; allowed: crop_size >= 1")
    for img in images:
        height, width = img.mask.shape
        if crop > min(height, width):
            raise ConfigError(f"crop_size={crop} is larger than image {img.name!r} ({height}x{width} px); "
                              f"allowed: crop_size <= {min(height, width)}")
    sizes = torch.tensor([img.mask.shape for img in images], dtype=torch.float64)
    # floor(u * (side - crop + 1)) is uniform over the valid offsets; one draw serves images of any size.
    u = torch.rand(len(images), 2, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    offsets = torch.floor(u * (sizes - crop + 1)).long().tolist()
    crops = torch.stack([img.image[:, top:top + crop, left:left + crop] for img, (top, left) in zip(images, offsets)])
    masks = torch.stack([img.mask[top:top + crop, left:left + crop] for img, (top, left) in zip(images, offsets)])
    return crops, masks
