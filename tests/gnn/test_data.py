"""Graph loaders: synthetic generators, the adjacency protocol, and the real loaders on tiny on-disk copies.

The ogbn-arxiv and Flickr tests write a few-node graph in each library's real raw layout and read it through
the library, with every network path patched to fail, so they prove both the format and the offline check.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

os.environ.setdefault("OUTDATED_IGNORE", "1")

from sustainml_exp.errors import ConfigError, DataMissingError  # noqa: E402
from sustainml_exp.families.gnn_blockquant.data import (  # noqa: E402
    GRAPH_DATASETS,
    GraphData,
    build_graph_data,
    graph_shape,
    load_graph,
    load_raw_graph,
    undirected_mean_adjacency,
)
from sustainml_exp.families.gnn_blockquant.data import synthetic as synthetic_module  # noqa: E402
from sustainml_exp.families.gnn_blockquant.data.synthetic import SyntheticSpec, cache_path, load_built  # noqa: E402
from sustainml_exp.families.gnn_blockquant.data.synthetic_products import SPEC as PRODUCTS_SPEC  # noqa: E402

ARXIV_NODES, ARXIV_DIRECTED_EDGES = 169_343, 1_166_243


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way out to the network fail (as on an offline machine) and record the attempts."""
    calls: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(repr(args[:2]))
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def dense(t: torch.Tensor) -> torch.Tensor:
    return t.to_dense()


def assert_valid_graph(g: GraphData, num_features: int) -> None:
    n = g.x.shape[0]
    assert g.x.shape == (n, num_features) and g.x.dtype == torch.float32
    assert g.y.shape == (n,) and g.y.dtype == torch.int64
    assert int(g.y.min()) >= 0 and int(g.y.max()) < g.num_classes
    splits = [g.train_idx, g.val_idx, g.test_idx]
    assert all(s.dtype == torch.int64 for s in splits)
    assert torch.equal(torch.sort(torch.cat(splits)).values, torch.arange(n)), "splits must be disjoint, covering"
    for a in (g.adj, g.adj_t):
        assert a.layout == torch.sparse_csr and a.dtype == torch.float32 and a.shape == (n, n)
    assert g.num_edges == g.adj.values().numel() == g.adj_t.values().numel()


def assert_mean_adjacency(g: GraphData) -> None:
    """Row-normalised, no self loops, undirected pattern, and adj_t the exact transpose of adj."""
    a, at = dense(g.adj), dense(g.adj_t)
    assert torch.equal(at, a.t())
    assert torch.all(a.diagonal() == 0)
    assert torch.equal(a != 0, (a != 0).t()), "graph must be undirected"
    degree = (a != 0).sum(dim=1)
    row_sums = a.sum(dim=1)
    assert torch.allclose(row_sums[degree > 0], torch.ones(int((degree > 0).sum())), atol=1e-5)
    assert torch.all(row_sums[degree == 0] == 0)


# ---------------------------------------------------------------------------------------------------------------
# Protocol pieces


def test_allowed_names() -> None:
    assert GRAPH_DATASETS == ("synthetic", "synthetic_arxiv", "synthetic_products", "ogbn-arxiv", "ogbn-products",
                              "flickr")


def test_unknown_name_is_config_error_listing_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_graph("cora", tmp_path, 0)
    message = str(err.value)
    assert "\n" not in message and "'cora'" in message
    assert message.endswith(
        "allowed: synthetic, synthetic_arxiv, synthetic_products, ogbn-arxiv, ogbn-products, flickr")


def test_mean_adjacency_on_hand_made_graph() -> None:
    # edges 0-1 (both directions given), 2->1 (twice), a self loop 3->3; nodes 3 and 4 end up isolated
    edge_index = torch.tensor([[0, 2, 1, 2, 3], [1, 1, 0, 1, 3]])
    adj, adj_t = undirected_mean_adjacency(edge_index, 5)
    expected = torch.zeros(5, 5)
    expected[1, 0] = expected[1, 2] = 0.5
    expected[0, 1] = expected[2, 1] = 1.0
    assert adj.layout == adj_t.layout == torch.sparse_csr
    assert torch.equal(dense(adj), expected)
    assert torch.equal(dense(adj_t), expected.t())
    assert adj_t.col_indices().data_ptr() == adj.col_indices().data_ptr(), "adj_t shares adj's indices"
    h = torch.arange(10, dtype=torch.float32).view(5, 2)
    assert torch.equal(adj @ h, torch.stack([h[1], (h[0] + h[2]) / 2, h[1], torch.zeros(2), torch.zeros(2)]))


