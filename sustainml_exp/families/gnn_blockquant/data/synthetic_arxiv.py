"""synthetic_arxiv: ogbn-arxiv's exact shape (nodes, features, classes, edges, split sizes) from synthetic.py's
generator, so that memory and time per epoch match the real graph without downloading it."""

from __future__ import annotations

from pathlib import Path

from sustainml_exp.families.gnn_blockquant.data.graph import RawGraph
from sustainml_exp.families.gnn_blockquant.data.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(num_nodes=169_343, num_features=128, num_classes=40, num_directed_edges=1_166_243,
                     split_sizes=(90_941, 29_799, 48_603), homophily=0.4, centroid_scale=0.1)


def load(root: Path, seed: int, download: bool) -> RawGraph:
    return generate("synthetic_arxiv", SPEC, seed)
