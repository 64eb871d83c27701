"""ogbn-arxiv through ogb's PygNodePropPredDataset (its time split), offline unless download=true."""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from sustainml_exp.families.gnn_blockquant.data.graph import RawGraph
from sustainml_exp.families.gnn_blockquant.data.real import construct, data_missing, missing_files, without_download

# ogb's import starts a version check over the network unless this is set first.
os.environ.setdefault("OUTDATED_IGNORE", "1")

_ARXIV_URL = "http://snap.stanford.edu/ogb/data/nodeproppred/arxiv.zip"
_ARXIV_RELEASE = "RELEASE_v1.txt"
_ARXIV_RAW = ("raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz", "raw/node_year.csv.gz",
              "raw/num-node-list.csv.gz", "raw/num-edge-list.csv.gz")
_ARXIV_PROCESSED = "processed/geometric_data_processed.pt"
_ARXIV_SPLIT = ("split/time/train.csv.gz", "split/time/valid.csv.gz", "split/time/test.csv.gz")
_ARXIV_SPLIT_CACHE = "split/time/split_dict.pt"


def _ogbn_arxiv_dir(root: Path) -> Path:
    # ogb prefers a folder left by its older PyG-specific release when one exists.
    legacy = root / "ogbn_arxiv_pyg"
    return legacy if legacy.is_dir() else root / "ogbn_arxiv"


def _missing_ogbn_arxiv(directory: Path) -> list[str]:
    # Without the release marker ogb asks on stdin whether to delete the folder, so it is required too.
    return (missing_files(directory, [(_ARXIV_RELEASE,)])
            + missing_files(directory, [_ARXIV_RAW, (_ARXIV_PROCESSED,)])
            + missing_files(directory, [_ARXIV_SPLIT, (_ARXIV_SPLIT_CACHE,)]))


def load(root: Path, seed: int, download: bool) -> RawGraph:
    directory = _ogbn_arxiv_dir(root)
    missing = _missing_ogbn_arxiv(directory)
    by_hand = f"unzip {_ARXIV_URL} in {root} and rename its folder arxiv to {directory.name}"
    if missing and (not download or directory.exists()):
        # Downloading into an existing folder without the release marker makes ogb ask on stdin whether to
        # delete it; the user decides that, not a batch job.
        raise data_missing("ogbn-arxiv", directory, missing, by_hand, incomplete_copy=download)

    from ogb.nodeproppred import PygNodePropPredDataset
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    def make(offline: bool) -> Any:
        dataset_cls = without_download(PygNodePropPredDataset) if offline else PygNodePropPredDataset
        # ogb 1.3.6 reads its processed file with a bare torch.load, which defaults to weights_only since
        # torch 2.6; allowing exactly the PyG classes that file pickles keeps the safe loader working.
        safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        allowed = safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage]) if safe_globals else nullcontext()
        with allowed, warnings.catch_warnings():
            # ogb wraps a read-only numpy array when it processes the raw files; nothing writes to it.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return dataset_cls(name="ogbn-arxiv", root=str(root))

    dataset = construct("ogbn-arxiv", directory, missing, make)
    split = dataset.get_idx_split()
    data = dataset[0]
    return RawGraph(name="ogbn-arxiv", x=data.x.to(torch.float32), y=data.y.view(-1).to(torch.int64),
                    edge_index=data.edge_index.to(torch.int64), train_idx=split["train"], val_idx=split["valid"],
                    test_idx=split["test"], num_classes=int(dataset.num_classes))