# ---------------------------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_is_deterministic_per_seed(tmp_path: Path) -> None:
    a, b, c = (load_graph("synthetic", tmp_path, seed) for seed in (0, 0, 1))
    for t_a, t_b in zip(a.data_tensors(), b.data_tensors()):
        assert torch.equal(dense(t_a), dense(t_b)) if t_a.is_sparse_csr else torch.equal(t_a, t_b)
    assert a.num_edges == b.num_edges
    assert not torch.equal(a.x, c.x) and not torch.equal(a.y, c.y)
    assert not torch.equal(a.adj.col_indices(), c.adj.col_indices())


def test_synthetic_shape_splits_and_adjacency(tmp_path: Path) -> None:
    g = load_graph("synthetic", tmp_path, 0)
    assert g.name == "synthetic"
    assert_valid_graph(g, num_features=128)
    n = g.x.shape[0]
    assert 1000 <= n <= 10_000
    # arxiv-like 54 / 18 / 28 % split
    assert [round(len(s) / n, 2) for s in (g.train_idx, g.val_idx, g.test_idx)] == [0.54, 0.18, 0.29]
    assert torch.unique(g.y).numel() == g.num_classes
    assert_mean_adjacency(g)
    assert len(g.data_tensors()) == 7


def test_synthetic_is_homophilous_with_class_dependent_features(tmp_path: Path) -> None:
    g = load_graph("synthetic", tmp_path, 0)
    dst = torch.repeat_interleave(torch.arange(g.x.shape[0]), g.adj.crow_indices().diff())
    src = g.adj.col_indices()
    homophily = (g.y[src] == g.y[dst]).float().mean().item()
    assert homophily > 3 / g.num_classes
    # Nearest class mean on train nodes beats chance: the features carry the class.
    means = torch.stack([g.x[g.train_idx][g.y[g.train_idx] == c].mean(0) for c in range(g.num_classes)])
    pred = torch.cdist(g.x[g.test_idx], means).argmin(1)
    assert (pred == g.y[g.test_idx]).float().mean().item() > 2 / g.num_classes


def test_graph_data_to_keeps_everything(tmp_path: Path) -> None:
    g = load_graph("synthetic", tmp_path, 0)
    moved = g.to("cpu")
    assert moved.num_edges == g.num_edges and moved.num_classes == g.num_classes and moved.name == g.name
    assert moved.adj.layout == torch.sparse_csr and torch.equal(moved.x, g.x)


# ---------------------------------------------------------------------------------------------------------------
# synthetic_products: the full spec's numbers, and a scaled-down copy of it through the same generator and cache

PRODUCTS_NODES, PRODUCTS_PAIRS = 2_449_029, 61_859_140


