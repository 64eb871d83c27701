"""Fashion-MNIST: IDX files as MNIST (mnist.py), falling back to Debian's ``dataset-fashion-mnist`` package when
data_dir holds no copy."""

from __future__ import annotations

from pathlib import Path

from sustainml_exp.families.mfc_coreset.data.base import ImageDataset, torchvision_datasets
from sustainml_exp.families.mfc_coreset.data.mnist import load_idx_dataset

# Where Debian's dataset-fashion-mnist package installs the Fashion-MNIST IDX files (gzip-compressed).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def load(name: str, data_dir: Path, download: bool) -> ImageDataset:
    return load_idx_dataset(name, torchvision_datasets(name).FashionMNIST, data_dir, download,
                            system_dir=DEBIAN_FASHION_MNIST_DIR)
