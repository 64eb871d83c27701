"""k-center greedy (farthest-first traversal, Gonzalez 1985; Sener & Savarese's core-set) per class on raw pixels.

Pixels rather than an embedding: the covering radius is then the eta of MCS's robustness bound, so kcenter is the
greedy 2-approximation of the covering that MCS solves exactly. The seed picks each class's first centre uniformly.
"""

from __future__ import annotations

import numpy as np
import torch

from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget
from sustainml_exp.families.mfc_coreset.selection.covering import greedy_kcenter, pairwise_distances


class KCenterSelector(Selector):
    name = "kcenter"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        check_budget(train, k)
        rng = np.random.default_rng(seed)
        chosen, radii = [], []
        for c in range(train.n_classes):
            members = train.class_indices(c)
            pixels = train.x[torch.as_tensor(members)].flatten(1).to(self.device)
            dist = pairwise_distances(pixels, block=self.cfg.mcs.distance_block)
            centres, radius = greedy_kcenter(dist, k, int(rng.integers(len(members))))
            chosen.append(members[np.asarray(centres, dtype=np.int64)])
            radii.append(radius)
        # The largest per-class radius: every training image lies within it of a same-class centre.
        info = {"kcenter_radius": float(max(radii)), "kcenter_radius_mean": float(np.mean(radii))}
        return SelectionResult(indices=np.sort(np.concatenate(chosen)).astype(np.int64), info=info)
