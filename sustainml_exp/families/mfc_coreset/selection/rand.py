"""Rand: k images per class drawn uniformly without replacement."""

from __future__ import annotations

import numpy as np

from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget


class RandomSelector(Selector):
    name = "rand"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        check_budget(train, k)
        rng = np.random.default_rng(seed)
        picked = [rng.choice(train.class_indices(c), size=k, replace=False) for c in range(train.n_classes)]
        return SelectionResult(indices=np.sort(np.concatenate(picked)).astype(np.int64))
