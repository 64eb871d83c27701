"""ogbn-products through ogb's PygNodePropPredDataset (its sales-rank split), offline unless download=true."""

from __future__ import annotations

from pathlib import Path

from sustainml_exp.families.gnn_blockquant.data.graph import GraphShape, RawGraph
from sustainml_exp.families.gnn_blockquant.data.ogb_node import RAW_FILES, OGBNodeDataset

DATASET = OGBNodeDataset("ogbn-products", "products", RAW_FILES, "sales_ranking")
# After the common protocol (OGB's dataset statistics), for the memory preflight, which runs before loading.
SHAPE = GraphShape(num_nodes=2_449_029, num_features=100, num_classes=47, num_edges=123_718_280, num_train=196_615)


def check_present(root: Path, download: bool) -> None:
    DATASET.check_present(root, download)


def load(root: Path, seed: int, download: bool) -> RawGraph:
    return DATASET.load(root, download)
