"""GradMatch (Killamsetty et al. 2021), DeepCore's per-class variant: orthogonal matching pursuit with
non-negative weights matching the sum of the class's per-sample last-layer gradients (proxy model).

Per class with gradient features f_1..f_n and target b = sum_i f_i, find S (|S| = k) and w > 0 minimising
||b - sum_{j in S} w_j f_j||^2 + lam ||w||^2. Each step adds the candidate most positively correlated with the
residual (a positive correlation guarantees that the new element gets a positive weight and the objective drops),
re-solves the non-negative least squares on S, and drops elements whose weight fell to zero (they may come back
later; the objective decreases strictly, so the pursuit cannot cycle). Weights match a sum, so they add up to
roughly the class size, like Craig's.

Everything runs on the class's Gram matrix K = F F^T (float64): correlations are K 1 - K[:, S] w, the least
squares only needs K[S, S], so the feature dimension (C + C * feature_dim) never enters the loop.
lam = REG * mean ||f_i||^2 keeps K[S, S] + lam I positive definite when two gradients coincide and is negligible
otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget
from sustainml_exp.families.mfc_coreset.selection.proxy import last_layer_gradients, train_proxy

REG = 1e-4
# Pursuit steps allowed per selected element before the remaining slots are filled (see omp_nonnegative).
MAX_STEPS_PER_ELEMENT = 4
# Lower bound on a filled element's weight, relative to the uniform weight n / k.
FILL_WEIGHT_FLOOR = 1e-3


def _least_squares_system(gram_s: np.ndarray, corr_s: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, r) with ||A w - r||^2 = w^T (K_SS + lam I) w - 2 c_S^T w + const."""
    lower = scipy.linalg.cholesky(gram_s + lam * np.eye(len(gram_s)), lower=True)
    return lower.T, scipy.linalg.solve_triangular(lower, corr_s, lower=True)


def nonnegative_weights(gram_s: np.ndarray, corr_s: np.ndarray, lam: float) -> np.ndarray:
    return scipy.optimize.nnls(*_least_squares_system(gram_s, corr_s, lam), maxiter=50 * len(corr_s))[0]


def omp_nonnegative(features: torch.Tensor, k: int, reg: float = REG) -> tuple[np.ndarray, np.ndarray, int]:
    """(indices, weights > 0, number of filled slots) of k rows of features (n, d) matching their sum.

    Filled slots: if the pursuit runs out of positively correlated candidates (or of steps) before k elements have
    positive weight, the rest are the best-correlated unused rows and the weights are re-solved with a small
    positive floor, so that every method returns exactly k weighted elements per class.
    """
    f = features.flatten(1).double()
    gram = f @ f.T
    target_corr = gram.sum(1)  # F b with b = sum_i f_i
    lam = reg * float(gram.diagonal().mean())
    n = len(f)
    selected: list[int] = []
    weights = np.zeros(0)

    def residual_corr() -> torch.Tensor:
        corr = target_corr.clone()
        if selected:
            corr -= gram[:, selected] @ torch.as_tensor(weights, device=gram.device)
            corr[selected] = -torch.inf
        return corr

    def sub(index: list[int]) -> tuple[np.ndarray, np.ndarray]:
        rows = torch.as_tensor(index, device=gram.device)
        return gram[rows][:, rows].cpu().numpy(), target_corr[rows].cpu().numpy()

    for _ in range(MAX_STEPS_PER_ELEMENT * k):
        if len(selected) == k:
            break
        corr = residual_corr()
        j = int(corr.argmax())
        if not corr[j] > 0:
            break  # no unused row can reduce the residual any more
        selected.append(j)
        weights = nonnegative_weights(*sub(selected), lam)
        keep = weights > 0
        selected = [s for s, kept in zip(selected, keep) if kept]
        weights = weights[keep]
    filled = k - len(selected)
    if filled:
        corr = residual_corr()
        selected += [int(j) for j in torch.argsort(corr, descending=True, stable=True)[:filled]]
        system = _least_squares_system(*sub(selected), lam)
        floor = FILL_WEIGHT_FLOOR * n / k
        weights = scipy.optimize.lsq_linear(*system, bounds=(floor, np.inf)).x
    return np.asarray(selected, dtype=np.int64), np.asarray(weights, dtype=np.float64), filled


def relative_residual(features: torch.Tensor, selected: np.ndarray, weights: np.ndarray) -> float:
    """||sum_i f_i - sum_j w_j f_j|| / ||sum_i f_i||, computed directly from the features."""
    f = features.flatten(1).double()
    target = f.sum(0)
    approx = torch.as_tensor(weights, device=f.device) @ f[torch.as_tensor(selected, device=f.device)]
    return float(torch.linalg.vector_norm(target - approx) / torch.linalg.vector_norm(target))


def best_weights(features: torch.Tensor, selected: np.ndarray, reg: float = REG) -> np.ndarray:
    """The non-negative weights omp_nonnegative would give a fixed subset (e.g. a random one, for comparison)."""
    f = features.flatten(1).double()
    lam = reg * float((f * f).sum(1).mean())
    f_s = f[torch.as_tensor(selected, device=f.device)]
    return nonnegative_weights((f_s @ f_s.T).cpu().numpy(), (f_s @ f.sum(0)).cpu().numpy(), lam)


class GradMatchSelector(Selector):
    name = "gradmatch"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        check_budget(train, k)
        proxy = train_proxy(self.cfg, train, seed, self.device)
        chosen, chosen_weights, residuals, filled = [], [], [], 0
        for c in range(train.n_classes):
            members = train.class_indices(c)
            index = torch.as_tensor(members)
            features = last_layer_gradients(proxy.model, train.x[index], train.y[index])
            picks, weights, n_filled = omp_nonnegative(features, k)
            chosen.append(members[picks])
            chosen_weights.append(weights)
            residuals.append(relative_residual(features, picks, weights))
            filled += n_filled
        indices = np.concatenate(chosen)
        order = np.argsort(indices, kind="stable")
        info = {**proxy.info(), "gradmatch_rel_residual": float(np.mean(residuals)), "gradmatch_filled": filled}
        return SelectionResult(indices=indices[order].astype(np.int64), weights=np.concatenate(chosen_weights)[order],
                               info=info)
