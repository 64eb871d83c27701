"""Graph datasets for the GNN experiments, one module per dataset (named after it, '-' as '_'): two seeded
synthetic graphs (synthetic.py, synthetic_arxiv.py) and the real ogbn-arxiv and Flickr (ogbn_arxiv.py, flickr.py,
which share real.py's offline presence checks).

Every source returns a ``RawGraph``; ``load_graph`` turns it into the ``GraphData`` the model trains on
(graph.py: the common symmetrise-and-normalise protocol).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.gnn_blockquant.config import GRAPH_DATASETS
from sustainml_exp.families.gnn_blockquant.data.graph import (
    GraphData,
    RawGraph,
    build_graph_data,
    mean_aggregation_adjacency,
)

__all__ = ["GRAPH_DATASETS", "GraphData", "RawGraph", "build_graph_data", "load_graph", "load_raw_graph",
           "mean_aggregation_adjacency"]


def load_raw_graph(name: str, root: str | Path, seed: int, download: bool = False) -> RawGraph:
    """The graph ``name`` as its source stores it; ``seed`` only matters for the synthetic graphs, ``root`` only for
    the real ones."""
    if name not in GRAPH_DATASETS:
        raise ConfigError(f"dataset {name!r} is not a graph dataset; allowed: {', '.join(GRAPH_DATASETS)}")
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}").load(Path(root), seed, download)


def load_graph(name: str, root: str | Path, seed: int, download: bool = False) -> GraphData:
    return build_graph_data(load_raw_graph(name, root, seed, download))
