"""MNIST: the IDX files of torchvision's layout (<data_dir>/MNIST/raw), read by torchvision's readers; the IDX
reading here also serves fashion_mnist.py."""

from __future__ import annotations

import gzip
import shutil
import tempfile
import zlib
from pathlib import Path

import torch

from sustainml_exp.errors import DataMissingError
from sustainml_exp.families.mfc_coreset.data.base import (
    ImageDataset,
    Split,
    check_split,
    download_with_torchvision,
    from_uint8,
    missing_message,
    one_line,
    torchvision_datasets,
)

OFFICIAL_COUNTS = (60000, 10000)  # (train, test) images of the official release
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_NAMES = _IDX_FILES["train"] + _IDX_FILES["test"]


def load(name: str, data_dir: Path, download: bool) -> ImageDataset:
    return load_idx_dataset(name, torchvision_datasets(name).MNIST, data_dir, download)


def _idx_files(folder: Path) -> dict[str, Path]:
    """The IDX files present in ``folder`` by base name; an uncompressed file is preferred over its .gz."""
    found = {}
    for base in _IDX_NAMES:
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
    return found


def _read_idx(name: str, path: Path, images: bool) -> torch.Tensor:
    """One IDX file through torchvision's own readers (which take uncompressed files only: a .gz is
    decompressed into a temporary file first)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if images else read_label_file
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory(prefix="sustainml_idx_") as tmp:
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as source, open(plain, "wb") as target:
                shutil.copyfileobj(source, target)
            return reader(str(plain))
    # torchvision asserts the magic number, raises TypeError/ValueError for another type or rank and a
    # RuntimeError when the byte count does not match the header; gzip raises BadGzipFile, zlib.error or EOFError.
    except (AssertionError, RuntimeError, TypeError, ValueError, gzip.BadGzipFile, zlib.error, EOFError) as err:
        kind = "image" if images else "label"
        raise DataMissingError(f"dataset {name!r}: corrupt IDX {kind} file {path}: "
                               f"{one_line(err) if str(err) else 'bad header'}") from err


def _read_idx_split(name: str, files: dict[str, Path], split: str) -> Split:
    image_base, label_base = _IDX_FILES[split]
    images = _read_idx(name, files[image_base], images=True)
    labels = _read_idx(name, files[label_base], images=False)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return check_split(name, images, labels, files[image_base], files[label_base])


def _mnist_class_split(name: str, stock: type, data_dir: Path, files: dict[str, Path], split: str) -> Split:
    """One split through torchvision's class; when it fails, its readers are run file by file to name the file."""
    image_base, label_base = _IDX_FILES[split]
    try:
        dataset = stock(root=str(data_dir), train=split == "train", download=False)
    except Exception as err:  # torchvision's message names no file
        _read_idx_split(name, files, split)  # raises with the file's name
        raise DataMissingError(f"dataset {name!r}: torchvision cannot read {files[image_base].parent}: "
                               f"{one_line(err)}") from err
    return check_split(name, dataset.data.unsqueeze(1), dataset.targets, files[image_base], files[label_base])


def load_idx_dataset(name: str, stock: type, data_dir: Path, download: bool,
                     system_dir: Path | None = None) -> ImageDataset:
    """An IDX dataset read with torchvision's class ``stock``; ``system_dir``: a system-wide copy (a Debian
    package) used when data_dir holds none."""
    raw = data_dir / stock.__name__ / "raw"  # torchvision's layout: <root>/<class name>/raw
    files = _idx_files(raw)
    if len(files) == len(_IDX_NAMES):
        if all(path.suffix != ".gz" for path in files.values()):
            splits = [_mnist_class_split(name, stock, data_dir, files, split) for split in ("train", "test")]
        else:  # torchvision's class reads only decompressed files, which its download step would write here
            splits = [_read_idx_split(name, files, split) for split in ("train", "test")]
        return from_uint8(name, *splits, str(raw.resolve()), OFFICIAL_COUNTS)
    system = _idx_files(system_dir) if system_dir is not None else {}
    if not files and len(system) == len(_IDX_NAMES):
        splits = [_read_idx_split(name, system, split) for split in ("train", "test")]
        return from_uint8(name, *splits, str(system_dir), OFFICIAL_COUNTS)
    if download:
        download_with_torchvision(name, raw, lambda: stock(root=str(data_dir), train=True, download=True))
        files = _idx_files(raw)
        splits = [_mnist_class_split(name, stock, data_dir, files, split) for split in ("train", "test")]
        return from_uint8(name, *splits, str(raw.resolve()), OFFICIAL_COUNTS)
    fix = f"rerun with download=true (torchvision fetches it into {raw})"
    if system_dir is not None:
        fix += (f", or delete {raw} to use the copy in {system_dir}" if system and files
                else f", or apt-get install dataset-fashion-mnist (installs it in {system_dir})")
    missing = [f"{base}[.gz]" for base in _IDX_NAMES if base not in files]
    raise DataMissingError(missing_message(name, raw, missing, fix))
