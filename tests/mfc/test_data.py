"""Dataset loaders of the coreset family: the embedded digits and, offline, every real dataset's on-disk format.

The real formats are written here at a few images each: IDX files as torchvision expects them in MNIST/raw,
CIFAR's pickled batches, SVHN's .mat files (scipy), a TinyImageNet tree of JPEGs. Nothing is downloaded: only one
test passes download=true, on a complete copy, where nothing needs fetching.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from sustainml_exp.errors import ConfigError, DataMissingError
from sustainml_exp.families.mfc_coreset import data as data_module
from sustainml_exp.families.mfc_coreset.config import MEAN_STD
from sustainml_exp.families.mfc_coreset.data import (
    DEBIAN_FASHION_MNIST_DIR,
    TINYIMAGENET_CACHE,
    TINYIMAGENET_URL,
    TrainSet,
    digits_split,
    load_image_dataset,
)


def one_line_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def as_unit(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 255)


# --------------------------------------------------------------------------------------------------------------
# digits (embedded)


def test_digits_are_unit_pixels_with_a_fixed_split(digits_train: TrainSet) -> None:
    data = load_image_dataset("digits", Path("/nonexistent"))
    assert data.name == "digits" and data.source == "scikit-learn (bundled)"
    assert data.train.x.shape == (1438, 1, 8, 8) and data.test_x.shape == (359, 1, 8, 8)
    for x, y in ((data.train.x, data.train.y), (data.test_x, data.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.is_contiguous()
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # load_digits' pixels are 0..16
    assert data.train.n_classes == 10 and data.train.dataset == "digits"
    train_idx, test_idx = digits_split(digits_train.y.numpy())
    assert torch.equal(data.train.x, digits_train.x[train_idx]) and torch.equal(data.test_y, digits_train.y[test_idx])


def test_digits_mean_std_are_those_of_the_training_split() -> None:
    data = load_image_dataset("digits", Path("."))
    (mean,), (std,) = MEAN_STD["digits"]
    # Rounded to 4 digits: all 1,797 images (test included) give 0.3053 / 0.3760 and must not be used.
    assert round(float(data.train.x.mean()), 4) == mean
    assert round(float(data.train.x.std(unbiased=False)), 4) == std


def test_digits_split_is_stratified_and_independent_of_the_seed(digits_train: TrainSet) -> None:
    labels = digits_train.y.numpy()
    train_idx, test_idx = digits_split(labels)
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(test_idx) > 0)
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(len(labels)))
    for c in range(10):
        n_class = int((labels == c).sum())
        assert int((labels[test_idx] == c).sum()) == round(0.2 * n_class)
    # Pinned: the split must not change with the run seed, nor between library versions.
    assert test_idx[:8].tolist() == [3, 7, 13, 19, 36, 38, 43, 48] and int(test_idx.sum()) == 311827
    np.random.seed(1)
    torch.manual_seed(1)
    first = load_image_dataset("digits", Path("."))
    np.random.seed(2)
    torch.manual_seed(2)
    second = load_image_dataset("digits", Path("."))
    assert torch.equal(first.test_x, second.test_x) and torch.equal(first.train.y, second.train.y)


def test_unknown_dataset_lists_the_allowed_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_image_dataset("imagenet", tmp_path)
    message = one_line_error(err)
    assert "'imagenet'" in message and "digits, mnist, fashion_mnist, cifar10, cifar100, svhn, tinyimagenet" in message


# --------------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray, dims: tuple[int, ...] | None = None) -> bytes:
    """IDX: two zero bytes, the type (0x08: uint8), the rank, big-endian uint32 dimensions, the values."""
    dims = array.shape if dims is None else dims
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + array.astype(np.uint8).tobytes()


def write_idx_set(raw: Path, compressed: bool, n_train: int = 12, n_test: int = 5,
                  seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10}
    raw.mkdir(parents=True, exist_ok=True)
    for base, array in arrays.items():
        payload = idx_bytes(array)
        if compressed:
            (raw / f"{base}.gz").write_bytes(gzip.compress(payload))
        else:
            (raw / base).write_bytes(payload)
    return arrays


@pytest.mark.parametrize("compressed", [False, True], ids=["ubyte", "ubyte.gz"])
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_datasets_read_torchvisions_raw_folder(tmp_path: Path, name: str, folder: str, compressed: bool,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    raw = tmp_path / folder / "raw"
    arrays = write_idx_set(raw, compressed)
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        data = load_image_dataset(name, tmp_path)
    assert data.source == str(raw.resolve())  # the copy in data_dir, not the system one
    assert data.train.x.shape == (12, 1, 28, 28) and data.test_x.shape == (5, 1, 28, 28)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert torch.equal(data.train.x[:, 0], as_unit(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(data.test_x[:, 0], as_unit(arrays["t10k-images-idx3-ubyte"]))
    assert data.train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert "12 train / 5 test" in caplog.text and "60000 / 10000" in caplog.text


def test_fashion_mnist_falls_back_to_the_system_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-share-datasets"
    arrays = write_idx_set(system, compressed=True, seed=3)  # the Debian package's files are .gz
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST_DIR", system)
    data = load_image_dataset("fashion_mnist", tmp_path / "data")
    assert data.source == str(system)
    assert torch.equal(data.train.x[:, 0], as_unit(arrays["train-images-idx3-ubyte"]))
    # The system copy is only a fallback for fashion_mnist, and only when data_dir holds none of the files.
    with pytest.raises(DataMissingError):
        load_image_dataset("mnist", tmp_path / "data")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_idx_set(raw, compressed=False)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataMissingError) as err:
        load_image_dataset("fashion_mnist", tmp_path / "data")
    message = one_line_error(err)
    assert f"missing t10k-labels-idx1-ubyte[.gz] in {raw}" in message and f"delete {raw}" in message


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_the_real_dataset(tmp_path: Path, one_thread: None) -> None:
    data = load_image_dataset("fashion_mnist", tmp_path)
    assert data.source == str(DEBIAN_FASHION_MNIST_DIR)
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train.y).tolist() == [6000] * 10 and torch.bincount(data.test_y).tolist() == [1000] * 10
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1.0
    (mean,), (std,) = MEAN_STD["fashion_mnist"]
    assert abs(float(data.train.x.mean()) - mean) < 1e-3 and abs(float(data.train.x.std()) - std) < 1e-3


@pytest.mark.parametrize("compressed", [False, True], ids=["ubyte", "ubyte.gz"])
@pytest.mark.parametrize("damage, problem", [
    ("garbage", "corrupt IDX image file {images}"),
    ("truncated", "corrupt IDX image file {images}"),
    ("27x27", "{images} holds images of shape (1, 27, 27); expected (1, 28, 28)"),
    ("label-count", "{labels} holds labels of shape (11,) for 12 images in {images}"),
    ("label-range", "{labels} holds labels 0..10; expected 0..9"),
], ids=["garbage", "truncated", "27x27", "label-count", "label-range"])
def test_damaged_idx_file_is_named(tmp_path: Path, compressed: bool, damage: str, problem: str) -> None:
    raw = tmp_path / "MNIST" / "raw"
    arrays = write_idx_set(raw, compressed)
    images_base, labels_base = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    payloads = {
        "garbage": (images_base, b"this is not an IDX file"),
        "truncated": (images_base, idx_bytes(arrays[images_base])[:-30]),
        "27x27": (images_base, idx_bytes(arrays[images_base][:, :27, :27])),
        "label-count": (labels_base, idx_bytes(arrays[labels_base][:11])),
        "label-range": (labels_base, idx_bytes(np.arange(12) % 11)),
    }
    base, payload = payloads[damage]
    suffix = ".gz" if compressed else ""
    (raw / f"{base}{suffix}").write_bytes(gzip.compress(payload) if compressed else payload)
    with pytest.raises(DataMissingError) as err:
        load_image_dataset("mnist", tmp_path)
    expected = problem.format(images=raw / f"{images_base}{suffix}", labels=raw / f"{labels_base}{suffix}")
    assert expected in one_line_error(err)


def test_file_that_is_not_gzip_is_named(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_idx_set(raw, compressed=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b but not really gzip")
    with pytest.raises(DataMissingError) as err:
        load_image_dataset("mnist", tmp_path)
    assert f"corrupt IDX image file {raw / 't10k-images-idx3-ubyte.gz'}" in one_line_error(err)


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: pickled batches

CIFAR = {  # folder, training batches, test batch, meta file, meta key, label key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "label_names", "labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_label_names", "fine_labels"),
}


def cifar_batch(images: np.ndarray, labels: np.ndarray, label_key: str) -> dict:
    # A row holds the red plane, then green, then blue, each 32 x 32 row-major: images (N, 3, 32, 32) reshaped.
    batch = {"batch_label": "testing batch", label_key: labels.tolist(), "data": images.reshape(len(images), -1),
             "filenames": [f"img_{i}.png" for i in range(len(images))]}
    if label_key == "fine_labels":
        batch["coarse_labels"] = (labels // 5).tolist()
    return batch


def write_cifar(root: Path, name: str, per_batch: int = 4, n_test: int = 6) -> dict[str, np.ndarray]:
    folder, train_batches, test_batch, meta, meta_key, label_key = CIFAR[name]
    n_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(1)
    directory = root / folder
    directory.mkdir(parents=True)
    n_train = per_batch * len(train_batches)
    out = {"train_x": rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
           "train_y": rng.integers(0, n_classes, n_train),
           "test_x": rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
           "test_y": rng.integers(0, n_classes, n_test)}
    for i, batch in enumerate(train_batches):
        part = slice(i * per_batch, (i + 1) * per_batch)
        with open(directory / batch, "wb") as handle:
            pickle.dump(cifar_batch(out["train_x"][part], out["train_y"][part], label_key), handle, protocol=2)
    with open(directory / test_batch, "wb") as handle:
        pickle.dump(cifar_batch(out["test_x"], out["test_y"], label_key), handle, protocol=2)
    with open(directory / meta, "wb") as handle:
        pickle.dump({meta_key: [f"class_{c}" for c in range(n_classes)]}, handle, protocol=2)
    return out


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_pickled_batches(tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    expected = write_cifar(tmp_path, name)
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        data = load_image_dataset(name, tmp_path)
    assert data.source == str((tmp_path / CIFAR[name][0]).resolve())
    n_train = len(expected["train_y"])
    assert data.train.x.shape == (n_train, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train.x.is_contiguous() and data.train.x.dtype == torch.float32
    assert torch.equal(data.train.x, as_unit(expected["train_x"])) and torch.equal(data.test_x,
                                                                                   as_unit(expected["test_x"]))
    assert data.train.y.tolist() == expected["train_y"].tolist() and data.test_y.tolist() == expected[
        "test_y"].tolist()
    assert data.train.n_classes == (10 if name == "cifar10" else 100)
    # Not the official files: loaded, with warnings that say so.
    assert "differ from the official release (md5)" in caplog.text and "50000 / 10000" in caplog.text


def test_download_true_reads_a_complete_copy_as_it_is(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    data = load_image_dataset("cifar10", tmp_path, download=True)
    assert len(data.train.y) == 20
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


@pytest.mark.parametrize("damage, problem", [
    ("truncated", "corrupt pickle {batch}"),
    ("label-range", "{batch} holds labels 3..10; expected 0..9"),
    ("columns", "{batch} holds data of shape (4, 3000) and type uint8; expected uint8 (N, 3072)"),
    ("label-count", "{batch} holds 3 labels for 4 images"),
    ("float-pixels", "{batch} holds data of shape (4, 3072) and type float64"),
    ("meta", "{meta} has no 'label_names'"),
], ids=["truncated", "label-range", "columns", "label-count", "float-pixels", "meta"])
def test_damaged_cifar_file_is_named(tmp_path: Path, damage: str, problem: str) -> None:
    write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    batch, meta = folder / "data_batch_3", folder / "batches.meta"
    with open(batch, "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    if damage == "truncated":
        batch.write_bytes(batch.read_bytes()[:-100])
    elif damage == "meta":
        with open(meta, "wb") as handle:
            pickle.dump({"names": []}, handle)
    else:
        if damage == "label-range":
            entry["labels"] = [3, 10, 4, 5]
        elif damage == "columns":
            entry["data"] = entry["data"][:, :3000]
        elif damage == "label-count":
            entry["labels"] = entry["labels"][:3]
        elif damage == "float-pixels":
            entry["data"] = entry["data"].astype(np.float64)
        with open(batch, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    with pytest.raises(DataMissingError) as err:
        load_image_dataset("cifar10", tmp_path)
    assert problem.format(batch=batch, meta=meta) in one_line_error(err)


# --------------------------------------------------------------------------------------------------------------
# SVHN: .mat files


def write_svhn(root: Path, n_train: int = 7, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        pixels = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN's layout: height, width, RGB, image
        digits = np.arange(n) % 10
        digits[0] = 0
        labels = np.where(digits == 0, 10, digits).astype(np.uint8)  # SVHN labels the digit 0 as 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": pixels, "y": labels[:, None]})
        out[f"{split}_x"], out[f"{split}_y"] = pixels, digits
    return out


def test_svhn_reads_mat_files_with_zero_as_label_zero(tmp_path: Path) -> None:
    expected = write_svhn(tmp_path)
    data = load_image_dataset("svhn", tmp_path)
    assert data.source == str(tmp_path.resolve())
    assert data.train.x.shape == (7, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.train.x.is_contiguous()
    assert torch.equal(data.train.x, as_unit(expected["train_x"].transpose(3, 2, 0, 1)))
    assert torch.equal(data.test_x, as_unit(expected["test_x"].transpose(3, 2, 0, 1)))
    assert data.train.y.tolist() == expected["train_y"].tolist() and data.train.y[0] == 0
    assert data.test_y.tolist() == expected["test_y"].tolist()


@pytest.mark.parametrize("damage, problem", [
    ("not-mat", "cannot read {path} as SVHN"),
    ("no-X", "cannot read {path} as SVHN"),
    ("28x28", "{path} holds images of shape (3, 28, 28); expected (3, 32, 32)"),
    ("label-count", "{path} holds labels of shape (3,) for 4 images in {path}"),
], ids=["not-mat", "no-X", "28x28", "label-count"])
def test_damaged_svhn_file_is_named(tmp_path: Path, damage: str, problem: str) -> None:
    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    if damage == "not-mat":
        path.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    elif damage == "no-X":
        scipy.io.savemat(path, {"images": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((4, 1), np.uint8)})
    elif damage == "28x28":
        scipy.io.savemat(path, {"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1), np.uint8)})
    else:
        scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1), np.uint8)})
    with pytest.raises(DataMissingError) as err:
        load_image_dataset("svhn", tmp_path)
    assert problem.format(path=path) in one_line_error(err)


# --------------------------------------------------------------------------------------------------------------
# TinyImageNet: JPEG tree

WNIDS = [f"n{7919 * (i + 1) % 100000:08d}" for i in range(200)]  # 200 distinct ids, not listed in sorted order


def jpeg(path: Path, seed: int, size: int = 64, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path, quality=90)


def decoded(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def write_tinyimagenet(data_dir: Path) -> Path:
    """One training image per wnid (two for the first listed, one of them greyscale) and four val images."""
    root = data_dir / "tiny-imagenet-200"
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for i, wnid in enumerate(WNIDS):
        jpeg(root / "train" / wnid / "images" / f"{wnid}_0.JPEG", seed=i)
    jpeg(root / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_1.JPEG", seed=1000, mode="L")
    (root / "train" / WNIDS[0] / f"{WNIDS[0]}_boxes.txt").write_text("unused\n")
    lines = []
    for j, wnid in enumerate([WNIDS[5], WNIDS[0], WNIDS[199], WNIDS[5]]):
        jpeg(root / "val" / "images" / f"val_{j}.JPEG", seed=2000 + j)
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t63\t63")
    jpeg(root / "val" / "images" / "val_9.JPEG", seed=3000)  # not annotated: not loaded
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tinyimagenet_reads_the_jpeg_tree(tmp_path: Path) -> None:
    root = write_tinyimagenet(tmp_path)
    data = load_image_dataset("tinyimagenet", tmp_path)
    assert data.source == str(root.resolve())
    assert data.train.x.shape == (201, 3, 64, 64) and data.test_x.shape == (4, 3, 64, 64)
    assert data.train.x.dtype == torch.float32 and data.train.n_classes == 200
    index = {wnid: i for i, wnid in enumerate(sorted(WNIDS))}  # class = position in the sorted wnids
    assert sorted(data.train.y.tolist()) == sorted([*range(200), index[WNIDS[0]]])
    assert data.test_y.tolist() == [index[WNIDS[5]], index[WNIDS[0]], index[WNIDS[199]], index[WNIDS[5]]]
    # Training images come class by class in sorted wnid order, files sorted within a class.
    first = sorted(WNIDS)[0]
    assert torch.equal(data.train.x[0], decoded(root / "train" / first / "images" / f"{first}_0.JPEG") / 255)
    grey_at = int(np.flatnonzero(data.train.y.numpy() == index[WNIDS[0]])[1])
    grey = data.train.x[grey_at]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # greyscale converted to RGB
    for j in range(4):
        assert torch.equal(data.test_x[j], decoded(root / "val" / "images" / f"val_{j}.JPEG") / 255)


def test_tinyimagenet_cache_is_used_and_invalidated(tmp_path: Path) -> None:
    root = write_tinyimagenet(tmp_path)
    first = load_image_dataset("tinyimagenet", tmp_path)
    assert (root / TINYIMAGENET_CACHE).is_file()
    # Garbage of the same size and modification time: only the cache can still give the images.
    image = root / "train" / WNIDS[7] / "images" / f"{WNIDS[7]}_0.JPEG"
    stat = image.stat()
    image.write_bytes(b"x" * stat.st_size)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = load_image_dataset("tinyimagenet", tmp_path)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test_y, second.test_y)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed file is decoded again
    with pytest.raises(DataMissingError) as err:
        load_image_dataset("tinyimagenet", tmp_path)
    assert f"unreadable image {image}" in one_line_error(err)


@pytest.mark.parametrize("damage, problem", [
    ("no-images-folder", "no folder {root}/train/{wnid}/images for wnid {wnid} of {root}/wnids.txt"),
    ("empty-images-folder", "no *.JPEG in {root}/train/{wnid}/images"),
    ("unknown-wnid", "{root}/val/val_annotations.txt line 2 names wnid 'n99999999', which {root}/wnids.txt does not"),
    ("missing-val-image", "{root}/val/val_annotations.txt line 2 names {root}/val/images/val_7.JPEG, which does not"),
    ("no-annotations", "no {root}/val/val_annotations.txt"),
    ("199-wnids", "{root}/wnids.txt lists 199 wnids; expected 200"),
    ("small-image", "image {root}/train/{wnid}/images/{wnid}_0.JPEG is 32x32 px; expected 64x64"),
    ("corrupt-image", "unreadable image {root}/train/{wnid}/images/{wnid}_0.JPEG"),
], ids=["no-images-folder", "empty-images-folder", "unknown-wnid", "missing-val-image", "no-annotations",
        "199-wnids", "small-image", "corrupt-image"])
def test_damaged_tinyimagenet_is_named(tmp_path: Path, damage: str, problem: str) -> None:
    root = write_tinyimagenet(tmp_path)
    wnid = WNIDS[3]
    images = root / "train" / wnid / "images"
    annotations = root / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    if damage == "no-images-folder":
        for path in images.iterdir():
            path.unlink()
        images.rmdir()
    elif damage == "empty-images-folder":
        (images / f"{wnid}_0.JPEG").rename(images / "notes.txt")
    elif damage == "unknown-wnid":
        annotations.write_text("\n".join([lines[0], lines[1].replace(WNIDS[0], "n99999999")]))
    elif damage == "missing-val-image":
        annotations.write_text("\n".join([lines[0], lines[1].replace("val_1", "val_7")]))
    elif damage == "no-annotations":
        annotations.unlink()
    elif damage == "199-wnids":
        (root / "wnids.txt").write_text("\n".join(WNIDS[:199]))
    elif damage == "small-image":
        jpeg(images / f"{wnid}_0.JPEG", seed=1, size=32)
    else:
        (images / f"{wnid}_0.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a real JPEG")
    with pytest.raises(DataMissingError) as err:
        load_image_dataset("tinyimagenet", tmp_path)
    assert problem.format(root=root, wnid=wnid) in one_line_error(err)


# --------------------------------------------------------------------------------------------------------------
# Missing data


@pytest.mark.parametrize("name, where, hints", [
    ("mnist", "MNIST/raw", ["no folder", "download=true"]),
    ("fashion_mnist", "FashionMNIST/raw", ["no folder", "download=true", "apt-get install dataset-fashion-mnist"]),
    ("cifar10", "cifar-10-batches-py", ["no folder", "download=true", "cifar-10-python.tar.gz"]),
    ("cifar100", "cifar-100-python", ["no folder", "download=true", "cifar-100-python.tar.gz"]),
    ("svhn", "", ["missing train_32x32.mat, test_32x32.mat in", "download=true"]),
    ("tinyimagenet", "tiny-imagenet-200", ["no folder", TINYIMAGENET_URL, "download=true does not fetch"]),
])
def test_missing_dataset_says_where_and_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                                      where: str, hints: list[str]) -> None:
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "not-installed")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(DataMissingError) as err:
        load_image_dataset(name, data_dir)
    message = one_line_error(err)
    assert f"dataset {name!r} not found" in message and str(data_dir / where).rstrip("/") in message
    for hint in hints:
        assert hint in message


@pytest.mark.parametrize("name, remove, missing", [
    ("mnist", ["t10k-images-idx3-ubyte"], "missing t10k-images-idx3-ubyte[.gz] in {folder}"),
    ("cifar10", ["data_batch_3", "batches.meta"], "missing data_batch_3, batches.meta in {folder}"),
    ("svhn", ["test_32x32.mat"], "missing test_32x32.mat in {folder}"),
])
def test_incomplete_copy_names_the_missing_files(tmp_path: Path, name: str, remove: list[str], missing: str) -> None:
    if name == "mnist":
        folder = tmp_path / "MNIST" / "raw"
        write_idx_set(folder, compressed=False)
    elif name == "cifar10":
        folder = tmp_path / "cifar-10-batches-py"
        write_cifar(tmp_path, name)
    else:
        folder = tmp_path
        write_svhn(tmp_path)
    for filename in remove:
        (folder / filename).unlink()
    with pytest.raises(DataMissingError) as err:
        load_image_dataset(name, tmp_path)
    message = one_line_error(err)
    assert missing.format(folder=folder) in message and "download=true" in message
