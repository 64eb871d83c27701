"""The embedded default: a seeded stochastic block model with Gaussian class clusters as features (no download;
same seed, same graph). The generator here also makes synthetic_arxiv.py's graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sustainml_exp.families.gnn_blockquant.data.graph import RawGraph


@dataclass(frozen=True)
class SyntheticSpec:
    num_nodes: int
    num_features: int
    num_classes: int
    num_directed_edges: int  # unique, without self loops, before symmetrisation
    split_sizes: tuple[int, int, int]  # train, val, test; they sum to num_nodes
    # Probability that an edge's target is drawn from its source's class (otherwise from all nodes).
    homophily: float
    # Class centroids are N(0, centroid_scale^2) per feature, node noise N(0, 1): lower is harder.
    centroid_scale: float
    # Class prior proportional to (c + 1) ** -class_skew, so classes are imbalanced like arxiv's.
    class_skew: float = 0.6


def _arxiv_like_split(num_nodes: int) -> tuple[int, int, int]:
    # ogbn-arxiv's 90,941 / 29,799 / 48,603 of 169,343 nodes.
    train = round(num_nodes * 0.537)
    val = round(num_nodes * 0.176)
    return train, val, num_nodes - train - val


# Small enough for CPU smoke runs (100 epochs of a 3-layer, 128-wide GraphSAGE take ~3 s on 2 cores). Features
# alone are weak (centroids 0.1 sigma apart per feature), so accuracy comes from aggregating neighbours: that run
# reaches ~78-81 % test accuracy (chance 10 %, largest class ~17 %), train 100 %.
SPEC = SyntheticSpec(num_nodes=3000, num_features=128, num_classes=10, num_directed_edges=15_000,
                     split_sizes=_arxiv_like_split(3000), homophily=0.4, centroid_scale=0.1)


def load(root: Path, seed: int, download: bool) -> RawGraph:
    return generate("synthetic", SPEC, seed)


def generate(name: str, spec: SyntheticSpec, seed: int) -> RawGraph:
    """The synthetic graph of ``spec`` for ``seed`` (same seed, same graph), with its directed edges."""
    if sum(spec.split_sizes) != spec.num_nodes:
        raise ValueError(f"split sizes {spec.split_sizes} do not sum to {spec.num_nodes} nodes")
    rng = np.random.default_rng([seed, spec.num_nodes])

    prior = (np.arange(spec.num_classes) + 1.0) ** -spec.class_skew
    y = rng.choice(spec.num_classes, size=spec.num_nodes, p=prior / prior.sum())

    centroids = rng.standard_normal((spec.num_classes, spec.num_features), dtype=np.float32)
    x = rng.standard_normal((spec.num_nodes, spec.num_features), dtype=np.float32)
    x += spec.centroid_scale * centroids[y]

    edge_index = _sample_block_edges(spec, y, rng)

    perm = rng.permutation(spec.num_nodes)
    n_train, n_val, _ = spec.split_sizes
    splits = [np.sort(part) for part in np.split(perm, [n_train, n_train + n_val])]

    return RawGraph(name=name, x=torch.from_numpy(x), y=torch.from_numpy(y.astype(np.int64)),
                    edge_index=torch.from_numpy(edge_index), train_idx=torch.from_numpy(splits[0]),
                    val_idx=torch.from_numpy(splits[1]), test_idx=torch.from_numpy(splits[2]),
                    num_classes=spec.num_classes)


def _sample_block_edges(spec: SyntheticSpec, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``spec.num_directed_edges`` unique directed edges without self loops, as a sorted (2, E) array.

    Oversample, drop self loops and duplicates, keep a random subset of the exact size; the rare shortfall
    (many duplicates) is filled by another round, so the loop runs once or twice, never per edge.
    """
    n, target = spec.num_nodes, spec.num_directed_edges
    if target > n * (n - 1):
        raise ValueError(f"{target} directed edges do not fit in {n} nodes")
    by_class = np.argsort(y, kind="stable")
    class_size = np.bincount(y, minlength=spec.num_classes)
    class_start = np.concatenate([[0], np.cumsum(class_size)[:-1]])

    keys = np.empty(0, dtype=np.int64)  # src * n + dst, sorted and unique
    while keys.size < target:
        m = int((target - keys.size) * 1.05) + 64
        src = rng.integers(0, n, size=m)
        same_class = rng.random(m) < spec.homophily
        c = y[src]
        dst_in_class = by_class[class_start[c] + (rng.random(m) * class_size[c]).astype(np.int64)]
        dst = np.where(same_class, dst_in_class, rng.integers(0, n, size=m))
        loop = src == dst
        # Sort + neighbour comparison: several times faster than np.unique's hashing at this size.
        keys = np.sort(np.concatenate([keys, src[~loop] * n + dst[~loop]]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    surplus = rng.choice(keys.size, size=keys.size - target, replace=False)
    keep = np.ones(keys.size, dtype=bool)
    keep[surplus] = False
    keys = keys[keep]  # dropping the surplus keeps the order, so no second sort
    return np.stack([keys // n, keys % n])
