"""What ogbn-arxiv and ogbn-products share: ogb's PygNodePropPredDataset, its on-disk layout (for the presence
check) and the offline construction, described once per dataset by ``OGBNodeDataset``."""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sustainml_exp.families.gnn_blockquant.data.graph import RawGraph
from sustainml_exp.families.gnn_blockquant.data.real import (
    construct,
    data_missing,
    missing_files,
    quiet_library_import,
    without_download,
)

# ogb's import starts a version check over the network unless this is set first.
os.environ.setdefault("OUTDATED_IGNORE", "1")

_RELEASE = "RELEASE_v1.txt"
_PROCESSED = "processed/geometric_data_processed.pt"
RAW_FILES = ("raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz", "raw/num-node-list.csv.gz",
             "raw/num-edge-list.csv.gz")


@dataclass(frozen=True)
class OGBNodeDataset:
    """What PygNodePropPredDataset reads for one dataset (its master.csv entry)."""

    name: str  # ogbn-arxiv
    download_name: str  # arxiv: the zip's name and the folder inside it
    raw: tuple[str, ...]
    split: str  # split/<split>/...

    @property
    def url(self) -> str:
        return f"http://snap.stanford.edu/ogb/data/nodeproppred/{self.download_name}.zip"

    def directory(self, root: Path) -> Path:
        # ogb prefers a folder left by its older PyG-specific release when one exists.
        folder = self.name.replace("-", "_")
        legacy = root / f"{folder}_pyg"
        return legacy if legacy.is_dir() else root / folder

    def missing(self, directory: Path) -> list[str]:
        split_files = tuple(f"split/{self.split}/{part}.csv.gz" for part in ("train", "valid", "test"))
        # Without the release marker ogb asks on stdin whether to delete the folder, so it is required too.
        return (missing_files(directory, [(_RELEASE,)])
                + missing_files(directory, [self.raw, (_PROCESSED,)])
                + missing_files(directory, [split_files, (f"split/{self.split}/split_dict.pt",)]))

    def check_present(self, root: Path, download: bool) -> tuple[Path, list[str]]:
        """(folder, missing files); DataMissingError when they are missing and cannot be downloaded."""
        directory = self.directory(root)
        missing = self.missing(directory)
        by_hand = f"unzip {self.url} in {root} and rename its folder {self.download_name} to {directory.name}"
        if missing and (not download or directory.exists()):
            # Downloading into an existing folder without the release marker makes ogb ask on stdin whether to
            # delete it; the user decides that, not a batch job.
            raise data_missing(self.name, directory, missing, by_hand, incomplete_copy=download)
        return directory, missing

    def load(self, root: Path, download: bool) -> RawGraph:
        directory, missing = self.check_present(root, download)

        with quiet_library_import():
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
                return dataset_cls(name=self.name, root=str(root))

        dataset = construct(self.name, directory, missing, make)
        split = dataset.get_idx_split()
        data = dataset[0]
        return RawGraph(name=self.name, x=data.x.to(torch.float32), y=data.y.view(-1).to(torch.int64),
                        edge_index=data.edge_index.to(torch.int64), train_idx=split["train"],
                        val_idx=split["valid"], test_idx=split["test"], num_classes=int(dataset.num_classes))
