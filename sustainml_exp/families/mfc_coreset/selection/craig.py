"""CRAIG (Mirzasoleiman et al. 2020), DeepCore's per-class variant: greedy facility location on the proxy model's
per-sample last-layer gradients, weighted by how many points each selected element represents.

Similarity s_ij = max_dist - ||g_i - g_j|| + 1e-3 (DeepCore's shift of negated Euclidean distances, so that every
similarity is positive and facility location is monotone). Each class point is assigned to its most similar
selected element (a selected element to itself); an element's weight is the size of its group, so a class's
weights add up to its size, and sum_j w_j g_j approximates the class's full gradient sum with an error bounded by
the points' distances to their representatives (the paper's bound).
"""

from __future__ import annotations

import numpy as np
import torch

from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget
from sustainml_exp.families.mfc_coreset.selection.covering import pairwise_distances
from sustainml_exp.families.mfc_coreset.selection.proxy import last_layer_gradients, train_proxy
from sustainml_exp.families.mfc_coreset.selection.submod import greedy_facility_location

SIMILARITY_OFFSET = 1e-3


def craig_similarity(features: torch.Tensor) -> torch.Tensor:
    dist = pairwise_distances(features.flatten(1))
    return dist.max() - dist + SIMILARITY_OFFSET


def craig_class(sim: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k picks in greedy order, their weights: points represented, each >= 1, summing to n)."""
    picks = greedy_facility_location(sim, k)
    columns = torch.as_tensor(picks, device=sim.device)
    representative = sim[:, columns].argmax(1)
    # Duplicates can tie a selected element with another; it still represents itself, so no weight is zero.
    representative[columns] = torch.arange(k, device=sim.device)
    weights = torch.bincount(representative, minlength=k).cpu().numpy().astype(np.float64)
    return picks, weights


class CraigSelector(Selector):
    name = "craig"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        check_budget(train, k)
        proxy = train_proxy(self.cfg, train, seed, self.device)
        chosen, chosen_weights, cover_dist = [], [], []
        for c in range(train.n_classes):
            members = train.class_indices(c)
            index = torch.as_tensor(members)
            sim = craig_similarity(last_layer_gradients(proxy.model, train.x[index], train.y[index]))
            picks, weights = craig_class(sim, k)
            chosen.append(members[picks])
            chosen_weights.append(weights)
            # Distance of each point to its nearest selected element: the terms of CRAIG's gradient error bound.
            nearest_sim = sim[:, torch.as_tensor(picks, device=sim.device)].max(1).values
            cover_dist.append(float((sim.max() - nearest_sim).mean()))
        indices = np.concatenate(chosen)
        order = np.argsort(indices, kind="stable")
        info = {**proxy.info(), "craig_mean_grad_dist": float(np.mean(cover_dist))}
        return SelectionResult(indices=indices[order].astype(np.int64), weights=np.concatenate(chosen_weights)[order],
                               info=info)
