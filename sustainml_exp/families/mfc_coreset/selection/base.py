"""The selection interface every coreset and condensation method implements (DeepCore's shape).

``select(train, k, seed)`` picks ``k`` images per class. Coreset methods return indices into the training set
(and, for the weighted ones, a weight per selected image); condensation methods return synthetic images in pixel
space. Either way ``SelectionResult.training_set(train)`` is what the classifier trains on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import MFCRunConfig
from sustainml_exp.families.mfc_coreset.data import TrainSet


@dataclass
class SelectionResult:
    # Indices into TrainSet (coreset methods), int64, sorted within each class; empty for condensation.
    indices: np.ndarray
    # Per selected image (None: unweighted). mcs: covering multiplicities; craig / gradmatch: their weights.
    weights: np.ndarray | None = None
    # Synthetic images and labels (condensation methods only), pixels in [0, 1].
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    # Recorded alongside the run: eta, gap, solver status, ... (scalars only).
    info: dict[str, Any] = field(default_factory=dict)

    def training_set(self, train: TrainSet) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is not None:
            return self.images, self.labels
        index = torch.as_tensor(self.indices, dtype=torch.long)
        return train.x[index], train.y[index]


class Selector(ABC):
    """One selection method. ``device`` is where it may compute (cpu | cuda); results are returned on the CPU."""

    name: str = ""

    def __init__(self, cfg: MFCRunConfig, device: str = "cpu") -> None:
        self.cfg = cfg
        self.device = device

    @abstractmethod
    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        """k images per class, deterministic for a given seed."""


def check_budget(train: TrainSet, k: int) -> None:
    """k must fit in every class: one line naming the smallest class otherwise."""
    counts = np.bincount(train.y.numpy(), minlength=train.n_classes)
    smallest = int(counts.argmin())
    if k > counts[smallest]:
        raise ConfigError(f"k={k} is larger than class {smallest} of {train.dataset} ({counts[smallest]} training "
                          f"images); allowed: 1 <= k <= {counts[smallest]}")
