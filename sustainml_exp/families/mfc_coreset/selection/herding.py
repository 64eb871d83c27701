"""Herding (Welling 2009), DeepCore's greedy mean matching, per class on the proxy model's embedding.

Step t picks the unselected point that brings the mean of the t selected embeddings closest to the class mean
mu: argmin_j || t * mu - sum(selected) - phi_j ||. Space: the penultimate embedding of the briefly trained proxy
(as DeepCore, which herds in a trained model's feature space); the randomness of a seed enters through the proxy's
initialisation and batch order.
"""

from __future__ import annotations

import numpy as np
import torch

from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget
from sustainml_exp.families.mfc_coreset.selection.proxy import embeddings, train_proxy


def herd(features: torch.Tensor, k: int) -> np.ndarray:
    """k row indices of features (n, d) in pick order."""
    mean = features.mean(0)
    selected_sum = torch.zeros_like(mean)
    taken = torch.zeros(len(features), dtype=torch.bool, device=features.device)
    picks = []
    for t in range(1, k + 1):
        gap = torch.linalg.vector_norm(t * mean - selected_sum - features, dim=1)
        gap.masked_fill_(taken, torch.inf)
        j = int(gap.argmin())
        picks.append(j)
        taken[j] = True
        selected_sum += features[j]
    return np.asarray(picks, dtype=np.int64)


class HerdingSelector(Selector):
    name = "herding"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        check_budget(train, k)
        proxy = train_proxy(self.cfg, train, seed, self.device)
        chosen, gaps = [], []
        for c in range(train.n_classes):
            members = train.class_indices(c)
            features = embeddings(proxy.model, train.x[torch.as_tensor(members)])
            picks = herd(features, k)
            chosen.append(members[picks])
            spread = float(torch.linalg.vector_norm(features - features.mean(0), dim=1).mean())
            gap = float(torch.linalg.vector_norm(features[torch.as_tensor(picks, device=features.device)].mean(0)
                                                 - features.mean(0)))
            gaps.append(gap / max(spread, 1e-12))
        # Distance of the selected mean from the class mean, relative to the class's mean distance from its mean.
        info = {**proxy.info(), "herding_rel_mean_gap": float(np.mean(gaps))}
        return SelectionResult(indices=np.sort(np.concatenate(chosen)).astype(np.int64), info=info)
