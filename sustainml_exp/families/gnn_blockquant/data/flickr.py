"""Flickr (GraphSAINT's split) through torch_geometric's Flickr dataset, offline unless download=true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sustainml_exp.families.gnn_blockquant.data.graph import GraphShape, RawGraph
from sustainml_exp.families.gnn_blockquant.data.real import (
    construct,
    data_missing,
    missing_files,
    quiet_library_import,
    without_download,
)

_FLICKR_SOURCE = "GraphSAINT's Flickr data (the Google Drive folder linked from github.com/GraphSAINT/GraphSAINT)"
_FLICKR_RAW = ("raw/adj_full.npz", "raw/feats.npy", "raw/class_map.json", "raw/role.json")
_FLICKR_PROCESSED = "processed/data.pt"
# After the common protocol (PyG's dataset statistics; GraphSAINT's half of the nodes for training), for the memory
# preflight, which runs before loading.
SHAPE = GraphShape(num_nodes=89_250, num_features=500, num_classes=7, num_edges=899_756, num_train=44_625)


def _missing_flickr(directory: Path) -> list[str]:
    return missing_files(directory, [_FLICKR_RAW, (_FLICKR_PROCESSED,)])


def check_present(root: Path, download: bool) -> tuple[Path, list[str]]:
    """(folder, missing files); DataMissingError when they are missing and download is off."""
    directory = root / "flickr"
    missing = _missing_flickr(directory)
    if missing and not download:
        files = ", ".join(Path(f).name for f in _FLICKR_RAW)
        by_hand = f"place {files} from {_FLICKR_SOURCE} in {directory / 'raw'}"
        raise data_missing("flickr", directory, missing, by_hand)
    return directory, missing


def load(root: Path, seed: int, download: bool) -> RawGraph:
    directory, missing = check_present(root, download)

    with quiet_library_import():
        from torch_geometric.datasets import Flickr

    def make(offline: bool) -> Any:
        return (without_download(Flickr) if offline else Flickr)(root=str(directory))

    data = construct("flickr", directory, missing, make)[0]
    y = data.y.view(-1).to(torch.int64)
    return RawGraph(name="flickr", x=data.x.to(torch.float32), y=y, edge_index=data.edge_index.to(torch.int64),
                    train_idx=data.train_mask.nonzero().view(-1), val_idx=data.val_mask.nonzero().view(-1),
                    test_idx=data.test_mask.nonzero().view(-1), num_classes=int(y.max()) + 1)
