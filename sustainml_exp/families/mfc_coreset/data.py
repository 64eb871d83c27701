"""Image classification datasets of the coreset family, as float32 pixels in [0, 1].

``load_image_dataset`` returns every dataset of ``config.IMAGE_DATASETS`` as (N, C, H, W) float32 pixels in [0, 1]
with int64 labels:

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

import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sustainml_exp.errors import ConfigError, DataMissingError, UserError
from sustainml_exp.families.mfc_coreset.config import IMAGE_DATASETS, IMAGE_SHAPES, N_CLASSES
from sustainml_exp.results import atomic_write_bytes

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGITS_TEST_FRACTION",
    "OFFICIAL_COUNTS",
    "TINYIMAGENET_URL",
    "ImageDataset",
    "TrainSet",
    "digits_split",
    "load_image_dataset",
]

log = logging.getLogger("sustainml_exp")


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


# (train, test) images of the official releases; other counts load with a warning.
OFFICIAL_COUNTS = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000), "cifar10": (50000, 10000),
                   "cifar100": (50000, 10000), "svhn": (73257, 26032), "tinyimagenet": (100000, 10000)}
DIGITS_TEST_FRACTION = 0.2
# The digits split is fixed (not drawn from the run seed), so that every run of a sweep tests on the same images.
DIGITS_SPLIT_SEED = 0
# Where Debian's dataset-fashion-mnist package installs the Fashion-MNIST IDX files (gzip-compressed).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_CACHE = "sustainml_decoded_uint8.npz"
_TINYIMAGENET_CACHE_VERSION = 1
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_NAMES = _IDX_FILES["train"] + _IDX_FILES["test"]

# (images, labels) as uint8 (N, C, H, W) and int64 (N,) tensors.
_Split = tuple[torch.Tensor, torch.Tensor]


def load_image_dataset(name: str, data_dir: Path, download: bool = False) -> ImageDataset:
    """The dataset ``name`` of ``IMAGE_DATASETS``; ``data_dir`` holds the ones that are not embedded."""
    data_dir = Path(data_dir)
    if name == "digits":
        return _load_digits()
    loaders = {"mnist": _load_mnist_family, "fashion_mnist": _load_mnist_family, "cifar10": _load_cifar,
               "cifar100": _load_cifar, "svhn": _load_svhn, "tinyimagenet": _load_tinyimagenet}
    if name not in loaders:
        raise ConfigError(f"dataset {name!r} is not an image classification dataset; allowed: "
                          f"{', '.join(IMAGE_DATASETS)}")
    (train_x, train_y), (test_x, test_y), source = loaders[name](name, data_dir, download)
    expected = OFFICIAL_COUNTS[name]
    if (len(train_y), len(test_y)) != expected:
        log.warning("%s in %s has %d train / %d test images; the official release has %d / %d: results are not "
                    "comparable with published numbers", name, source, len(train_y), len(test_y), *expected)
    train = TrainSet(x=_to_unit_float(train_x), y=train_y, n_classes=N_CLASSES[name], dataset=name)
    return ImageDataset(name=name, train=train, test_x=_to_unit_float(test_x), test_y=test_y, source=source)


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous().to(torch.float32).div_(255.0)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _check_split(name: str, images: torch.Tensor, labels: torch.Tensor, image_file: Path | str,
                 label_file: Path | str) -> _Split:
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


def _torchvision_datasets(name: str) -> Any:
    try:
        from torchvision import datasets
    except ImportError as err:
        raise UserError(f"dataset {name!r} is read with torchvision, which is not installed: "
                        f"pip install torchvision") from err
    return datasets


def _download(name: str, target: Path, make: Any) -> Any:
    """``make()``, which lets torchvision download into ``target``; its failures as one line."""
    try:
        return make()
    except Exception as err:  # urllib's URLError, torchvision's RuntimeError for a bad mirror or checksum, ...
        raise DataMissingError(f"dataset {name!r}: torchvision's download into {target} failed: "
                               f"{_one_line(err)}") from err


def _unofficial_files(paths_md5: list[tuple[Path, str]]) -> list[str]:
    """Names of the files whose md5 differs from torchvision's record of the official release."""
    from torchvision.datasets.utils import check_md5

    return [path.name for path, md5 in paths_md5 if not check_md5(path, md5)]


