"""CIFAR-10: torchvision's pickled batches (cifar-10-batches-py); the reading here also serves cifar100.py."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sustainml_exp.errors import DataMissingError
from sustainml_exp.families.mfc_coreset.config import IMAGE_SHAPES, N_CLASSES
from sustainml_exp.families.mfc_coreset.data.base import (
    ImageDataset,
    check_split,
    download_with_torchvision,
    from_uint8,
    missing_message,
    one_line,
    torchvision_datasets,
    unofficial_files,
    warn_unofficial,
    without_md5,
)

OFFICIAL_COUNTS = (50000, 10000)  # (train, test) images of the official releases of CIFAR-10 and CIFAR-100


def load(name: str, data_dir: Path, download: bool) -> ImageDataset:
    return load_cifar(name, torchvision_datasets(name).CIFAR10, data_dir, download)


def load_cifar(name: str, stock: type, data_dir: Path, download: bool) -> ImageDataset:
    folder = data_dir / stock.base_folder
    listed = stock.train_list + stock.test_list + [[stock.meta["filename"], stock.meta["md5"]]]
    missing = [filename for filename, _ in listed if not (folder / filename).is_file()]
    if missing and not download:
        raise DataMissingError(missing_message(name, folder, missing, f"rerun with download=true (torchvision "
                                                                      f"fetches {stock.url} into {data_dir})"))
    if missing:
        reader = stock  # downloads the archive, verifies its md5 and unpacks it
        download_with_torchvision(name, folder, lambda: stock(root=str(data_dir), train=True, download=True))
    else:
        reader = without_md5(stock)
        warn_unofficial(name, folder, unofficial_files([(folder / f, md5) for f, md5 in listed]))
    splits = []
    for split, batches in (("train", stock.train_list), ("test", stock.test_list)):
        paths = [folder / filename for filename, _ in batches]
        shown = paths[0] if len(paths) == 1 else f"{folder}/{{{','.join(p.name for p in paths)}}}"
        try:
            dataset = reader(root=str(data_dir), train=split == "train", download=False)
            # torchvision's data: uint8 (N, 32, 32, 3) stacked over the batches; targets: a list of ints.
            images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
            splits.append(check_split(name, images, torch.as_tensor(np.asarray(dataset.targets)), shown, shown))
        except Exception as err:  # torchvision's messages name no file: find the batch (or meta file) at fault
            _diagnose_cifar(name, paths, folder / stock.meta["filename"], stock.meta["key"])
            if isinstance(err, DataMissingError):
                raise
            raise DataMissingError(f"dataset {name!r}: cannot read {shown}: {one_line(err)}") from err
    return from_uint8(name, *splits, str(folder.resolve()), OFFICIAL_COUNTS)


def _diagnose_cifar(name: str, batches: list[Path], meta: Path, meta_key: str) -> None:
    """Raise naming the first batch or meta file that is not what torchvision's CIFAR reader expects: a pickled
    dict with uint8 'data' of 3 x 32 x 32 values per row and one label per row ('labels', or 'fine_labels' for
    CIFAR-100) in range."""
    def unpickle(path: Path) -> Any:
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle, encoding="latin1")  # the batches were pickled by Python 2
        except Exception as err:  # pickle raises many types for damaged input
            raise DataMissingError(f"dataset {name!r}: corrupt pickle {path}: {one_line(err)}") from err

    for path in batches:
        entry = unpickle(path)
        data = entry.get("data") if isinstance(entry, dict) else None
        labels = entry.get("labels", entry.get("fine_labels")) if isinstance(entry, dict) else None
        if not isinstance(data, np.ndarray) or labels is None:
            raise DataMissingError(f"dataset {name!r}: {path} is not a CIFAR batch (a dict with 'data' and "
                                   f"'labels' or 'fine_labels')")
        n_values = int(np.prod(IMAGE_SHAPES[name]))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != n_values:
            raise DataMissingError(f"dataset {name!r}: {path} holds data of shape {data.shape} and type "
                                   f"{data.dtype}; expected uint8 (N, {n_values})")
        labels = np.asarray(labels)
        if labels.shape != (len(data),):
            raise DataMissingError(f"dataset {name!r}: {path} holds {labels.size} labels for {len(data)} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES[name]):
            raise DataMissingError(f"dataset {name!r}: {path} holds labels {labels.min()}..{labels.max()}; "
                                   f"expected 0..{N_CLASSES[name] - 1}")
    entry = unpickle(meta)
    if not isinstance(entry, dict) or meta_key not in entry:
        raise DataMissingError(f"dataset {name!r}: {meta} has no {meta_key!r}")
