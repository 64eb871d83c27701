"""The embedded default: a seeded stochastic block model with Gaussian class clusters as features (no download;
same seed, same graph). The generator here also makes synthetic_arxiv.py's and synthetic_products.py's graphs;
large ones (``SyntheticSpec.cached``) are generated once per spec and seed and cached under ``data_dir`` as the
built graph, so a later run reads it in seconds instead of regenerating it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sustainml_exp.families.gnn_blockquant.data.graph import GraphData, RawGraph, build_graph_data, csr_adjacency


@dataclass(frozen=True)
class SyntheticSpec:
    num_nodes: int
    num_features: int
    num_classes: int
    # Unique, without self loops, before symmetrisation: directed edges, or with ``undirected`` unordered pairs
    # stored once each (so the undirected graph has exactly twice as many directed edges).
    num_directed_edges: int
    split_sizes: tuple[int, int, int]  # train, val, test; they sum to num_nodes
    # Probability that an edge's target is drawn from its source's class (otherwise from all nodes).
    homophily: float
    # Class centroids are N(0, centroid_scale^2) per feature, node noise N(0, 1): lower is harder.
    centroid_scale: float
    # Class prior proportional to (c + 1) ** -class_skew, so classes are imbalanced like arxiv's.
    class_skew: float = 0.6
    undirected: bool = False
    # Generate once per spec and seed and keep the built graph under data_dir (worth it for the large graphs).
    cached: bool = False


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
    """The synthetic graph of ``spec`` for ``seed`` (same seed, same graph), with its edges as sampled (one
    direction per pair with ``spec.undirected``)."""
    if sum(spec.split_sizes) != spec.num_nodes:
        raise ValueError(f"split sizes {spec.split_sizes} do not sum to {spec.num_nodes} nodes")
    rng = np.random.default_rng([seed, spec.num_nodes])

    prior = (np.arange(spec.num_classes) + 1.0) ** -spec.class_skew
    y = rng.choice(spec.num_classes, size=spec.num_nodes, p=prior / prior.sum())

    centroids = rng.standard_normal((spec.num_classes, spec.num_features), dtype=np.float32)
    x = rng.standard_normal((spec.num_nodes, spec.num_features), dtype=np.float32)
    for start in range(0, spec.num_nodes, _SAMPLE_CHUNK):  # no N x F temporary
        x[start:start + _SAMPLE_CHUNK] += spec.centroid_scale * centroids[y[start:start + _SAMPLE_CHUNK]]

    edge_index = _sample_block_edges(spec, y, rng)

    perm = rng.permutation(spec.num_nodes)
    n_train, n_val, _ = spec.split_sizes
    splits = [np.sort(part) for part in np.split(perm, [n_train, n_train + n_val])]

    return RawGraph(name=name, x=torch.from_numpy(x), y=torch.from_numpy(y.astype(np.int64)),
                    edge_index=torch.from_numpy(edge_index), train_idx=torch.from_numpy(splits[0]),
                    val_idx=torch.from_numpy(splits[1]), test_idx=torch.from_numpy(splits[2]),
                    num_classes=spec.num_classes)


# Samples drawn per vectorised pass: bounds the generator's temporaries (a few hundred MB) on the largest graphs;
# smaller graphs are drawn in one pass.
_SAMPLE_CHUNK = 1 << 24
# Bump when the generator or the cached layout changes, so old cache files are not read as the new graph.
_CACHE_VERSION = 1


def load_built(name: str, spec: SyntheticSpec, root: Path, seed: int) -> GraphData:
    """The built synthetic graph; a ``cached`` spec is read from (or, the first time, written to) ``root``."""
    if not spec.cached:
        return build_graph_data(generate(name, spec, seed))
    path = cache_path(name, spec, root, seed)
    if path.is_file():
        return _read_cached(name, path)
    graph = build_graph_data(generate(name, spec, seed))
    _write_cached(graph, path)
    return graph


def cache_path(name: str, spec: SyntheticSpec, root: Path, seed: int) -> Path:
    key = hashlib.sha256(repr((_CACHE_VERSION, sorted(asdict(spec).items()))).encode()).hexdigest()[:16]
    return Path(root) / "synthetic" / f"{name}-{key}-s{seed}.pt"


def _write_cached(graph: GraphData, path: Path) -> None:
    """Atomically (temp file + rename): an interrupted write leaves no file that a later run would read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    parts = {"x": graph.x, "y": graph.y, "train_idx": graph.train_idx, "val_idx": graph.val_idx,
             "test_idx": graph.test_idx, "crow": graph.adj.crow_indices(), "col": graph.adj.col_indices(),
             "adj_values": graph.adj.values(), "adj_t_values": graph.adj_t.values(),
             "num_classes": graph.num_classes}
    try:
        torch.save(parts, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_cached(name: str, path: Path) -> GraphData:
    # Memory-mapped: the pages are read as the run touches them and stay reclaimable page cache.
    parts = torch.load(path, mmap=True, weights_only=True)
    n = parts["x"].shape[0]
    adj = csr_adjacency(parts["crow"], parts["col"], parts["adj_values"], n)
    adj_t = csr_adjacency(parts["crow"], parts["col"], parts["adj_t_values"], n)
    return GraphData(name=name, x=parts["x"], y=parts["y"], train_idx=parts["train_idx"], val_idx=parts["val_idx"],
                     test_idx=parts["test_idx"], adj=adj, adj_t=adj_t, num_classes=parts["num_classes"],
                     num_edges=int(parts["col"].numel()))


def _sample_block_edges(spec: SyntheticSpec, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``spec.num_directed_edges`` unique edges (unordered pairs with ``spec.undirected``) without self
    loops, as a sorted (2, E) array.

    Oversample, drop self loops and duplicates, keep a random subset of the exact size; the rare shortfall
    (many duplicates) is filled by another round, so the loop runs once or twice, never per edge.
    """
    n, target = spec.num_nodes, spec.num_directed_edges
    if target > n * (n - 1) // (2 if spec.undirected else 1):
        raise ValueError(f"{target} edges do not fit in {n} nodes")
    by_class = np.argsort(y, kind="stable")
    class_size = np.bincount(y, minlength=spec.num_classes)
    class_start = np.concatenate([[0], np.cumsum(class_size)[:-1]])

    keys = np.empty(0, dtype=np.int64)  # src * n + dst, sorted and unique
    while keys.size < target:
        m = int((target - keys.size) * 1.05) + 64
        parts = [keys]
        for start in range(0, m, _SAMPLE_CHUNK):
            size = min(_SAMPLE_CHUNK, m - start)
            src = rng.integers(0, n, size=size)
            same_class = rng.random(size) < spec.homophily
            c = y[src]
            dst_in_class = by_class[class_start[c] + (rng.random(size) * class_size[c]).astype(np.int64)]
            dst = np.where(same_class, dst_in_class, rng.integers(0, n, size=size))
            del same_class, c, dst_in_class
            if spec.undirected:  # each pair as (lower, higher)
                src, dst = np.minimum(src, dst), np.maximum(src, dst)
            loop = src == dst
            parts.append(src[~loop] * n + dst[~loop])
        keys = np.concatenate(parts)
        del parts
        # Sort + neighbour comparison: several times faster than np.unique's hashing at this size.
        keys.sort()
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    surplus = rng.choice(keys.size, size=keys.size - target, replace=False)
    keep = np.ones(keys.size, dtype=bool)
    keep[surplus] = False
    keys = keys[keep]  # dropping the surplus keeps the order, so no second sort
    return np.stack([keys // n, keys % n])
