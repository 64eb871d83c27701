"""Raw: the whole training set (the paper's upper reference); k is ignored."""

from __future__ import annotations

import numpy as np

from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector


class FullSelector(Selector):
    name = "full"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        return SelectionResult(indices=np.arange(len(train.y), dtype=np.int64))
