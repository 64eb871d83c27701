"""MoNuSeg (MICCAI 2018): *.tif images with *.xml polygon annotations, rasterised once and cached."""

from __future__ import annotations

import io
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from sustainml_exp.errors import DataMissingError
from sustainml_exp.families.csl_segmentation.data.base import SegDataset, SegImage
from sustainml_exp.families.csl_segmentation.data.real import files, image_tensor, load_real, one_line, pair_files
from sustainml_exp.results import atomic_write_bytes

log = logging.getLogger("sustainml_exp")

_MONUSEG_SOURCE = ("download MoNuSeg by hand (registration) from the MICCAI 2018 challenge site "
                   "https://monuseg.grand-challenge.org/Data/")
_MONUSEG_LAYOUT = ("expected {root}/train/ and {root}/test/, each with *.tif images next to their *.xml "
                   "annotations, or with 'Tissue Images/*.tif' and 'Annotations/*.xml' as in the training archive")
DELIVERABLE_COUNTS = (37, 14)  # (train, test) images of the split D3.2 used
_MASK_CACHE = ".mask_cache"
_MASK_CACHE_VERSION = 1


def load(data_dir: Path) -> SegDataset:
    return load_real("monuseg", Path(data_dir) / "monuseg", ("train", "test"), _monuseg_split, _MONUSEG_SOURCE,
                     _MONUSEG_LAYOUT, DELIVERABLE_COUNTS)


def _monuseg_split(split_dir: Path, name: str) -> list[SegImage]:
    # The training archive keeps images and annotations in two subfolders; the test archive keeps them together.
    image_dir, label_dir = split_dir / "Tissue Images", split_dir / "Annotations"
    image_where = f"*.tif in {image_dir}" if image_dir.is_dir() else f"*.tif in {split_dir} or in {image_dir}"
    label_where = f"*.xml in {label_dir}" if label_dir.is_dir() else f"*.xml in {split_dir} or in {label_dir}"
    image_dir = image_dir if image_dir.is_dir() else split_dir
    label_dir = label_dir if label_dir.is_dir() else split_dir
    pairs = pair_files(split_dir, name, files(image_dir, (".tif", ".tiff")), files(label_dir, (".xml",)),
                       image_where=image_where, label_where=label_where, label_kind=".xml")
    cache_dir = split_dir.parent / _MASK_CACHE / split_dir.name
    out, cache_failed = [], False
    for stem, image_path, xml_path in pairs:
        image = image_tensor(_read_tif(image_path), image_path)
        shape = (image.shape[1], image.shape[2])
        mask, cache_failed = _cached_monuseg_mask(xml_path, shape, cache_dir / f"{stem}.npy", cache_failed)
        out.append(SegImage(name=stem, image=image, mask=torch.from_numpy(mask)))
    return out


def _read_tif(path: Path) -> np.ndarray:
    import tifffile

    try:
        array = tifffile.imread(path)
    except Exception as err:  # tifffile raises several types for damaged files; all mean "unreadable"
        raise DataMissingError(f"unreadable image {path}: {one_line(err)}") from err
    if array.size == 0:  # tifffile only warns about some damaged headers and returns nothing
        raise DataMissingError(f"unreadable image {path}: no pixel data")
    return array


def rasterise_monuseg_xml(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Union of the annotation's polygons as a bool (H, W) mask, vertices rounded to pixels and clipped.

    The format: Annotations/Annotation/Regions/Region/Vertices/Vertex with X (column) and Y (row) attributes.
    """
    from skimage.draw import polygon

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataMissingError(f"corrupt MoNuSeg annotation {path}: {one_line(err)}") from err
    if root.tag != "Annotations":
        raise DataMissingError(f"corrupt MoNuSeg annotation {path}: root element is <{root.tag}>, "
                               f"expected <Annotations>")
    mask = np.zeros(shape, dtype=bool)
    for region in root.iterfind("Annotation/Regions/Region"):
        try:
            xy = np.array([(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iterfind("Vertices/Vertex")])
        except (KeyError, ValueError) as err:
            raise DataMissingError(f"corrupt MoNuSeg annotation {path}: region {region.get('Id', '?')} has a vertex "
                                   f"without numeric X and Y ({one_line(err)})") from err
        if len(xy):
            rows, cols = polygon(np.round(xy[:, 1]), np.round(xy[:, 0]), shape=shape)
            mask[rows, cols] = True
    return mask


def _cache_dtype(n_bytes: int) -> np.dtype:
    # One record holds the key and the packed mask, so a single atomic rename publishes both together.
    return np.dtype([("version", "<i8"), ("xml_mtime_ns", "<i8"), ("xml_size", "<i8"), ("height", "<i8"),
                     ("width", "<i8"), ("bits", "u1", (n_bytes,))])


def _cached_monuseg_mask(xml_path: Path, shape: tuple[int, int], cache_path: Path,
                         cache_failed: bool) -> tuple[np.ndarray, bool]:
    """The rasterised mask from the cache when its key (xml mtime_ns and size, image shape) matches, else freshly
    rasterised and cached. Returns (mask, whether writing the cache has failed in this split)."""
    stat = xml_path.stat()
    key = (_MASK_CACHE_VERSION, stat.st_mtime_ns, stat.st_size, *shape)
    n_pixels = shape[0] * shape[1]
    n_bytes = (n_pixels + 7) // 8
    try:
        record = np.load(cache_path, allow_pickle=False)
        if record.dtype == _cache_dtype(n_bytes) and record.shape == (1,) and tuple(record[0].tolist()[:5]) == key:
            return np.unpackbits(record["bits"][0], count=n_pixels).reshape(shape).astype(bool), cache_failed
    except (OSError, ValueError, EOFError):
        pass  # absent, stale format or damaged: rasterise again
    mask = rasterise_monuseg_xml(xml_path, shape)
    record = np.zeros(1, dtype=_cache_dtype(n_bytes))
    record[0] = (*key, np.packbits(mask.ravel()))
    if not cache_failed:
        try:
            _save_npy_atomic(cache_path, record)
        except OSError as err:  # a read-only dataset folder: work without the cache
            log.warning("cannot cache MoNuSeg masks in %s (%s); rasterising on every load", cache_path.parent,
                        one_line(err))
            cache_failed = True
    return mask, cache_failed


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
