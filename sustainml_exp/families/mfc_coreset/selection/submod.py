"""SubMod: per class, greedy maximisation of a submodular function of a similarity kernel (DeepCore's Submodular).

Kernel: cosine similarity of the proxy model's per-sample last-layer gradients (bias and weight parts), as DeepCore's
Submodular computes it; the paper's baseline names (Craig, GradMatch, SubMod) follow DeepCore's. Functions:

- graph cut (cfg.submod_function=graph_cut, DeepCore's default): f(S) = lam * sum_{i in V, j in S} s_ij
  - sum_{i, j in S} s_ij with lam = cfg.graph_cut_lambda; lam trades representing the class against diversity.
- facility location: f(S) = sum_{i in V} max(0, max_{j in S} s_ij).

Marginal gains are vector operations over the candidates (facility location: lazily, on a block of the largest
upper bounds; graph cut: all at once, O(n) per step). Exactly k per class are taken even when the best gain turns
negative (graph cut with a small lam), so every method spends the same budget.
The module's greedy and objective functions are shared with craig (facility location) and the tests.
"""

from __future__ import annotations

import numpy as np
import torch

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import SUBMOD_FUNCTIONS
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget
from sustainml_exp.families.mfc_coreset.selection.proxy import last_layer_gradients, train_proxy

# Candidates whose gains a lazy greedy step evaluates first (grown 4x while the answer is not yet certain).
LAZY_BLOCK = 32


def cosine_similarity(features: torch.Tensor) -> torch.Tensor:
    unit = torch.nn.functional.normalize(features.flatten(1), dim=1)
    return unit @ unit.T


def greedy_facility_location(sim: torch.Tensor, k: int) -> np.ndarray:
    """k column indices of sim (n, n) in pick order; sim[i, j] is how well candidate j represents point i.

    Lazy greedy (Minoux), vectorised: a candidate's gain only shrinks as the selection grows, so last known gains
    are upper bounds. Each step re-evaluates the gains of the candidates with the largest bounds in one (n, m)
    operation and accepts the best once it beats every bound left unevaluated, growing the block until it does.
    """
    n = sim.shape[0]
    # How well the selection so far represents each point; 0 for the empty set, so negative similarities never count.
    covered = torch.zeros(n, dtype=sim.dtype, device=sim.device)
    by_candidate = sim.T.contiguous()  # row j: candidate j's similarities, gathered as contiguous rows
    bounds = by_candidate.clamp_min(0).sum(1)  # exact gains for the empty selection
    picks = []
    for step in range(k):
        available = n - step
        m = min(LAZY_BLOCK, available)
        while True:
            top = torch.topk(bounds, min(m + 1, available))
            candidates = top.indices[:m]
            gains = (by_candidate[candidates] - covered).clamp_min_(0).sum(1)
            bounds[candidates] = gains
            best = int(gains.argmax())
            if m == available or gains[best] >= top.values[m]:
                break
            m = min(4 * m, available)
        j = int(candidates[best])
        picks.append(j)
        bounds[j] = -torch.inf  # never again a candidate
        covered = torch.maximum(covered, by_candidate[j])
    return np.asarray(picks, dtype=np.int64)


def facility_location_objective(sim: torch.Tensor, selected: np.ndarray) -> float:
    columns = sim[:, torch.as_tensor(selected, device=sim.device)]
    return float(columns.max(1).values.clamp_min(0).sum())


def greedy_graph_cut(sim: torch.Tensor, k: int, lam: float) -> np.ndarray:
    """k indices in pick order maximising lam * sum_{i in V, j in S} s_ij - sum_{i, j in S} s_ij (sim symmetric)."""
    n = sim.shape[0]
    represent = lam * sim.sum(0)
    self_sim = sim.diagonal()
    to_selected = torch.zeros(n, dtype=sim.dtype, device=sim.device)  # sum_{i in S} s_ij for every candidate j
    taken = torch.zeros(n, dtype=torch.bool, device=sim.device)
    picks = []
    for _ in range(k):
        # f(S + j) - f(S): j represents lam * colsum_j, and adds s_jj plus 2 s_ij for each i already in S.
        gains = represent - 2.0 * to_selected - self_sim
        gains.masked_fill_(taken, -torch.inf)
        j = int(gains.argmax())
        picks.append(j)
        taken[j] = True
        to_selected += sim[j]
    return np.asarray(picks, dtype=np.int64)


def graph_cut_objective(sim: torch.Tensor, selected: np.ndarray, lam: float) -> float:
    index = torch.as_tensor(selected, device=sim.device)
    return float(lam * sim[:, index].sum() - sim[index][:, index].sum())


class SubmodSelector(Selector):
    name = "submod"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        check_budget(train, k)
        function = self.cfg.submod_function
        if function not in SUBMOD_FUNCTIONS:
            raise ConfigError(f"submod_function={function!r} is not allowed; allowed: {', '.join(SUBMOD_FUNCTIONS)}")
        proxy = train_proxy(self.cfg, train, seed, self.device)
        chosen = []
        for c in range(train.n_classes):
            members = train.class_indices(c)
            index = torch.as_tensor(members)
            sim = cosine_similarity(last_layer_gradients(proxy.model, train.x[index], train.y[index]))
            if function == "graph_cut":
                picks = greedy_graph_cut(sim, k, self.cfg.graph_cut_lambda)
            else:
                picks = greedy_facility_location(sim, k)
            chosen.append(members[picks])
        return SelectionResult(indices=np.sort(np.concatenate(chosen)).astype(np.int64), info=proxy.info())
