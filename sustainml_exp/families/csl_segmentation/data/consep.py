"""CoNSeP (HoVer-Net): Images/*.png with Labels/*.mat instance maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sustainml_exp.errors import DataMissingError
from sustainml_exp.families.csl_segmentation.data.base import SegDataset, SegImage
from sustainml_exp.families.csl_segmentation.data.real import files, image_tensor, load_real, one_line, pair_files

_CONSEP_SOURCE = ("download CoNSeP by hand from https://warwick.ac.uk/fac/cross_fac/tia/data/hovernet/")
_CONSEP_LAYOUT = "expected {root}/Train/ and {root}/Test/, each with Images/*.png and Labels/*.mat"
DELIVERABLE_COUNTS = (27, 14)  # (train, test) images of the split D3.2 used


def load(data_dir: Path) -> SegDataset:
    return load_real("consep", Path(data_dir) / "consep", ("Train", "Test"), _consep_split, _CONSEP_SOURCE,
                     _CONSEP_LAYOUT, DELIVERABLE_COUNTS)


def _consep_split(split_dir: Path, name: str) -> list[SegImage]:
    image_dir, label_dir = split_dir / "Images", split_dir / "Labels"
    pairs = pair_files(split_dir, name, files(image_dir, (".png",)), files(label_dir, (".mat",)),
                       image_where=f"*.png in {image_dir}", label_where=f"*.mat in {label_dir}", label_kind=".mat")
    out = []
    for stem, image_path, mat_path in pairs:
        image = image_tensor(_read_png(image_path), image_path)
        mask = _read_consep_mask(mat_path, (image.shape[1], image.shape[2]))
        out.append(SegImage(name=stem, image=image, mask=torch.from_numpy(mask)))
    return out


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                raise DataMissingError(f"image {path} has PIL mode {im.mode}; expected RGB or RGBA")
            return np.asarray(im)
    except DataMissingError:
        raise
    except Exception as err:  # PIL raises several types for damaged files; all mean "unreadable"
        raise DataMissingError(f"unreadable image {path}: {one_line(err)}") from err


def _read_consep_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from scipy.io import loadmat

    try:
        contents = loadmat(path, variable_names=["inst_map"])
    except Exception as err:  # scipy raises several types for damaged files; all mean "unreadable"
        raise DataMissingError(f"corrupt CoNSeP label {path}: {one_line(err)}") from err
    if "inst_map" not in contents:
        raise DataMissingError(f"corrupt CoNSeP label {path}: no variable inst_map")
    inst_map = np.asarray(contents["inst_map"])
    if inst_map.shape != shape:
        raise DataMissingError(f"corrupt CoNSeP label {path}: inst_map has shape {inst_map.shape}, its image "
                               f"{shape[0]}x{shape[1]}")
    return inst_map > 0
