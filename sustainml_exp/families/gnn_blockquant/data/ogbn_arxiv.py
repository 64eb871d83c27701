"""ogbn-arxiv through ogb's PygNodePropPredDataset (its time split), offline unless download=true."""

from __future__ import annotations

from pathlib import Path

from sustainml_exp.families.gnn_blockquant.data.graph import GraphShape, RawGraph
from sustainml_exp.families.gnn_blockquant.data.ogb_node import RAW_FILES, OGBNodeDataset

DATASET = OGBNodeDataset("ogbn-arxiv", "arxiv", (*RAW_FILES[:3], "raw/node_year.csv.gz", *RAW_FILES[3:]), "time")
# After the common protocol (OGB's dataset statistics), for the memory preflight, which runs before loading.
SHAPE = GraphShape(num_nodes=169_343, num_features=128, num_classes=40, num_edges=2_315_598, num_train=90_941)


def check_present(root: Path, download: bool) -> None:
    DATASET.check_present(root, download)


def load(root: Path, seed: int, download: bool) -> RawGraph:
    return DATASET.load(root, download)
