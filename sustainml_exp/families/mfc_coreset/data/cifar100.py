"""CIFAR-100: pickled batches as CIFAR-10's (cifar10.py), fine labels."""

from __future__ import annotations

from pathlib import Path

from sustainml_exp.families.mfc_coreset.data.base import ImageDataset, torchvision_datasets
from sustainml_exp.families.mfc_coreset.data.cifar10 import load_cifar


def load(name: str, data_dir: Path, download: bool) -> ImageDataset:
    return load_cifar(name, torchvision_datasets(name).CIFAR100, data_dir, download)
