"""What every image source returns, and the checks and torchvision plumbing the sources share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sustainml_exp.errors import DataMissingError, UserError
from sustainml_exp.families.mfc_coreset.config import IMAGE_SHAPES, N_CLASSES

log = logging.getLogger("sustainml_exp")

# (images, labels) as uint8 (N, C, H, W) and int64 (N,) tensors.
Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainSet:
    """Training images of one dataset: pixels in [0, 1], (N, C, H, W) float32, labels (N,) int64 in [0, C)."""

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    dataset: str

    def class_indices(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.y.numpy() == c)


@dataclass
class ImageDataset:
    name: str
    train: TrainSet
    test_x: torch.Tensor  # (M, C, H, W) float32 in [0, 1]
    test_y: torch.Tensor  # (M,) int64
    source: str  # where it was read from (a path, or "scikit-learn (bundled)")


def from_uint8(name: str, train: Split, test: Split, source: str, official_counts: tuple[int, int]) -> ImageDataset:
    """The dataset from uint8 splits, pixels scaled to [0, 1]; a copy whose (train, test) counts differ from
    ``official_counts`` loads with a warning."""
    (train_x, train_y), (test_x, test_y) = train, test
    if (len(train_y), len(test_y)) != official_counts:
        log.warning("%s in %s has %d train / %d test images; the official release has %d / %d: results are not "
                    "comparable with published numbers", name, source, len(train_y), len(test_y), *official_counts)
    train_set = TrainSet(x=to_unit_float(train_x), y=train_y, n_classes=N_CLASSES[name], dataset=name)
    return ImageDataset(name=name, train=train_set, test_x=to_unit_float(test_x), test_y=test_y, source=source)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous().to(torch.float32).div_(255.0)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def check_split(name: str, images: torch.Tensor, labels: torch.Tensor, image_file: Path | str,
                label_file: Path | str) -> Split:
    """(images, labels as int64) when they are uint8 images of the dataset's shape with one valid label each."""
    shape = IMAGE_SHAPES[name]
    if images.dtype != torch.uint8:
        raise DataMissingError(f"dataset {name!r}: {image_file} holds {images.dtype} pixels; expected uint8")
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise DataMissingError(f"dataset {name!r}: {image_file} holds images of shape {tuple(images.shape[1:])}; "
                               f"expected {shape} (channels, height, width)")
    if len(images) == 0:
        raise DataMissingError(f"dataset {name!r}: {image_file} holds no images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataMissingError(f"dataset {name!r}: {label_file} holds labels of shape {tuple(labels.shape)} for "
                               f"{len(images)} images in {image_file}")
    labels = labels.to(torch.int64)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= N_CLASSES[name]:
        raise DataMissingError(f"dataset {name!r}: {label_file} holds labels {low}..{high}; expected "
                               f"0..{N_CLASSES[name] - 1}")
    return images, labels


def torchvision_datasets(name: str) -> Any:
    try:
        from torchvision import datasets
    except ImportError as err:
        raise UserError(f"dataset {name!r} is read with torchvision, which is not installed: "
                        f"pip install torchvision") from err
    return datasets


def download_with_torchvision(name: str, target: Path, make: Any) -> Any:
    """``make()``, which lets torchvision download into ``target``; its failures as one line."""
    try:
        return make()
    except Exception as err:  # urllib's URLError, torchvision's RuntimeError for a bad mirror or checksum, ...
        raise DataMissingError(f"dataset {name!r}: torchvision's download into {target} failed: "
                               f"{one_line(err)}") from err


def unofficial_files(paths_md5: list[tuple[Path, str]]) -> list[str]:
    """Names of the files whose md5 differs from torchvision's record of the official release."""
    from torchvision.datasets.utils import check_md5

    return [path.name for path, md5 in paths_md5 if not check_md5(path, md5)]


def warn_unofficial(name: str, folder: Path, files: list[str]) -> None:
    if files:
        log.warning("%s: %s in %s differ from the official release (md5); results are not comparable with "
                    "published numbers", name, ", ".join(files), folder)


def missing_message(name: str, folder: Path, missing: list[str], fix: str) -> str:
    what = f"missing {', '.join(missing)} in {folder}" if folder.is_dir() else f"no folder {folder}"
    return f"dataset {name!r} not found: {what}; {fix}"


def without_md5(stock: type) -> type:
    """``stock`` with each file's md5 set to None, so that torchvision's check_integrity only tests existence.

    torchvision refuses any file whose md5 differs from the official release, which would also refuse the small
    files of the tests; the files are read by the class's own code all the same, then checked for shape and
    labels here, and an md5 difference becomes a warning (``warn_unofficial``). The class's download step is
    never reached through this subclass (download=False).
    """
    attributes: dict[str, Any] = {}
    if hasattr(stock, "split_list"):  # SVHN: split -> [url, filename, md5]
        attributes["split_list"] = {split: [url, filename, None] for split, (url, filename, _) in
                                    stock.split_list.items()}
    else:  # CIFAR: [filename, md5] lists and the meta file
        attributes["train_list"] = [[filename, None] for filename, _ in stock.train_list]
        attributes["test_list"] = [[filename, None] for filename, _ in stock.test_list]
        attributes["meta"] = {**stock.meta, "md5": None}
    return type(stock.__name__, (stock,), attributes)
