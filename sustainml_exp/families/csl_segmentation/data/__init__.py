"""Nuclei segmentation data, one module per source: the embedded synthetic H&E tiles (synthetic_nuclei.py) and
readers for MoNuSeg (monuseg.py) and CoNSeP (consep.py), which share real.py.

Every loader returns RGB images as float32 (3, H, W) tensors in [0, 1] with boolean nucleus masks (semantic:
True = some nucleus, instances merged). The real datasets need a manual download (registration), so a missing or
damaged copy is a one-line ``DataMissingError`` that names the file or folder and says what was expected.
The file readers (tifffile, PIL, scipy, scikit-image) are imported where they are used: the embedded dataset
needs none of them.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.csl_segmentation.config import SEG_DATASETS
from sustainml_exp.families.csl_segmentation.data.base import SegDataset, SegImage, random_crops, split_train_val
from sustainml_exp.families.csl_segmentation.data.monuseg import rasterise_monuseg_xml
from sustainml_exp.families.csl_segmentation.data.synthetic_nuclei import make_synthetic_nuclei

__all__ = ["SEG_DATASETS", "SegDataset", "SegImage", "load_seg_dataset", "make_synthetic_nuclei", "random_crops",
           "rasterise_monuseg_xml", "split_train_val"]


def load_seg_dataset(name: str, data_dir: Path) -> SegDataset:
    """The dataset ``name`` (the module of that name here reads it); ``data_dir`` holds the real ones
    (``monuseg/``, ``consep/``)."""
    if name not in SEG_DATASETS:
        raise ConfigError(f"dataset {name!r} is not a segmentation dataset; allowed: {', '.join(SEG_DATASETS)}")
    return importlib.import_module(f"{__name__}.{name}").load(Path(data_dir))
