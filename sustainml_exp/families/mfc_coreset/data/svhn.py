"""SVHN: torchvision's train_32x32.mat and test_32x32.mat (the extra split is not used)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sustainml_exp.errors import DataMissingError
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

OFFICIAL_COUNTS = (73257, 26032)  # (train, test) images of the official release
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def load(name: str, data_dir: Path, download: bool) -> ImageDataset:
    datasets = torchvision_datasets(name)
    stock = datasets.SVHN
    missing = [filename for filename in _SVHN_FILES.values() if not (data_dir / filename).is_file()]
    if missing and not download:
        urls = " and ".join(stock.split_list[split][0] for split in _SVHN_FILES)
        raise DataMissingError(missing_message(name, data_dir, missing, f"rerun with download=true (torchvision "
                                                                        f"fetches {urls})"))
    present = [split for split, filename in _SVHN_FILES.items() if (data_dir / filename).is_file()]
    warn_unofficial(name, data_dir, unofficial_files(
        [(data_dir / stock.split_list[split][1], stock.split_list[split][2]) for split in present]))
    splits = []
    for split, filename in _SVHN_FILES.items():
        path = data_dir / filename
        if path.is_file():
            reader = without_md5(stock)
        else:  # downloads the file and verifies its md5
            reader = stock
            download_with_torchvision(name, data_dir, lambda: stock(root=str(data_dir), split=split, download=True))
        try:
            dataset = reader(root=str(data_dir), split=split, download=False)
        except Exception as err:  # scipy and torchvision raise many types for a damaged or foreign .mat file
            raise DataMissingError(f"dataset {name!r}: cannot read {path} as SVHN (X: 32 x 32 x 3 x N uint8, "
                                   f"y: N x 1): {one_line(err)}") from err
        # torchvision's data: (N, 3, 32, 32) from the file's (32, 32, 3, N); labels with 10 (the digit 0) as 0.
        images = torch.from_numpy(np.ascontiguousarray(dataset.data))
        splits.append(check_split(name, images, torch.as_tensor(np.atleast_1d(dataset.labels)), path, path))
    return from_uint8(name, *splits, str(data_dir.resolve()), OFFICIAL_COUNTS)
