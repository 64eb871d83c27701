"""Image classification datasets of the coreset family, one module per dataset, as float32 pixels in [0, 1].

``load_image_dataset`` returns every dataset of ``config.IMAGE_DATASETS`` as (N, C, H, W) float32 pixels in [0, 1]
with int64 labels; the module named after the dataset reads it:

- digits: scikit-learn's bundled 8 x 8 digits (pixels / 16), the embedded default, with a fixed stratified split.
- mnist, fashion_mnist, cifar10, cifar100, svhn: torchvision's dataset classes in their standard layouts under
  data_dir; download=true lets torchvision fetch a missing or incomplete copy (a complete one is read as it is).
  fashion_mnist falls back to Debian's ``dataset-fashion-mnist`` package when data_dir holds no copy.
- tinyimagenet: the layout of tiny-imagenet-200.zip, decoded with PIL once and cached next to the data.

Missing or damaged data is a one-line ``DataMissingError`` naming the file or folder; a copy that differs from the
official release (counts, md5) loads with a warning, since its results are not comparable with published numbers.
torchvision, PIL and scikit-learn are imported where they are used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import IMAGE_DATASETS
from sustainml_exp.families.mfc_coreset.data.base import ImageDataset, TrainSet
from sustainml_exp.families.mfc_coreset.data.digits import digits_split

__all__ = ["ImageDataset", "TrainSet", "digits_split", "load_image_dataset"]


def load_image_dataset(name: str, data_dir: Path, download: bool = False) -> ImageDataset:
    """The dataset ``name`` of ``IMAGE_DATASETS``; ``data_dir`` holds the ones that are not embedded."""
    if name not in IMAGE_DATASETS:
        raise ConfigError(f"dataset {name!r} is not an image classification dataset; allowed: "
                          f"{', '.join(IMAGE_DATASETS)}")
    return importlib.import_module(f"{__name__}.{name}").load(name, Path(data_dir), download)
