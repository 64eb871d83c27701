"""Graph datasets for the GNN experiments, one module per dataset (named after it, '-' as '_'): seeded synthetic
graphs (synthetic.py, synthetic_arxiv.py, synthetic_products.py) and the real ogbn-arxiv, ogbn-products and Flickr
(ogbn_arxiv.py, ogbn_products.py - both through ogb_node.py - and flickr.py, which share real.py's offline presence
checks).

A source module has ``load(root, seed, download) -> RawGraph`` and either ``SPEC`` (a synthetic graph's
``SyntheticSpec``) or ``SHAPE`` and ``check_present(root, download)`` (a real one). ``load_graph`` turns a source's
``RawGraph`` into the ``GraphData`` the model trains on (graph.py: the common symmetrise-and-normalise protocol);
``graph_shape`` tells the memory preflight a graph's size before it is loaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.gnn_blockquant.config import GRAPH_DATASETS
from sustainml_exp.families.gnn_blockquant.data.graph import (
    GraphData,
    GraphShape,
    RawGraph,
    build_graph_data,
    undirected_mean_adjacency,
)
from sustainml_exp.families.gnn_blockquant.data.synthetic import SyntheticSpec, load_built

__all__ = ["GRAPH_DATASETS", "GraphData", "GraphShape", "RawGraph", "build_graph_data", "check_present",
           "graph_shape", "load_graph", "load_raw_graph", "source", "undirected_mean_adjacency"]


def source(name: str) -> ModuleType:
    """The module that provides dataset ``name``."""
    if name not in GRAPH_DATASETS:
        raise ConfigError(f"dataset {name!r} is not a graph dataset; allowed: {', '.join(GRAPH_DATASETS)}")
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def load_raw_graph(name: str, root: str | Path, seed: int, download: bool = False) -> RawGraph:
    """The graph ``name`` as its source stores it; ``seed`` only matters for the synthetic graphs, ``root`` only for
    the real ones."""
    return source(name).load(Path(root), seed, download)


def load_graph(name: str, root: str | Path, seed: int, download: bool = False) -> GraphData:
    """The graph the model trains on; a large synthetic graph is read from (or first written to) its cache under
    ``root``."""
    module = source(name)
    spec = getattr(module, "SPEC", None)
    if spec is not None:
        return load_built(name, spec, Path(root), seed)
    return build_graph_data(module.load(Path(root), seed, download))


def check_present(name: str, root: str | Path, download: bool = False) -> None:
    """DataMissingError (one line) now, before any other work, when ``load_graph`` would raise it."""
    module = source(name)
    if hasattr(module, "check_present"):
        module.check_present(Path(root), download)


def graph_shape(name: str) -> GraphShape:
    """The shape of dataset ``name`` without loading it (a synthetic graph's edge count is its upper bound)."""
    module = source(name)
    spec: SyntheticSpec | None = getattr(module, "SPEC", None)
    if spec is None:
        return module.SHAPE
    return GraphShape(num_nodes=spec.num_nodes, num_features=spec.num_features, num_classes=spec.num_classes,
                      num_edges=2 * spec.num_directed_edges, num_train=spec.split_sizes[0])
