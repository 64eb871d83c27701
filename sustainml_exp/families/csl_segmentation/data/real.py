"""Reading the real datasets (registration-only downloads): folder checks, image/annotation pairing, pixel
conversion, each failure as one ``DataMissingError`` line that names the file or folder and what was expected."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sustainml_exp.errors import DataMissingError
from sustainml_exp.families.csl_segmentation.data.base import SegDataset, SegImage

log = logging.getLogger("sustainml_exp")

_SHOWN_STEMS = 5


def load_real(name: str, root: Path, splits: tuple[str, str], read_split: Callable[[Path, str], list[SegImage]],
              how_to_get: str, layout: str, deliverable_counts: tuple[int, int]) -> SegDataset:
    """Both splits of ``root`` read by ``read_split``; ``deliverable_counts``: the (train, test) images of the
    split D3.2 used (other releases and splits load with a warning)."""
    layout = layout.format(root=root)
    if not root.is_dir():
        raise DataMissingError(f"dataset {name!r} not found: no folder {root}{other_case_hint(root)}; "
                               f"{how_to_get} and unpack it there ({layout})")
    for split_dir in (root / split for split in splits):
        if not split_dir.is_dir():
            raise DataMissingError(f"dataset {name!r} is incomplete: no folder {split_dir}"
                                   f"{other_case_hint(split_dir)}; {layout}")
    train, test = (read_split(root / split, name) for split in splits)
    expected = deliverable_counts
    if (len(train), len(test)) != expected:
        log.warning("%s in %s has %d train / %d test images; the deliverable used %d / %d (another release or "
                    "split?): results are not comparable with its tables", name, root, len(train), len(test),
                    *expected)
    return SegDataset(name=name, train=train, test=test, source=str(root.resolve()))


def other_case_hint(path: Path) -> str:
    """' (found X: rename it)' when a sibling differs from ``path`` only in letter case, as archives unpack."""
    if not path.parent.is_dir():
        return ""
    for sibling in path.parent.iterdir():
        if sibling.name != path.name and sibling.name.lower() == path.name.lower() and sibling.is_dir():
            return f" (found {sibling}: rename it to {path.name})"
    return ""


def files(directory: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files of ``directory`` with one of ``suffixes`` (any case) by stem; hidden files (e.g. '._x') skipped."""
    if not directory.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise DataMissingError(f"two files with stem {path.stem!r} in {directory}: {found[path.stem].name} "
                                       f"and {path.name}; keep one")
            found[path.stem] = path
    return found


def pair_files(split_dir: Path, name: str, images: dict[str, Path], labels: dict[str, Path],
               image_where: str, label_where: str, label_kind: str) -> list[tuple[str, Path, Path]]:
    """(stem, image, annotation) matched by stem, or a one-line error about what is missing or unmatched."""
    if not images:
        raise DataMissingError(f"dataset {name!r}: no images in {split_dir} (looked for {image_where})")
    if not labels:
        raise DataMissingError(f"dataset {name!r}: {len(images)} images but no {label_kind} annotations in "
                               f"{split_dir} (looked for {label_where})")
    unlabelled = sorted(images.keys() - labels.keys())
    orphans = sorted(labels.keys() - images.keys())
    if unlabelled or orphans:
        parts = []
        if unlabelled:
            parts.append(f"{len(unlabelled)} images without annotation ({shown(unlabelled)})")
        if orphans:
            parts.append(f"{len(orphans)} annotations without image ({shown(orphans)})")
        raise DataMissingError(f"dataset {name!r}: images and annotations in {split_dir} do not match by file name: "
                               f"{'; '.join(parts)}")
    return [(stem, images[stem], labels[stem]) for stem in sorted(images)]


def shown(stems: list[str]) -> str:
    more = f", ... {len(stems) - _SHOWN_STEMS} more" if len(stems) > _SHOWN_STEMS else ""
    return ", ".join(stems[:_SHOWN_STEMS]) + more


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def image_tensor(array: np.ndarray, path: Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from an (H, W, 3|4) or planar (3|4, H, W) integer or float array."""
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise DataMissingError(f"image {path} has shape {array.shape}; expected RGB (H, W, 3) or RGBA (H, W, 4)")
    rgb = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1)
    if np.issubdtype(array.dtype, np.integer):
        return rgb.to(torch.float32).div_(float(np.iinfo(array.dtype).max)).contiguous()
    if np.issubdtype(array.dtype, np.floating):
        return rgb.to(torch.float32).clamp_(0, 1).contiguous()
    raise DataMissingError(f"image {path} has pixel type {array.dtype}; expected integers or floats")
