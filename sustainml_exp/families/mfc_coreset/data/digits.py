"""digits: scikit-learn's bundled 8 x 8 digits (pixels / 16), the embedded default, with a fixed stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sustainml_exp.families.mfc_coreset.config import N_CLASSES
from sustainml_exp.families.mfc_coreset.data.base import ImageDataset, TrainSet

DIGITS_TEST_FRACTION = 0.2
# The digits split is fixed (not drawn from the run seed), so that every run of a sweep tests on the same images.
DIGITS_SPLIT_SEED = 0


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


def load(name: str, data_dir: Path, download: bool) -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = digits_split(bunch.target)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    train = TrainSet(x=x[train_idx], y=y[train_idx], n_classes=N_CLASSES["digits"], dataset="digits")
    return ImageDataset(name="digits", train=train, test_x=x[test_idx], test_y=y[test_idx],
                        source="scikit-learn (bundled)")
