"""Graph datasets for the GNN experiments: two seeded synthetic graphs and the real ogbn-arxiv and Flickr.

Every loader returns a ``RawGraph`` (edges as the source stores them); ``build_graph_data`` then applies the
common protocol: drop self loops, make the graph undirected with ``to_undirected`` (as the arxiv scripts do)
and build the row-normalised mean-aggregation adjacency that the model multiplies with.

The real datasets are read through their libraries (ogb, torch_geometric), which download on their own
whenever their raw files are missing. Presence is therefore checked here first, so that a missing dataset is a
one-line ``DataMissingError`` instead of a network access, unless the caller asked for ``download``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

# ogb's import starts a version check over the network unless this is set first.
os.environ.setdefault("OUTDATED_IGNORE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# torch_geometric's import decorates helpers with torch.jit.script, which recent torch deprecates: a warning
# about the library, not about the user's run, so it stays out of every run's output.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from torch_geometric.utils import remove_self_loops, to_undirected  # noqa: E402

from sustainml_exp.errors import ConfigError, DataMissingError  # noqa: E402
from sustainml_exp.families.gnn_blockquant.config import GRAPH_DATASETS  # noqa: E402

__all__ = [
    "GRAPH_DATASETS",
    "GraphData",
    "RawGraph",
    "SyntheticSpec",
    "SYNTHETIC_SPECS",
    "build_graph_data",
    "generate_synthetic",
    "load_graph",
    "mean_aggregation_adjacency",
]


@dataclass
class GraphData:
    name: str
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64
    train_idx: torch.Tensor  # int64
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    adj: torch.Tensor  # (N, N) sparse CSR float32: adj[dst, src] = 1 / in_degree(dst), no self loops
    adj_t: torch.Tensor  # adj transposed, sparse CSR (the backward of adj @ h multiplies with it)
    num_classes: int
    num_edges: int  # directed edges stored in adj, i.e. after making the graph undirected

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    def data_tensors(self) -> list[torch.Tensor]:
        """Every tensor of the graph, so that memory accounting can leave the data out."""
        return [getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]

    def to(self, device: torch.device | str) -> GraphData:
        moved: dict[str, Any] = {t.name: getattr(self, t.name).to(device) for t in fields(self)
                                 if isinstance(getattr(self, t.name), torch.Tensor)}
        return replace(self, **moved)


@dataclass
class RawGraph:
    """A graph as its source provides it, before the common symmetrise-and-normalise protocol."""

    name: str
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64
    edge_index: torch.Tensor  # (2, E) int64, row 0 = source, row 1 = target, possibly one direction only
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    num_classes: int


def load_graph(name: str, root: str | Path, seed: int, download: bool = False) -> GraphData:
    """Load a graph dataset; ``seed`` only matters for the synthetic graphs, ``root`` only for the real ones."""
    if name in SYNTHETIC_SPECS:
        raw = generate_synthetic(name, seed)
    elif name == "ogbn-arxiv":
        raw = _load_ogbn_arxiv(Path(root), download)
    elif name == "flickr":
        raw = _load_flickr(Path(root), download)
    else:
        raise ConfigError(f"dataset {name!r} is not a graph dataset; allowed: {', '.join(GRAPH_DATASETS)}")
    return build_graph_data(raw)


def build_graph_data(raw: RawGraph) -> GraphData:
    num_nodes = raw.x.shape[0]
    edge_index, _ = remove_self_loops(raw.edge_index)
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)
    adj, adj_t = mean_aggregation_adjacency(edge_index, num_nodes)
    return GraphData(name=raw.name, x=raw.x.to(torch.float32).contiguous(), y=raw.y.to(torch.int64),
                     train_idx=raw.train_idx.to(torch.int64), val_idx=raw.val_idx.to(torch.int64),
                     test_idx=raw.test_idx.to(torch.int64), adj=adj, adj_t=adj_t,
                     num_classes=raw.num_classes, num_edges=int(edge_index.shape[1]))


def mean_aggregation_adjacency(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(adj, adj_t) as sparse CSR float32 with adj[dst, src] = 1 / in_degree(dst) for each message src -> dst.

    ``adj @ h`` is then the mean over in-neighbours; a node without in-neighbours gets an all-zero row.
    Duplicate edges count once.
    """
    # Sorted unique keys order the edges by (src, dst): adj_t's CSR order as is, adj's after one more sort.
    # Two sorts instead of two COO coalesces (each a sort plus a reduction) roughly halves the time on arxiv.
    n = num_nodes
    key = torch.unique(edge_index[0].to(torch.int64) * n + edge_index[1].to(torch.int64), sorted=True)
    src, dst = key // n, key % n
    in_degree = torch.bincount(dst, minlength=n).to(torch.float32)
    values = in_degree[dst].reciprocal()
    adj_t = _csr(src, dst, values, n)
    by_dst = torch.sort(dst * n + src).indices
    adj = _csr(dst[by_dst], src[by_dst], values[by_dst], n)
    return adj, adj_t


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Sparse CSR from unique (row, col) pairs already sorted by row, then column."""
    crow = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=n), dim=0, out=crow[1:])
    # Built sorted and unique above, so the invariant check would only cost time; torch's "CSR is beta" notice
    # would print on every run although only spmm, which is stable on CSR, touches these tensors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols, values, (n, n), dtype=torch.float32, check_invariants=False)


# --------------------------------------------------------------------------------------------------------------
# Synthetic graphs: a stochastic block model with Gaussian class clusters as features.


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


SYNTHETIC_SPECS: dict[str, SyntheticSpec] = {
    # Small enough for CPU smoke runs (100 epochs of a 3-layer, 128-wide GraphSAGE take ~3 s on 2 cores).
    # Features alone are weak (centroids 0.1 sigma apart per feature), so accuracy comes from aggregating
    # neighbours: that run reaches ~78-81 % test accuracy (chance 10 %, largest class ~17 %), train 100 %.
    "synthetic": SyntheticSpec(num_nodes=3000, num_features=128, num_classes=10, num_directed_edges=15_000,
                               split_sizes=_arxiv_like_split(3000), homophily=0.4, centroid_scale=0.1),
    # ogbn-arxiv's exact shape, so memory and time per epoch match the real graph without downloading it.
    "synthetic_arxiv": SyntheticSpec(num_nodes=169_343, num_features=128, num_classes=40,
                                     num_directed_edges=1_166_243, split_sizes=(90_941, 29_799, 48_603),
                                     homophily=0.4, centroid_scale=0.1),
}


def generate_synthetic(name: str, seed: int) -> RawGraph:
    """The synthetic graph ``name`` for ``seed`` (same seed, same graph), with its directed edges."""
    spec = SYNTHETIC_SPECS[name]
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


# --------------------------------------------------------------------------------------------------------------
# Real datasets: presence checks that mirror what the libraries read, then the libraries themselves.

_ARXIV_URL = "http://snap.stanford.edu/ogb/data/nodeproppred/arxiv.zip"
_ARXIV_RELEASE = "RELEASE_v1.txt"
_ARXIV_RAW = ("raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz", "raw/node_year.csv.gz",
              "raw/num-node-list.csv.gz", "raw/num-edge-list.csv.gz")
_ARXIV_PROCESSED = "processed/geometric_data_processed.pt"
_ARXIV_SPLIT = ("split/time/train.csv.gz", "split/time/valid.csv.gz", "split/time/test.csv.gz")
_ARXIV_SPLIT_CACHE = "split/time/split_dict.pt"

_FLICKR_SOURCE = "GraphSAINT's Flickr data (the Google Drive folder linked from github.com/GraphSAINT/GraphSAINT)"
_FLICKR_RAW = ("raw/adj_full.npz", "raw/feats.npy", "raw/class_map.json", "raw/role.json")
_FLICKR_PROCESSED = "processed/data.pt"


def _missing(directory: Path, alternatives: list[tuple[str, ...]]) -> list[str]:
    """Files missing from ``directory``: none if some alternative is complete, else those of the first one."""
    for files in alternatives:
        if all((directory / f).is_file() for f in files):
            return []
    return [f for f in alternatives[0] if not (directory / f).is_file()]


def _ogbn_arxiv_dir(root: Path) -> Path:
    # ogb prefers a folder left by its older PyG-specific release when one exists.
    legacy = root / "ogbn_arxiv_pyg"
    return legacy if legacy.is_dir() else root / "ogbn_arxiv"


def _missing_ogbn_arxiv(directory: Path) -> list[str]:
    # Without the release marker ogb asks on stdin whether to delete the folder, so it is required too.
    return (_missing(directory, [(_ARXIV_RELEASE,)])
            + _missing(directory, [_ARXIV_RAW, (_ARXIV_PROCESSED,)])
            + _missing(directory, [_ARXIV_SPLIT, (_ARXIV_SPLIT_CACHE,)]))


def _missing_flickr(directory: Path) -> list[str]:
    return _missing(directory, [_FLICKR_RAW, (_FLICKR_PROCESSED,)])


def _data_missing(name: str, directory: Path, missing: list[str], by_hand: str,
                  incomplete_copy: bool = False) -> DataMissingError:
    fix = (f"delete {directory} and rerun with download=true" if incomplete_copy
           else "rerun with download=true on a machine with internet")
    what = f"missing {', '.join(missing)} in {directory}" if directory.exists() else f"no folder {directory}"
    return DataMissingError(f"dataset {name!r} not found: {what}; {fix}, or {by_hand}")


def _offline(dataset_cls: type) -> type:
    """``dataset_cls`` that never downloads (presence was checked before it is constructed).

    torch_geometric calls ``download`` whenever raw files are missing, even when the processed file it then
    loads is present; that case is the only one that reaches this override.
    """

    class Offline(dataset_cls):  # type: ignore[misc, valid-type]
        def download(self) -> None:
            pass

    Offline.__name__ = Offline.__qualname__ = dataset_cls.__name__
    return Offline


def _construct(name: str, directory: Path, missing: list[str], make: Callable[[bool], Any]) -> Any:
    """``make(offline)``, turning a failed download into DataMissingError without leaving a stub folder.

    A stub left by a failed download would make ogb prompt on stdin at the next run (folder without marker).
    """
    existed = directory.exists()
    try:
        return make(not missing)
    except OSError as err:  # urllib's URLError included: a download run without network
        if not missing:
            raise
        if not existed:
            shutil.rmtree(directory, ignore_errors=True)
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataMissingError(f"dataset {name!r} could not be downloaded into {directory}: {reason}") from err


def _load_ogbn_arxiv(root: Path, download: bool) -> RawGraph:
    directory = _ogbn_arxiv_dir(root)
    missing = _missing_ogbn_arxiv(directory)
    by_hand = f"unzip {_ARXIV_URL} in {root} and rename its folder arxiv to {directory.name}"
    if missing and (not download or directory.exists()):
        # Downloading into an existing folder without the release marker makes ogb ask on stdin whether to
        # delete it; the user decides that, not a batch job.
        raise _data_missing("ogbn-arxiv", directory, missing, by_hand, incomplete_copy=download)

    from ogb.nodeproppred import PygNodePropPredDataset
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    def make(offline: bool) -> Any:
        dataset_cls = _offline(PygNodePropPredDataset) if offline else PygNodePropPredDataset
        # ogb 1.3.6 reads its processed file with a bare torch.load, which defaults to weights_only since
        # torch 2.6; allowing exactly the PyG classes that file pickles keeps the safe loader working.
        safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        allowed = safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage]) if safe_globals else nullcontext()
        with allowed, warnings.catch_warnings():
            # ogb wraps a read-only numpy array when it processes the raw files; nothing writes to it.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return dataset_cls(name="ogbn-arxiv", root=str(root))

    dataset = _construct("ogbn-arxiv", directory, missing, make)
    split = dataset.get_idx_split()
    data = dataset[0]
    return RawGraph(name="ogbn-arxiv", x=data.x.to(torch.float32), y=data.y.view(-1).to(torch.int64),
                    edge_index=data.edge_index.to(torch.int64), train_idx=split["train"], val_idx=split["valid"],
                    test_idx=split["test"], num_classes=int(dataset.num_classes))


def _load_flickr(root: Path, download: bool) -> RawGraph:
    directory = root / "flickr"
    missing = _missing_flickr(directory)
    if missing and not download:
        files = ", ".join(Path(f).name for f in _FLICKR_RAW)
        by_hand = f"place {files} from {_FLICKR_SOURCE} in {directory / 'raw'}"
        raise _data_missing("flickr", directory, missing, by_hand)

    from torch_geometric.datasets import Flickr

    def make(offline: bool) -> Any:
        return (_offline(Flickr) if offline else Flickr)(root=str(directory))

    data = _construct("flickr", directory, missing, make)[0]
    y = data.y.view(-1).to(torch.int64)
    return RawGraph(name="flickr", x=data.x.to(torch.float32), y=y, edge_index=data.edge_index.to(torch.int64),
                    train_idx=data.train_mask.nonzero().view(-1), val_idx=data.val_mask.nonzero().view(-1),
                    test_idx=data.test_mask.nonzero().view(-1), num_classes=int(y.max()) + 1)