def _small_products(scale: int = 500) -> SyntheticSpec:
    """synthetic_products with nodes, pairs and split divided by ``scale`` (same degree, features, classes)."""
    spec = PRODUCTS_SPEC
    train, val, _ = (s // scale for s in spec.split_sizes)
    nodes = spec.num_nodes // scale
    return replace(spec, num_nodes=nodes, num_directed_edges=spec.num_directed_edges // scale,
                   split_sizes=(train, val, nodes - train - val))


def test_synthetic_products_spec_has_products_shape() -> None:
    spec = PRODUCTS_SPEC
    assert (spec.num_nodes, spec.num_features, spec.num_classes) == (PRODUCTS_NODES, 100, 47)
    assert spec.num_directed_edges == PRODUCTS_PAIRS and spec.undirected and spec.cached
    assert spec.split_sizes == (196_615, 39_323, 2_213_091)
    shape = graph_shape("synthetic_products")
    assert shape.num_edges == 2 * PRODUCTS_PAIRS and shape.num_train == 196_615


def test_scaled_products_shape_split_and_exact_edge_count(tmp_path: Path) -> None:
    spec = _small_products()
    g = load_built("synthetic_products", spec, tmp_path, 0)
    assert_valid_graph(g, num_features=100)
    assert g.num_nodes == spec.num_nodes and g.num_classes == 47
    assert (len(g.train_idx), len(g.val_idx), len(g.test_idx)) == spec.split_sizes
    # unordered pairs, each once: the undirected graph has exactly twice as many directed edges
    assert g.num_edges == 2 * spec.num_directed_edges
    assert_mean_adjacency(g)
    dst = torch.repeat_interleave(torch.arange(g.num_nodes), g.adj.crow_indices().diff())
    assert (g.y[g.adj.col_indices()] == g.y[dst]).float().mean().item() > 10 / 47  # homophilous


def test_scaled_products_is_deterministic_and_cached_atomically(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _small_products()
    first = load_built("synthetic_products", spec, tmp_path / "a", 0)
    fresh = load_built("synthetic_products", spec, tmp_path / "b", 0)
    other_seed = load_built("synthetic_products", spec, tmp_path / "a", 1)
    cached = sorted(p.name for p in (tmp_path / "a" / "synthetic").iterdir())
    assert len(cached) == 2 and all(name.endswith((".pt")) and not name.startswith(".") for name in cached)
    # the second load reads the cache: generating again would fail
    monkeypatch.setattr(synthetic_module, "generate", lambda *a: pytest.fail("regenerated a cached graph"))
    again = load_built("synthetic_products", spec, tmp_path / "a", 0)
    for a, b, c in zip(first.data_tensors(), fresh.data_tensors(), again.data_tensors()):
        for t in (b, c):
            assert torch.equal(dense(a), dense(t)) if a.is_sparse_csr else torch.equal(a, t)
    assert not torch.equal(first.y, other_seed.y)
    assert not torch.equal(first.adj.col_indices()[:100], other_seed.adj.col_indices()[:100])
    # another spec is another cache entry
    assert (cache_path("synthetic_products", spec, tmp_path, 0)
            != cache_path("synthetic_products", replace(spec, homophily=0.5), tmp_path, 0))


# ---------------------------------------------------------------------------------------------------------------
# synthetic_arxiv (full size: a few seconds)


@pytest.fixture(scope="module")
def synthetic_arxiv():
    raw = load_raw_graph("synthetic_arxiv", "", 0)
    return raw, build_graph_data(raw)


def test_synthetic_arxiv_has_arxiv_shape(synthetic_arxiv) -> None:
    raw, g = synthetic_arxiv
    assert_valid_graph(g, num_features=128)
    assert g.x.shape == (ARXIV_NODES, 128) and g.num_classes == 40
    assert torch.unique(g.y).numel() == 40
    assert (len(g.train_idx), len(g.val_idx), len(g.test_idx)) == (90_941, 29_799, 48_603)


def test_synthetic_arxiv_edges_match_arxiv_protocol(synthetic_arxiv) -> None:
    raw, g = synthetic_arxiv
    src, dst = raw.edge_index.numpy()
    assert raw.edge_index.shape == (2, ARXIV_DIRECTED_EDGES)
    assert not np.any(src == dst)
    assert np.unique(src * ARXIV_NODES + dst).size == ARXIV_DIRECTED_EDGES
    # to_undirected: every edge in both directions, duplicates (reciprocal citations) merged once
    both = np.unique(np.concatenate([src * ARXIV_NODES + dst, dst * ARXIV_NODES + src]))
    assert g.num_edges == both.size
    assert g.adj.crow_indices()[-1].item() == g.num_edges
    row_dst = torch.repeat_interleave(torch.arange(ARXIV_NODES), g.adj.crow_indices().diff())
    adj_keys = np.sort(row_dst.numpy() * ARXIV_NODES + g.adj.col_indices().numpy())
    assert np.array_equal(adj_keys, both), "adj must hold exactly the symmetrised edges"
    homophily = (g.y[raw.edge_index[0]] == g.y[raw.edge_index[1]]).float().mean().item()
    assert homophily > 10 / 40


def test_synthetic_arxiv_adjacency_is_row_normalised_and_transposed(synthetic_arxiv) -> None:
    _, g = synthetic_arxiv
    ones = torch.ones(ARXIV_NODES, 1)
    row_sums = (g.adj @ ones).view(-1)
    degree = g.adj.crow_indices().diff()
    assert torch.allclose(row_sums[degree > 0], torch.ones(int((degree > 0).sum())), atol=1e-5)
    assert torch.all(row_sums[degree == 0] == 0)
    transposed = g.adj.to_sparse_coo().t().coalesce()
    adj_t = g.adj_t.to_sparse_coo().coalesce()
    assert torch.equal(transposed.indices(), adj_t.indices())
    assert torch.equal(transposed.values(), adj_t.values())


# ---------------------------------------------------------------------------------------------------------------
# ogbn-arxiv through ogb, on a tiny graph in ogb's raw layout


def _write_gz_csv(path: Path, rows: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = rows.reshape(len(rows), -1)
    with gzip.open(path, "wt") as f:
        f.writelines(",".join(fmt % v for v in row) + "\n" for row in rows)


def write_tiny_ogbn_arxiv(root: Path, num_nodes: int = 30, num_features: int = 8,
                          dataset: str = "ogbn-arxiv") -> dict[str, np.ndarray]:
    """Write the files of ogb's arxiv.zip (or products.zip) as extracted and renamed by ogb, under root/ogbn_arxiv
    (root/ogbn_products)."""
    rng = np.random.default_rng(0)
    products = dataset == "ogbn-products"
    base = root / dataset.replace("-", "_")
    # a directed citation chain plus a few extra citations, one reciprocal pair (3->4 and 4->3)
    src = np.concatenate([np.arange(1, num_nodes), [5, 9, 4, 20]])
    dst = np.concatenate([np.arange(0, num_nodes - 1), [0, 2, 3, 7]])
    edges = np.stack([src, dst], axis=1)
    feats = rng.standard_normal((num_nodes, num_features)).astype(np.float32)
    labels = rng.integers(0, 47 if products else 40, num_nodes)
    perm = rng.permutation(num_nodes)
    split = {"train": np.sort(perm[:16]), "valid": np.sort(perm[16:22]), "test": np.sort(perm[22:])}

    _write_gz_csv(base / "raw" / "edge.csv.gz", edges, "%d")
    _write_gz_csv(base / "raw" / "node-feat.csv.gz", feats, "%.6f")
    _write_gz_csv(base / "raw" / "node-label.csv.gz", labels, "%d")
    if not products:
        _write_gz_csv(base / "raw" / "node_year.csv.gz", rng.integers(1990, 2020, num_nodes), "%d")
    _write_gz_csv(base / "raw" / "num-node-list.csv.gz", np.array([num_nodes]), "%d")
    _write_gz_csv(base / "raw" / "num-edge-list.csv.gz", np.array([len(edges)]), "%d")
    for part, idx in split.items():
        _write_gz_csv(base / "split" / ("sales_ranking" if products else "time") / f"{part}.csv.gz", idx, "%d")
    (base / "RELEASE_v1.txt").write_text(f"{dataset} release 1\n")
    return {"edges": edges, "feats": feats, "labels": labels, **split}


def _undirected_pairs(edges: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in edges} | {(int(b), int(a)) for a, b in edges}


def _adj_pairs(g: GraphData) -> set[tuple[int, int]]:
    coo = g.adj.to_sparse_coo().coalesce().indices()  # rows are message targets
    return {(int(s), int(d)) for d, s in coo.t()}


def test_ogbn_arxiv_loads_tiny_raw_graph_offline(tmp_path: Path, network_calls: list[str]) -> None:
    expected = write_tiny_ogbn_arxiv(tmp_path)
    g = load_graph("ogbn-arxiv", tmp_path, 0)
    assert g.name == "ogbn-arxiv" and g.num_classes == 40
    assert_valid_graph(g, num_features=8)
    assert torch.allclose(g.x, torch.from_numpy(expected["feats"]), atol=1e-5)
    assert torch.equal(g.y, torch.from_numpy(expected["labels"]).long())
    assert torch.equal(g.train_idx, torch.from_numpy(expected["train"]))
    assert torch.equal(g.val_idx, torch.from_numpy(expected["valid"]))
    assert torch.equal(g.test_idx, torch.from_numpy(expected["test"]))
    pairs = _undirected_pairs(expected["edges"])
    assert _adj_pairs(g) == pairs and g.num_edges == len(pairs) == 2 * len(expected["edges"]) - 2
    assert_mean_adjacency(g)
    assert network_calls == []


def test_ogbn_products_loads_tiny_raw_graph_offline(tmp_path: Path, network_calls: list[str]) -> None:
    expected = write_tiny_ogbn_arxiv(tmp_path, dataset="ogbn-products")
    g = load_graph("ogbn-products", tmp_path, 0)
    assert g.name == "ogbn-products" and g.num_classes == 47
    assert_valid_graph(g, num_features=8)
    assert torch.equal(g.y, torch.from_numpy(expected["labels"]).long())
    assert torch.equal(g.train_idx, torch.from_numpy(expected["train"]))
    assert torch.equal(g.test_idx, torch.from_numpy(expected["test"]))
    assert _adj_pairs(g) == _undirected_pairs(expected["edges"])
    assert_mean_adjacency(g)
    assert network_calls == []


def test_ogbn_products_missing_is_one_line_error(tmp_path: Path, network_calls: list[str]) -> None:
    write_tiny_ogbn_arxiv(tmp_path, dataset="ogbn-products")
    (tmp_path / "ogbn_products" / "split" / "sales_ranking" / "valid.csv.gz").unlink()
    with pytest.raises(DataMissingError) as err:
        load_graph("ogbn-products", tmp_path, 0)
    message = str(err.value)
    assert "\n" not in message
    assert f"missing split/sales_ranking/valid.csv.gz in {tmp_path / 'ogbn_products'};" in message
    assert "products.zip" in message and "download=true" in message
    shutil.rmtree(tmp_path / "ogbn_products")
    with pytest.raises(DataMissingError, match=f"no folder {tmp_path / 'ogbn_products'}"):
        load_graph("ogbn-products", tmp_path, 0)
    assert network_calls == []


def test_ogbn_arxiv_already_processed_counts_as_present(tmp_path: Path, network_calls: list[str]) -> None:
    write_tiny_ogbn_arxiv(tmp_path)
    first = load_graph("ogbn-arxiv", tmp_path, 0)
    assert (tmp_path / "ogbn_arxiv" / "processed" / "geometric_data_processed.pt").is_file()
    shutil.rmtree(tmp_path / "ogbn_arxiv" / "raw")
    again = load_graph("ogbn-arxiv", tmp_path, 0)
    assert torch.equal(first.x, again.x) and torch.equal(dense(first.adj), dense(again.adj))
    assert network_calls == []


def test_ogbn_arxiv_missing_is_one_line_error(tmp_path: Path, network_calls: list[str]) -> None:
    with pytest.raises(DataMissingError) as err:
        load_graph("ogbn-arxiv", tmp_path, 0)
    message = str(err.value)
    assert "\n" not in message
    assert f"no folder {tmp_path / 'ogbn_arxiv'}" in message
    assert "download=true" in message and "arxiv.zip" in message
    assert network_calls == []


def test_ogbn_arxiv_partial_copy_names_missing_files(tmp_path: Path, network_calls: list[str]) -> None:
    write_tiny_ogbn_arxiv(tmp_path)
    (tmp_path / "ogbn_arxiv" / "raw" / "node-label.csv.gz").unlink()
    (tmp_path / "ogbn_arxiv" / "split" / "time" / "valid.csv.gz").unlink()
    with pytest.raises(DataMissingError) as err:
        load_graph("ogbn-arxiv", tmp_path, 0)
    message = str(err.value)
    assert "\n" not in message
    assert f"missing raw/node-label.csv.gz, split/time/valid.csv.gz in {tmp_path / 'ogbn_arxiv'};" in message
    assert network_calls == []


def test_ogbn_arxiv_without_release_marker_is_missing_not_a_prompt(tmp_path: Path,
                                                                    network_calls: list[str]) -> None:
    # ogb would otherwise ask on stdin whether to delete the folder
    write_tiny_ogbn_arxiv(tmp_path)
    (tmp_path / "ogbn_arxiv" / "RELEASE_v1.txt").unlink()
    with pytest.raises(DataMissingError, match="RELEASE_v1.txt"):
        load_graph("ogbn-arxiv", tmp_path, 0)
    assert network_calls == []


def test_download_without_network_is_data_missing(tmp_path: Path, network_calls: list[str]) -> None:
    for name in ("ogbn-arxiv", "ogbn-products", "flickr"):
        # twice: a failed download must leave nothing behind that changes (or blocks) the next attempt
        for _ in range(2):
            with pytest.raises(DataMissingError, match="could not be downloaded") as err:
                load_graph(name, tmp_path / name, 0, download=True)
            assert "\n" not in str(err.value)
    assert len(network_calls) == 6


def test_ogbn_arxiv_download_into_incomplete_copy_asks_to_delete(tmp_path: Path,
                                                                   network_calls: list[str]) -> None:
    write_tiny_ogbn_arxiv(tmp_path)
    (tmp_path / "ogbn_arxiv" / "RELEASE_v1.txt").unlink()
    with pytest.raises(DataMissingError, match=f"delete {tmp_path / 'ogbn_arxiv'} and rerun") as err:
        load_graph("ogbn-arxiv", tmp_path, 0, download=True)
    assert "\n" not in str(err.value)
    assert (tmp_path / "ogbn_arxiv" / "raw" / "edge.csv.gz").is_file(), "the user's files stay"
    assert network_calls == []


# ---------------------------------------------------------------------------------------------------------------
# flickr through torch_geometric, on a tiny graph in GraphSAINT's raw layout


def write_tiny_flickr(root: Path, num_nodes: int = 24, num_features: int = 6) -> dict[str, np.ndarray]:
    """Write the four GraphSAINT files that torch_geometric's Flickr reads, under root/flickr/raw."""
    rng = np.random.default_rng(1)
    raw = root / "flickr" / "raw"
    raw.mkdir(parents=True)
    src = rng.integers(0, num_nodes - 2, 40)  # the last two nodes stay isolated
    dst = rng.integers(0, num_nodes - 2, 40)
    keep = src != dst
    upper = sp.coo_matrix((np.ones(int(keep.sum())), (src[keep], dst[keep])), shape=(num_nodes, num_nodes))
    adj = ((upper + upper.T) > 0).astype(np.float32).tocsr()  # GraphSAINT stores the symmetric adjacency
    sp.save_npz(raw / "adj_full.npz", adj)
    feats = rng.standard_normal((num_nodes, num_features)).astype(np.float32)
    np.save(raw / "feats.npy", feats)
    labels = rng.integers(0, 7, num_nodes)
    labels[0] = 6  # every one of Flickr's 7 classes occurs, so num_classes is 7
    (raw / "class_map.json").write_text(json.dumps({str(i): int(c) for i, c in enumerate(labels)}))
    perm = rng.permutation(num_nodes)
    role = {"tr": perm[:12].tolist(), "va": perm[12:17].tolist(), "te": perm[17:].tolist()}
    (raw / "role.json").write_text(json.dumps(role))
    return {"adj": adj, "feats": feats, "labels": labels, **{k: np.sort(v) for k, v in role.items()}}


def test_flickr_loads_tiny_raw_graph_offline(tmp_path: Path, network_calls: list[str]) -> None:
    expected = write_tiny_flickr(tmp_path)
    g = load_graph("flickr", tmp_path, 0)
    assert g.name == "flickr" and g.num_classes == 7
    assert_valid_graph(g, num_features=6)
    assert torch.equal(g.x, torch.from_numpy(expected["feats"]))
    assert torch.equal(g.y, torch.from_numpy(expected["labels"]).long())
    assert torch.equal(g.train_idx, torch.from_numpy(expected["tr"]))
    assert torch.equal(g.val_idx, torch.from_numpy(expected["va"]))
    assert torch.equal(g.test_idx, torch.from_numpy(expected["te"]))
    assert torch.equal(dense(g.adj) != 0, torch.from_numpy(expected["adj"].toarray() != 0))
    assert_mean_adjacency(g)
    assert torch.all(dense(g.adj)[-2:] == 0), "isolated nodes get zero rows"
    assert network_calls == []


def test_flickr_already_processed_counts_as_present(tmp_path: Path, network_calls: list[str]) -> None:
    write_tiny_flickr(tmp_path)
    first = load_graph("flickr", tmp_path, 0)
    shutil.rmtree(tmp_path / "flickr" / "raw")
    again = load_graph("flickr", tmp_path, 0)
    assert torch.equal(first.x, again.x) and torch.equal(dense(first.adj), dense(again.adj))
    assert network_calls == []


def test_flickr_missing_is_one_line_error(tmp_path: Path, network_calls: list[str]) -> None:
    (tmp_path / "flickr" / "raw").mkdir(parents=True)
    (tmp_path / "flickr" / "raw" / "feats.npy").write_bytes(b"")
    with pytest.raises(DataMissingError) as err:
        load_graph("flickr", tmp_path, 0)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "flickr") in message and "download=true" in message
    assert "raw/adj_full.npz" in message and "raw/feats.npy" not in message
    assert network_calls == []