def _warn_unofficial(name: str, folder: Path, files: list[str]) -> None:
    if files:
        log.warning("%s: %s in %s differ from the official release (md5); results are not comparable with "
                    "published numbers", name, ", ".join(files), folder)


def _missing_message(name: str, folder: Path, missing: list[str], fix: str) -> str:
    what = f"missing {', '.join(missing)} in {folder}" if folder.is_dir() else f"no folder {folder}"
    return f"dataset {name!r} not found: {what}; {fix}"


# --------------------------------------------------------------------------------------------------------------
# digits (embedded)


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices, each ascending: a fixed DIGITS_TEST_FRACTION of every class is held out.

    The legacy RandomState is used because numpy freezes its stream, so the split is the same in every version
    (scikit-learn's train_test_split promises no such thing).
    """
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[:round(DIGITS_TEST_FRACTION * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _load_digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = digits_split(bunch.target)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    train = TrainSet(x=x[train_idx], y=y[train_idx], n_classes=N_CLASSES["digits"], dataset="digits")
    return ImageDataset(name="digits", train=train, test_x=x[test_idx], test_y=y[test_idx],
                        source="scikit-learn (bundled)")


# --------------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files


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
                               f"{_one_line(err) if str(err) else 'bad header'}") from err


def _read_idx_split(name: str, files: dict[str, Path], split: str) -> _Split:
    image_base, label_base = _IDX_FILES[split]
    images = _read_idx(name, files[image_base], images=True)
    labels = _read_idx(name, files[label_base], images=False)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return _check_split(name, images, labels, files[image_base], files[label_base])


def _mnist_class_split(name: str, stock: type, data_dir: Path, files: dict[str, Path], split: str) -> _Split:
    """One split through torchvision's class; when it fails, its readers are run file by file to name the file."""
    image_base, label_base = _IDX_FILES[split]
    try:
        dataset = stock(root=str(data_dir), train=split == "train", download=False)
    except Exception as err:  # torchvision's message names no file
        _read_idx_split(name, files, split)  # raises with the file's name
        raise DataMissingError(f"dataset {name!r}: torchvision cannot read {files[image_base].parent}: "
                               f"{_one_line(err)}") from err
    return _check_split(name, dataset.data.unsqueeze(1), dataset.targets, files[image_base], files[label_base])


def _load_mnist_family(name: str, data_dir: Path, download: bool) -> tuple[_Split, _Split, str]:
    datasets = _torchvision_datasets(name)
    stock = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    raw = data_dir / stock.__name__ / "raw"  # torchvision's layout: <root>/<class name>/raw
    files = _idx_files(raw)
    if len(files) == len(_IDX_NAMES):
        if all(path.suffix != ".gz" for path in files.values()):
            splits = [_mnist_class_split(name, stock, data_dir, files, split) for split in ("train", "test")]
        else:  # torchvision's class reads only decompressed files, which its download step would write here
            splits = [_read_idx_split(name, files, split) for split in ("train", "test")]
        return splits[0], splits[1], str(raw.resolve())
    system = _idx_files(DEBIAN_FASHION_MNIST_DIR) if name == "fashion_mnist" else {}
    if not files and len(system) == len(_IDX_NAMES):
        splits = [_read_idx_split(name, system, split) for split in ("train", "test")]
        return splits[0], splits[1], str(DEBIAN_FASHION_MNIST_DIR)
    if download:
        _download(name, raw, lambda: stock(root=str(data_dir), train=True, download=True))
        files = _idx_files(raw)
        splits = [_mnist_class_split(name, stock, data_dir, files, split) for split in ("train", "test")]
        return splits[0], splits[1], str(raw.resolve())
    fix = f"rerun with download=true (torchvision fetches it into {raw})"
    if name == "fashion_mnist":
        fix += (f", or delete {raw} to use the copy in {DEBIAN_FASHION_MNIST_DIR}" if system and files
                else f", or apt-get install dataset-fashion-mnist (installs it in {DEBIAN_FASHION_MNIST_DIR})")
    missing = [f"{base}[.gz]" for base in _IDX_NAMES if base not in files]
    raise DataMissingError(_missing_message(name, raw, missing, fix))


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: pickled batches; SVHN: .mat files


def _without_md5(stock: type) -> type:
    """``stock`` with each file's md5 set to None, so that torchvision's check_integrity only tests existence.

    torchvision refuses any file whose md5 differs from the official release, which would also refuse the small
    files of the tests; the files are read by the class's own code all the same, then checked for shape and
    labels here, and an md5 difference becomes a warning (``_warn_unofficial``). The class's download step is
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


def _load_cifar(name: str, data_dir: Path, download: bool) -> tuple[_Split, _Split, str]:
    datasets = _torchvision_datasets(name)
    stock = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = data_dir / stock.base_folder
    listed = stock.train_list + stock.test_list + [[stock.meta["filename"], stock.meta["md5"]]]
    missing = [filename for filename, _ in listed if not (folder / filename).is_file()]
    if missing and not download:
        raise DataMissingError(_missing_message(name, folder, missing, f"rerun with download=true (torchvision "
                                                                       f"fetches {stock.url} into {data_dir})"))
    if missing:
        reader = stock  # downloads the archive, verifies its md5 and unpacks it
        _download(name, folder, lambda: stock(root=str(data_dir), train=True, download=True))
    else:
        reader = _without_md5(stock)
        _warn_unofficial(name, folder, _unofficial_files([(folder / f, md5) for f, md5 in listed]))
    splits = []
    for split, batches in (("train", stock.train_list), ("test", stock.test_list)):
        paths = [folder / filename for filename, _ in batches]
        shown = paths[0] if len(paths) == 1 else f"{folder}/{{{','.join(p.name for p in paths)}}}"
        try:
            dataset = reader(root=str(data_dir), train=split == "train", download=False)
            # torchvision's data: uint8 (N, 32, 32, 3) stacked over the batches; targets: a list of ints.
            images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
            splits.append(_check_split(name, images, torch.as_tensor(np.asarray(dataset.targets)), shown, shown))
        except Exception as err:  # torchvision's messages name no file: find the batch (or meta file) at fault
            _diagnose_cifar(name, paths, folder / stock.meta["filename"], stock.meta["key"])
            if isinstance(err, DataMissingError):
                raise
            raise DataMissingError(f"dataset {name!r}: cannot read {shown}: {_one_line(err)}") from err
    return splits[0], splits[1], str(folder.resolve())


def _diagnose_cifar(name: str, batches: list[Path], meta: Path, meta_key: str) -> None:
    """Raise naming the first batch or meta file that is not what torchvision's CIFAR reader expects: a pickled
    dict with uint8 'data' of 3 x 32 x 32 values per row and one label per row ('labels', or 'fine_labels' for
    CIFAR-100) in range."""
    def unpickle(path: Path) -> Any:
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle, encoding="latin1")  # the batches were pickled by Python 2
        except Exception as err:  # pickle raises many types for damaged input
            raise DataMissingError(f"dataset {name!r}: corrupt pickle {path}: {_one_line(err)}") from err

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


def _load_svhn(name: str, data_dir: Path, download: bool) -> tuple[_Split, _Split, str]:
    datasets = _torchvision_datasets(name)
    stock = datasets.SVHN
    missing = [filename for filename in _SVHN_FILES.values() if not (data_dir / filename).is_file()]
    if missing and not download:
        urls = " and ".join(stock.split_list[split][0] for split in _SVHN_FILES)
        raise DataMissingError(_missing_message(name, data_dir, missing, f"rerun with download=true (torchvision "
                                                                         f"fetches {urls})"))
    present = [split for split, filename in _SVHN_FILES.items() if (data_dir / filename).is_file()]
    _warn_unofficial(name, data_dir, _unofficial_files(
        [(data_dir / stock.split_list[split][1], stock.split_list[split][2]) for split in present]))
    splits = []
    for split, filename in _SVHN_FILES.items():
        path = data_dir / filename
        if path.is_file():
            reader = _without_md5(stock)
        else:  # downloads the file and verifies its md5
            reader = stock
            _download(name, data_dir, lambda: stock(root=str(data_dir), split=split, download=True))
        try:
            dataset = reader(root=str(data_dir), split=split, download=False)
        except Exception as err:  # scipy and torchvision raise many types for a damaged or foreign .mat file
            raise DataMissingError(f"dataset {name!r}: cannot read {path} as SVHN (X: 32 x 32 x 3 x N uint8, "
                                   f"y: N x 1): {_one_line(err)}") from err
        # torchvision's data: (N, 3, 32, 32) from the file's (32, 32, 3, N); labels with 10 (the digit 0) as 0.
        images = torch.from_numpy(np.ascontiguousarray(dataset.data))
        splits.append(_check_split(name, images, torch.as_tensor(np.atleast_1d(dataset.labels)), path, path))
    return splits[0], splits[1], str(data_dir.resolve())


# --------------------------------------------------------------------------------------------------------------
# TinyImageNet: JPEG folders, decoded once and cached
#
# Layout of tiny-imagenet-200.zip: wnids.txt (the 200 WordNet ids), train/<wnid>/images/*.JPEG (500 each),
# val/images/*.JPEG with val/val_annotations.txt (file <tab> wnid <tab> box), test/ (unlabelled, unused). Class
# index = position of the wnid in sorted(wnids), the order torchvision's ImageFolder gives the train/ folders.
# The labelled val split serves as the test split.


def _load_tinyimagenet(name: str, data_dir: Path, download: bool) -> tuple[_Split, _Split, str]:
    root = data_dir / "tiny-imagenet-200"
    fix = f"download {TINYIMAGENET_URL} and unzip it in {data_dir} (download=true does not fetch TinyImageNet)"
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        what = f"no file {wnids_file}" if root.is_dir() else f"no folder {root}"
        raise DataMissingError(f"dataset {name!r} not found: {what}; {fix}")
    classes = _tinyimagenet_classes(name, wnids_file)
    train_files, train_labels = _tinyimagenet_train_files(name, root, classes, fix)
    test_files, test_labels = _tinyimagenet_val_files(name, root, classes, fix)
    key = _tinyimagenet_key(wnids_file, root / "val" / "val_annotations.txt", train_files + test_files)
    cache = root / TINYIMAGENET_CACHE
    cached = _read_tinyimagenet_cache(cache, key, len(train_files), len(test_files), IMAGE_SHAPES[name])
    if cached is None:
        cached = {"train_x": _decode_jpegs(name, train_files), "test_x": _decode_jpegs(name, test_files)}
        _write_tinyimagenet_cache(cache, key, cached)
    train = (torch.from_numpy(cached["train_x"]), torch.from_numpy(np.asarray(train_labels, dtype=np.int64)))
    test = (torch.from_numpy(cached["test_x"]), torch.from_numpy(np.asarray(test_labels, dtype=np.int64)))
    return train, test, str(root.resolve())


def _tinyimagenet_classes(name: str, wnids_file: Path) -> dict[str, int]:
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    if not wnids:
        raise DataMissingError(f"dataset {name!r}: {wnids_file} lists no wnids")
    if len(set(wnids)) != len(wnids):
        repeated = sorted({w for w in wnids if wnids.count(w) > 1})
        raise DataMissingError(f"dataset {name!r}: {wnids_file} lists {', '.join(repeated[:5])} more than once")
    if len(wnids) != N_CLASSES[name]:
        raise DataMissingError(f"dataset {name!r}: {wnids_file} lists {len(wnids)} wnids; expected "
                               f"{N_CLASSES[name]}")
    return {wnid: index for index, wnid in enumerate(sorted(wnids))}


def _jpegs(folder: Path) -> list[str]:
    # Hidden files (e.g. macOS '._x.JPEG' resource forks from a re-zipped copy) are not images.
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.name.lower().endswith(".jpeg") and not entry.name.startswith(".") and entry.is_file())


def _tinyimagenet_train_files(name: str, root: Path, classes: dict[str, int],
                              fix: str) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for wnid, label in classes.items():
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DataMissingError(f"dataset {name!r} is incomplete: no folder {folder} for wnid {wnid} of "
                                   f"{root / 'wnids.txt'}; {fix}")
        names = _jpegs(folder)
        if not names:
            raise DataMissingError(f"dataset {name!r} is incomplete: no *.JPEG in {folder}; {fix}")
        files += [folder / n for n in names]
        labels += [label] * len(names)
    return files, labels


def _tinyimagenet_val_files(name: str, root: Path, classes: dict[str, int],
                            fix: str) -> tuple[list[Path], list[int]]:
    annotations, folder = root / "val" / "val_annotations.txt", root / "val" / "images"
    if not annotations.is_file() or not folder.is_dir():
        absent = annotations if not annotations.is_file() else folder
        raise DataMissingError(f"dataset {name!r} is incomplete: no {absent}; {fix}")
    present = set(_jpegs(folder))
    files, labels, seen = [], [], set()
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataMissingError(f"dataset {name!r}: {annotations} line {number} is not '<file>\\t<wnid>\\t...'")
        filename, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in classes:
            raise DataMissingError(f"dataset {name!r}: {annotations} line {number} names wnid {wnid!r}, which "
                                   f"{root / 'wnids.txt'} does not list")
        if filename not in present:
            raise DataMissingError(f"dataset {name!r}: {annotations} line {number} names {folder / filename}, "
                                   f"which does not exist")
        if filename in seen:
            raise DataMissingError(f"dataset {name!r}: {annotations} line {number} annotates {filename} again")
        seen.add(filename)
        files.append(folder / filename)
        labels.append(classes[wnid])
    if not files:
        raise DataMissingError(f"dataset {name!r}: {annotations} annotates no images")
    return files, labels


def _tinyimagenet_key(wnids_file: Path, annotations: Path, files: list[Path]) -> str:
    """Fingerprint of what the decoded arrays depend on: the class list, the annotations and each image's path,
    size and modification time (editing an image in place without changing either is not detected)."""
    digest = hashlib.sha256(f"v{_TINYIMAGENET_CACHE_VERSION}\n".encode())
    digest.update(wnids_file.read_bytes())
    digest.update(annotations.read_bytes())
    root = wnids_file.parent
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_tinyimagenet_cache(path: Path, key: str, n_train: int, n_test: int,
                             shape: tuple[int, int, int]) -> dict[str, np.ndarray] | None:
    """The cached uint8 arrays when the cache exists, matches ``key`` and holds arrays of the expected shapes."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["key"]) != key:
                log.info("decoded TinyImageNet in %s is stale: decoding the JPEGs again", path)
                return None
            arrays = {"train_x": archive["train_x"], "test_x": archive["test_x"]}
    # Absent, damaged (zipfile.BadZipFile is a plain Exception) or written by another version: decode again.
    except Exception:
        return None
    for key_name, n in (("train_x", n_train), ("test_x", n_test)):
        if arrays[key_name].shape != (n, *shape) or arrays[key_name].dtype != np.uint8:
            return None
    log.info("read decoded TinyImageNet from %s", path)
    return arrays


def _write_tinyimagenet_cache(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), **arrays)
    try:
        with buffer.getbuffer() as view:  # no copy of the ~1.4 GB archive
            atomic_write_bytes(path, view)
    except OSError as err:  # a read-only dataset folder: work without the cache
        log.warning("cannot cache decoded TinyImageNet in %s (%s); decoding the JPEGs on every load", path,
                    _one_line(err))


def _decode_jpegs(name: str, files: list[Path]) -> np.ndarray:
    """uint8 (N, 3, H, W) RGB pixels of ``files`` (greyscale ones converted), decoded by a few threads (PIL
    releases the GIL while decoding)."""
    from PIL import Image

    channels, height, width = IMAGE_SHAPES[name]
    out = np.empty((len(files), height, width, channels), dtype=np.uint8)

    def decode(start: int, stop: int) -> None:
        for i in range(start, stop):
            try:
                with Image.open(files[i]) as image:
                    rgb = image.convert("RGB")
            except Exception as err:  # PIL raises several types for damaged files; all mean "unreadable"
                raise DataMissingError(f"dataset {name!r}: unreadable image {files[i]}: {_one_line(err)}") from err
            if rgb.size != (width, height):
                raise DataMissingError(f"dataset {name!r}: image {files[i]} is {rgb.size[0]}x{rgb.size[1]} px; "
                                       f"expected {width}x{height}")
            out[i] = np.asarray(rgb)

    chunk = 500
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        jobs = [pool.submit(decode, start, min(start + chunk, len(files))) for start in range(0, len(files), chunk)]
        for job in jobs:
            job.result()  # re-raises the first failure
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
