"""Graph datasets for the GNN experiments: seeded synthetic graphs and the real ogbn-arxiv, ogbn-products, Flickr.

Every loader returns a ``RawGraph`` (edges as the source stores them); ``build_graph_data`` then applies the
common protocol: drop self loops, make the graph undirected (as the arxiv scripts' ``to_undirected`` does)
and build the row-normalised mean-aggregation adjacency that the model multiplies with.

Large synthetic graphs (``SyntheticSpec.cached``) are generated once per spec and seed and cached under
``data_dir`` as the built graph, so a later run reads it in seconds instead of regenerating it.

The real datasets are read through their libraries (ogb, torch_geometric), which download on their own
whenever their raw files are missing. Presence is therefore checked here first, so that a missing dataset is a
one-line ``DataMissingError`` instead of a network access, unless the caller asked for ``download``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

# ogb's import starts a version check over the network unless this is set first.
os.environ.setdefault("OUTDATED_IGNORE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sustainml_exp.errors import ConfigError, DataMissingError  # noqa: E402
from sustainml_exp.families.gnn_blockquant.config import GRAPH_DATASETS  # noqa: E402

__all__ = [
    "GRAPH_DATASETS",
    "GraphData",
    "GraphShape",
    "RawGraph",
    "SyntheticSpec",
    "SYNTHETIC_SPECS",
    "build_graph_data",
    "check_present",
    "generate_synthetic",
    "graph_shape",
    "load_graph",
    "load_synthetic",
    "synthetic_cache_path",
    "undirected_mean_adjacency",
]


@dataclass(frozen=True)
class GraphShape:
    """What memory depends on, known before a graph is loaded (see ``graph_shape``)."""

    num_nodes: int
    num_features: int
    num_classes: int
    num_edges: int  # directed edges of the adjacency, i.e. after making the graph undirected
    num_train: int


@dataclass
class GraphData:
    name: str
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64
    train_idx: torch.Tensor  # int64
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    # (N, N) sparse CSR float32: adj[dst, src] = 1 / in_degree(dst), no self loops. The graph is undirected, so
    # adj_t (its transpose, which the backward of adj @ h multiplies with) has the same pattern and shares
    # adj's index tensors; only the values differ.
    adj: torch.Tensor
    adj_t: torch.Tensor
    num_classes: int
    num_edges: int  # directed edges stored in adj, i.e. after making the graph undirected

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> GraphShape:
        return GraphShape(num_nodes=self.num_nodes, num_features=self.x.shape[1], num_classes=self.num_classes,
                          num_edges=self.num_edges, num_train=self.train_idx.numel())

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
    """Load a graph dataset; ``seed`` only matters for the synthetic graphs, ``root`` for the real ones and the
    cache of the large synthetic ones."""
    if name in SYNTHETIC_SPECS:
        return load_synthetic(name, Path(root), seed)
    if name in _OGBN_DATASETS:
        return build_graph_data(_load_ogbn(_OGBN_DATASETS[name], Path(root), download))
    if name == "flickr":
        return build_graph_data(_load_flickr(Path(root), download))
    raise ConfigError(f"dataset {name!r} is not a graph dataset; allowed: {', '.join(GRAPH_DATASETS)}")


# Shapes of the real graphs after the protocol (OGB's and PyG's dataset statistics), for the memory preflight,
# which runs before a graph is loaded.
_REAL_SHAPES = {
    "ogbn-arxiv": GraphShape(num_nodes=169_343, num_features=128, num_classes=40, num_edges=2_315_598,
                             num_train=90_941),
    "ogbn-products": GraphShape(num_nodes=2_449_029, num_features=100, num_classes=47, num_edges=123_718_280,
                                num_train=196_615),
    "flickr": GraphShape(num_nodes=89_250, num_features=500, num_classes=7, num_edges=899_756, num_train=44_625),
}


def graph_shape(name: str) -> GraphShape:
    """The shape of dataset ``name`` without loading it (a synthetic graph's edge count is its upper bound)."""
    if name in SYNTHETIC_SPECS:
        spec = SYNTHETIC_SPECS[name]
        return GraphShape(num_nodes=spec.num_nodes, num_features=spec.num_features, num_classes=spec.num_classes,
                          num_edges=2 * spec.num_directed_edges, num_train=spec.split_sizes[0])
    if name in _REAL_SHAPES:
        return _REAL_SHAPES[name]
    raise ConfigError(f"dataset {name!r} is not a graph dataset; allowed: {', '.join(GRAPH_DATASETS)}")


def build_graph_data(raw: RawGraph) -> GraphData:
    adj, adj_t = undirected_mean_adjacency(raw.edge_index, raw.x.shape[0])
    return GraphData(name=raw.name, x=raw.x.to(torch.float32).contiguous(), y=raw.y.to(torch.int64),
                     train_idx=raw.train_idx.to(torch.int64), val_idx=raw.val_idx.to(torch.int64),
                     test_idx=raw.test_idx.to(torch.int64), adj=adj, adj_t=adj_t,
                     num_classes=raw.num_classes, num_edges=int(adj.values().numel()))


def undirected_mean_adjacency(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(adj, adj_t) of the graph made undirected, as sparse CSR float32: self loops dropped, every edge in both
    directions, duplicates once (torch_geometric's remove_self_loops + to_undirected), and
    adj[dst, src] = 1 / in_degree(dst), so ``adj @ h`` is the mean over neighbours (all-zero rows for isolated
    nodes). adj_t shares adj's index tensors.

    Sorted in place in numpy, so on ogbn-products (124M directed edges) it holds the edges once, their keys twice
    and the result, instead of the several edge-sized copies of to_undirected's coalesce."""
    n = num_nodes
    edges = edge_index.numpy()
    src, dst = edges[0].astype(np.int64, copy=False), edges[1].astype(np.int64, copy=False)
    e = src.size
    keys = np.empty(2 * e, dtype=np.int64)  # row * n + col of both directions, in chunks: no edge-sized temporaries
    for start in range(0, e, _EDGE_CHUNK):
        stop = min(start + _EDGE_CHUNK, e)
        s, d = src[start:stop], dst[start:stop]
        np.add(s * n, d, out=keys[start:stop])
        np.add(d * n, s, out=keys[e + start:e + stop])
    keys.sort()
    keep = np.empty(keys.size, dtype=bool)
    if keys.size:
        keep[0] = True
        np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    for start in range(0, keys.size, _EDGE_CHUNK):  # self loops
        chunk = keys[start:start + _EDGE_CHUNK]
        keep[start:start + _EDGE_CHUNK] &= chunk // n != chunk % n
    keys = keys[keep]
    del keep
    crow = np.searchsorted(keys, np.arange(n + 1, dtype=np.int64) * n)
    np.remainder(keys, n, out=keys)  # now the column indices
    degree = np.diff(crow)
    inv_degree = np.zeros(n, dtype=np.float32)
    np.divide(1.0, degree, out=inv_degree, where=degree > 0)
    crow_t, col_t = torch.from_numpy(crow), torch.from_numpy(keys)
    adj = _csr(crow_t, col_t, torch.from_numpy(np.repeat(inv_degree, degree)), n)
    adj_t = _csr(crow_t, col_t, torch.from_numpy(inv_degree[keys]), n)
    return adj, adj_t


_EDGE_CHUNK = 1 << 23


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    # Built sorted and unique above, so the invariant check would only cost time; torch's "CSR is beta" notice
    # would print on every run although only spmm, which is stable on CSR, touches these tensors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, (n, n), dtype=torch.float32, check_invariants=False)


# --------------------------------------------------------------------------------------------------------------
# Synthetic graphs: a stochastic block model with Gaussian class clusters as features.


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
    # ogbn-products' exact shape: 61,859,140 undirected edges (123,718,280 directed) and its sales-rank split.
    "synthetic_products": SyntheticSpec(num_nodes=2_449_029, num_features=100, num_classes=47,
                                        num_directed_edges=61_859_140, split_sizes=(196_615, 39_323, 2_213_091),
                                        homophily=0.4, centroid_scale=0.1, undirected=True, cached=True),
}


def generate_synthetic(name: str, seed: int, spec: SyntheticSpec | None = None) -> RawGraph:
    """The synthetic graph ``name`` (its spec, or ``spec``) for ``seed``: same seed, same graph, with its edges
    as sampled (one direction per pair)."""
    spec = spec or SYNTHETIC_SPECS[name]
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


def load_synthetic(name: str, root: Path, seed: int, spec: SyntheticSpec | None = None) -> GraphData:
    """The built synthetic graph; a ``cached`` spec is read from (or, the first time, written to) ``root``."""
    spec = spec or SYNTHETIC_SPECS[name]
    if not spec.cached:
        return build_graph_data(generate_synthetic(name, seed, spec))
    path = synthetic_cache_path(name, root, seed, spec)
    if path.is_file():
        return _read_cached(name, path)
    graph = build_graph_data(generate_synthetic(name, seed, spec))
    _write_cached(graph, path)
    return graph


def synthetic_cache_path(name: str, root: Path, seed: int, spec: SyntheticSpec) -> Path:
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
    adj = _csr(parts["crow"], parts["col"], parts["adj_values"], n)
    adj_t = _csr(parts["crow"], parts["col"], parts["adj_t_values"], n)
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


# --------------------------------------------------------------------------------------------------------------
# Real datasets: presence checks that mirror what the libraries read, then the libraries themselves.

@dataclass(frozen=True)
class _OGBNodeDataset:
    """What ogb's PygNodePropPredDataset reads for one dataset (its master.csv entry), for the presence check."""

    name: str  # ogbn-arxiv
    download_name: str  # arxiv: the zip's name and the folder inside it
    raw: tuple[str, ...]
    split: str  # split/<split>/...

    @property
    def url(self) -> str:
        return f"http://snap.stanford.edu/ogb/data/nodeproppred/{self.download_name}.zip"

    @property
    def split_files(self) -> tuple[str, ...]:
        return tuple(f"split/{self.split}/{part}.csv.gz" for part in ("train", "valid", "test"))

    @property
    def split_cache(self) -> str:
        return f"split/{self.split}/split_dict.pt"


_OGB_RELEASE = "RELEASE_v1.txt"
_OGB_PROCESSED = "processed/geometric_data_processed.pt"
_OGB_RAW = ("raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz", "raw/num-node-list.csv.gz",
            "raw/num-edge-list.csv.gz")
_OGBN_DATASETS = {d.name: d for d in (
    _OGBNodeDataset("ogbn-arxiv", "arxiv", (*_OGB_RAW[:3], "raw/node_year.csv.gz", *_OGB_RAW[3:]), "time"),
    _OGBNodeDataset("ogbn-products", "products", _OGB_RAW, "sales_ranking"),
)}

_FLICKR_SOURCE = "GraphSAINT's Flickr data (the Google Drive folder linked from github.com/GraphSAINT/GraphSAINT)"
_FLICKR_RAW = ("raw/adj_full.npz", "raw/feats.npy", "raw/class_map.json", "raw/role.json")
_FLICKR_PROCESSED = "processed/data.pt"


def _missing(directory: Path, alternatives: list[tuple[str, ...]]) -> list[str]:
    """Files missing from ``directory``: none if some alternative is complete, else those of the first one."""
    for files in alternatives:
        if all((directory / f).is_file() for f in files):
            return []
    return [f for f in alternatives[0] if not (directory / f).is_file()]


def _ogbn_dir(root: Path, dataset: _OGBNodeDataset) -> Path:
    # ogb prefers a folder left by its older PyG-specific release when one exists.
    folder = dataset.name.replace("-", "_")
    legacy = root / f"{folder}_pyg"
    return legacy if legacy.is_dir() else root / folder


def _missing_ogbn(directory: Path, dataset: _OGBNodeDataset) -> list[str]:
    # Without the release marker ogb asks on stdin whether to delete the folder, so it is required too.
    return (_missing(directory, [(_OGB_RELEASE,)])
            + _missing(directory, [dataset.raw, (_OGB_PROCESSED,)])
            + _missing(directory, [dataset.split_files, (dataset.split_cache,)]))


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


def _ogbn_present(spec: _OGBNodeDataset, root: Path, download: bool) -> tuple[Path, list[str]]:
    """(folder, missing files); DataMissingError when they are missing and cannot be downloaded."""
    directory = _ogbn_dir(root, spec)
    missing = _missing_ogbn(directory, spec)
    by_hand = f"unzip {spec.url} in {root} and rename its folder {spec.download_name} to {directory.name}"
    if missing and (not download or directory.exists()):
        # Downloading into an existing folder without the release marker makes ogb ask on stdin whether to
        # delete it; the user decides that, not a batch job.
        raise _data_missing(spec.name, directory, missing, by_hand, incomplete_copy=download)
    return directory, missing


def _flickr_present(root: Path, download: bool) -> tuple[Path, list[str]]:
    directory = root / "flickr"
    missing = _missing_flickr(directory)
    if missing and not download:
        files = ", ".join(Path(f).name for f in _FLICKR_RAW)
        by_hand = f"place {files} from {_FLICKR_SOURCE} in {directory / 'raw'}"
        raise _data_missing("flickr", directory, missing, by_hand)
    return directory, missing


def check_present(name: str, root: str | Path, download: bool = False) -> None:
    """DataMissingError (one line) now, before any other work, when ``load_graph`` would raise it."""
    if name in _OGBN_DATASETS:
        _ogbn_present(_OGBN_DATASETS[name], Path(root), download)
    elif name == "flickr":
        _flickr_present(Path(root), download)


def _load_ogbn(spec: _OGBNodeDataset, root: Path, download: bool) -> RawGraph:
    directory, missing = _ogbn_present(spec, root, download)

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
            return dataset_cls(name=spec.name, root=str(root))

    dataset = _construct(spec.name, directory, missing, make)
    split = dataset.get_idx_split()
    data = dataset[0]
    return RawGraph(name=spec.name, x=data.x.to(torch.float32), y=data.y.view(-1).to(torch.int64),
                    edge_index=data.edge_index.to(torch.int64), train_idx=split["train"], val_idx=split["valid"],
                    test_idx=split["test"], num_classes=int(dataset.num_classes))


def _load_flickr(root: Path, download: bool) -> RawGraph:
    directory, missing = _flickr_present(root, download)

    from torch_geometric.datasets import Flickr

    def make(offline: bool) -> Any:
        return (_offline(Flickr) if offline else Flickr)(root=str(directory))

    data = _construct("flickr", directory, missing, make)[0]
    y = data.y.view(-1).to(torch.int64)
    return RawGraph(name="flickr", x=data.x.to(torch.float32), y=y, edge_index=data.edge_index.to(torch.int64),
                    train_idx=data.train_mask.nonzero().view(-1), val_idx=data.val_mask.nonzero().view(-1),
                    test_idx=data.test_mask.nonzero().view(-1), num_classes=int(y.max()) + 1)
