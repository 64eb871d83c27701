"""synthetic_products: ogbn-products' exact shape (2,449,029 nodes, 61,859,140 undirected edges, i.e. 123,718,280
directed, 100 features, 47 classes, its sales-rank split sizes) from synthetic.py's generator, cached under
data_dir after the first run (generating it takes about a minute and a half and ~5 GiB on 2 cores)."""

from __future__ import annotations

from pathlib import Path

from sustainml_exp.families.gnn_blockquant.data.graph import RawGraph
from sustainml_exp.families.gnn_blockquant.data.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(num_nodes=2_449_029, num_features=100, num_classes=47, num_directed_edges=61_859_140,
                     split_sizes=(196_615, 39_323, 2_213_091), homophily=0.4, centroid_scale=0.1, undirected=True,
                     cached=True)


def load(root: Path, seed: int, download: bool) -> RawGraph:
    return generate("synthetic_products", SPEC, seed)
