"""TinyImageNet: the layout of tiny-imagenet-200.zip, decoded with PIL once and cached next to the data.

Layout of tiny-imagenet-200.zip: wnids.txt (the 200 WordNet ids), train/<wnid>/images/*.JPEG (500 each),
val/images/*.JPEG with val/val_annotations.txt (file <tab> wnid <tab> box), test/ (unlabelled, unused). Class
index = position of the wnid in sorted(wnids), the order torchvision's ImageFolder gives the train/ folders.
The labelled val split serves as the test split.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sustainml_exp.errors import DataMissingError
from sustainml_exp.families.mfc_coreset.config import IMAGE_SHAPES, N_CLASSES
from sustainml_exp.families.mfc_coreset.data.base import ImageDataset, from_uint8, one_line
from sustainml_exp.results import atomic_write_bytes

log = logging.getLogger("sustainml_exp")

OFFICIAL_COUNTS = (100000, 10000)  # (train, labelled val) images of the official release
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_CACHE = "sustainml_decoded_uint8.npz"
_TINYIMAGENET_CACHE_VERSION = 1


def load(name: str, data_dir: Path, download: bool) -> ImageDataset:
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
    return from_uint8(name, train, test, str(root.resolve()), OFFICIAL_COUNTS)


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
                    one_line(err))


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
                raise DataMissingError(f"dataset {name!r}: unreadable image {files[i]}: {one_line(err)}") from err
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
