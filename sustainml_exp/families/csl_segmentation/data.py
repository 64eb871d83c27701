"""Nuclei segmentation data: the embedded synthetic H&E tiles and readers for MoNuSeg and CoNSeP.

Every loader returns RGB images as float32 (3, H, W) tensors in [0, 1] with boolean nucleus masks (semantic:
True = some nucleus, instances merged). The real datasets need a manual download (registration), so a missing or
damaged copy is a one-line ``DataMissingError`` that names the file or folder and says what was expected.
The file readers (tifffile, PIL, scipy, scikit-image) are imported where they are used: the embedded dataset
needs none of them.
"""

from __future__ import annotations

import io
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sustainml_exp.errors import ConfigError, DataMissingError
from sustainml_exp.families.csl_segmentation.config import SEG_DATASETS
from sustainml_exp.results import atomic_write_bytes

__all__ = [
    "DELIVERABLE_COUNTS",
    "SEG_DATASETS",
    "SegDataset",
    "SegImage",
    "load_seg_dataset",
    "make_synthetic_nuclei",
    "random_crops",
    "rasterise_monuseg_xml",
    "split_train_val",
]

log = logging.getLogger("sustainml_exp")


@dataclass
class SegImage:
    name: str
    image: torch.Tensor  # float32 (3, H, W) in [0, 1], RGB
    mask: torch.Tensor  # bool (H, W), True = nucleus


@dataclass
class SegDataset:
    name: str  # monuseg | consep | synthetic_nuclei
    train: list[SegImage]  # every training image; the runner splits validation off with split_train_val
    test: list[SegImage]
    source: str  # directory it was read from, or "embedded"


# (train, test) images of the splits D3.2 used; other releases and splits load with a warning.
DELIVERABLE_COUNTS = {"monuseg": (37, 14), "consep": (27, 14)}

# Data seeds of the embedded dataset are fixed, so that runs with different seeds see the same images.
SYNTHETIC_TRAIN = (24, 320, 1000)  # n_images, size, seed
SYNTHETIC_TEST = (8, 320, 2000)


def load_seg_dataset(name: str, data_dir: Path) -> SegDataset:
    """The dataset ``name``; ``data_dir`` holds the real ones (``monuseg/``, ``consep/``)."""
    if name == "synthetic_nuclei":
        return SegDataset(name=name, train=make_synthetic_nuclei(*SYNTHETIC_TRAIN),
                          test=make_synthetic_nuclei(*SYNTHETIC_TEST), source="embedded")
    if name == "monuseg":
        return _load_real(name, Path(data_dir) / "monuseg", ("train", "test"), _monuseg_split, _MONUSEG_SOURCE,
                          _MONUSEG_LAYOUT)
    if name == "consep":
        return _load_real(name, Path(data_dir) / "consep", ("Train", "Test"), _consep_split, _CONSEP_SOURCE,
                          _CONSEP_LAYOUT)
    raise ConfigError(f"dataset {name!r} is not a segmentation dataset; allowed: {', '.join(SEG_DATASETS)}")


# --------------------------------------------------------------------------------------------------------------
# Splitting and cropping


def split_train_val(images: list[SegImage], val_fraction: float, seed: int) -> tuple[list[SegImage], list[SegImage]]:
    """(train, val): a seeded random ``val_fraction`` of ``images`` (at least one each), both in input order."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction} is not a fraction of the training images; "
                          f"allowed: 0 < val_fraction < 1")
    n = len(images)
    if n < 2:
        raise ConfigError(f"val_fraction={val_fraction} needs at least 2 training images to hold one out for "
                          f"validation; the dataset has {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return ([img for img, v in zip(images, held_out) if not v], [img for img, v in zip(images, held_out) if v])


def random_crops(images: list[SegImage], crop: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly placed ``crop`` x ``crop`` window per image: (B, 3, crop, crop) float32, (B, crop, crop) bool.

    The offsets come from ``generator`` only (two draws per image, in list order), so a seeded generator
    gives the same crops on every run.
    """
    if not images:
        raise ValueError("random_crops needs at least one image")
    if crop < 1:
        raise ConfigError(f"crop_size={crop} is not a crop size; allowed: crop_size >= 1")
    for img in images:
        height, width = img.mask.shape
        if crop > min(height, width):
            raise ConfigError(f"crop_size={crop} is larger than image {img.name!r} ({height}x{width} px); "
                              f"allowed: crop_size <= {min(height, width)}")
    sizes = torch.tensor([img.mask.shape for img in images], dtype=torch.float64)
    # floor(u * (side - crop + 1)) is uniform over the valid offsets; one draw serves images of any size.
    u = torch.rand(len(images), 2, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    offsets = torch.floor(u * (sizes - crop + 1)).long().tolist()
    crops = torch.stack([img.image[:, top:top + crop, left:left + crop] for img, (top, left) in zip(images, offsets)])
    masks = torch.stack([img.mask[top:top + crop, left:left + crop] for img, (top, left) in zip(images, offsets)])
    return crops, masks


# --------------------------------------------------------------------------------------------------------------
# Embedded dataset: synthetic H&E tiles
#
# Tiles are composed in optical density, as light passes through stained tissue (Beer-Lambert): each pixel holds
# a haematoxylin and an eosin amount, and RGB = 10 ** -(h * H + e * E) for the stains' colour vectors H and E.
# Nuclei are haematoxylin-rich perturbed ellipses; the tissue around them is eosin with smooth density changes,
# fibres, pale gaps and faint haematoxylin. Nuclei are darker than tissue on average, but a single grey
# threshold stays imperfect (pale vesicular nuclei, dense dark stroma, per-tile stain strength, uneven
# illumination), while colour, texture and shape still tell nuclei apart.


@dataclass(frozen=True)
class TileStyle:
    """Ranges (low, high) of the per-tile and per-nucleus draws of the synthetic tiles; lengths in px."""

    haematoxylin: tuple[float, float, float] = (0.65, 0.70, 0.29)  # optical density per unit stain (R, G, B)
    eosin: tuple[float, float, float] = (0.15, 0.90, 0.42)
    stain_colour_jitter: float = 0.1  # relative std of each stain vector component, per tile
    nuclei_per_tile: tuple[int, int] = (28, 55)  # per 320 x 320 px
    small_share: tuple[float, float] = (0.2, 0.5)  # lymphocyte-like: small, round, dark
    small_radius: tuple[float, float] = (5.0, 8.0)
    small_darkness: tuple[float, float] = (0.95, 1.4)
    large_radius: tuple[float, float] = (8.0, 17.0)
    large_aspect: tuple[float, float] = (0.45, 0.9)  # minor / major axis
    large_darkness: tuple[float, float] = (0.35, 1.0)
    large_vesicular: tuple[float, float] = (0.0, 0.5)  # how much paler the centre is than the rim
    outline_wobble: float = 0.07  # max amplitude of each of the 2-, 3- and 4-lobe boundary harmonics
    touching_share: tuple[float, float] = (0.15, 0.35)  # nuclei placed against an earlier one
    chromatin: tuple[float, float] = (0.1, 0.35)  # granular texture amplitude inside nuclei
    edge_blur: tuple[float, float] = (0.6, 1.0)  # px: soft nucleus boundaries (slight defocus)
    eosin_base: tuple[float, float] = (0.18, 0.3)
    fibre_eosin: tuple[float, float] = (0.1, 0.3)
    stroma_eosin: tuple[float, float] = (0.1, 0.45)  # extra eosin in dense, dark stroma patches
    tissue_haematoxylin: tuple[float, float] = (0.05, 0.2)  # basophilic cytoplasm
    gap_threshold: tuple[float, float] = (1.0, 1.6)  # higher: fewer pale gaps
    stain_strength: tuple[float, float] = (0.6, 1.25)  # per tile, haematoxylin and eosin independently
    brightness: tuple[float, float] = (0.9, 1.02)
    illumination_ramp: tuple[float, float] = (0.2, 0.45)  # brightness difference across the tile
    vignetting: tuple[float, float] = (0.0, 0.3)
    noise: float = 0.02


SYNTHETIC_STYLE = TileStyle()


def make_synthetic_nuclei(n_images: int, size: int, seed: int, style: TileStyle = SYNTHETIC_STYLE) -> list[SegImage]:
    """``n_images`` synthetic H&E tiles of ``size`` x ``size`` px with exact nucleus masks.

    Image ``i`` depends only on (seed, i, size): a longer list starts with the same tiles. ``size`` is the field
    of view at a fixed magnification: nucleus radii stay ~5-20 px and their number grows with the area.
    """
    if n_images < 0 or size < 16:
        raise ValueError(f"make_synthetic_nuclei needs n_images >= 0 and size >= 16, got {n_images} and {size}")
    out = []
    for i, stream in enumerate(np.random.SeedSequence(seed).spawn(n_images)):
        image, mask = _synthetic_tile(np.random.default_rng(stream), size, style)
        out.append(SegImage(name=f"synthetic_{seed}_{i:03d}", image=torch.from_numpy(image),
                            mask=torch.from_numpy(mask)))
    return out


def _fine_fields(rng: np.random.Generator, size: int, shapes: list[tuple[float, float, float]]) -> np.ndarray:
    """(len(shapes), size, size) float32 periodic Gaussian random fields, zero-mean with unit std.

    Field j is white noise smoothed by a Gaussian with standard deviations (along, across) px, the first along
    the angle theta: shapes[j] = (along, across, theta). Equal sigmas give blobs, unequal ones streaks. The noise
    is drawn directly as Fourier coefficients, so each field costs one inverse FFT; uniform coefficients are
    cheaper to draw than normal ones, and the sum over many of them that makes each pixel is Gaussian anyway.
    """
    sigma = np.array(shapes, dtype=np.float32)[:, :, None, None]
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    cos, sin = np.cos(sigma[:, 2]), np.sin(sigma[:, 2])
    f_along, f_across = fx * cos + fy * sin, -fx * sin + fy * cos
    transfer = np.exp(-2 * np.pi ** 2 * ((sigma[:, 0] * f_along) ** 2 + (sigma[:, 1] * f_across) ** 2))
    transfer[:, 0, 0] = 0  # zero mean
    coefficients = rng.random((2, len(shapes), size, size // 2 + 1), dtype=np.float32) - np.float32(0.5)
    fields = np.fft.irfft2((coefficients[0] + 1j * coefficients[1]) * transfer, s=(size, size)).astype(np.float32)
    return _unit_std(fields)


def _coarse_fields(rng: np.random.Generator, size: int, sigmas: list[float]) -> np.ndarray:
    """(len(sigmas), size, size) float32 smooth random fields (sigma >= 8 px), about zero-mean with unit std.

    Smooth fields hold no detail, so they are drawn on a grid 8 times coarser and interpolated up (bilinear,
    periodic like the fields), one axis at a time.
    """
    coarse = max(4, -(-size // 8))
    fields = _fine_fields(rng, coarse, [(s * coarse / size, s * coarse / size, 0.0) for s in sigmas])
    position = (np.arange(size) + 0.5) * coarse / size - 0.5
    below = np.floor(position).astype(np.int64)
    above, below = (below + 1) % coarse, below % coarse
    weight = (position - np.floor(position)).astype(np.float32)
    rows = fields[:, below, :] * (1 - weight)[:, None] + fields[:, above, :] * weight[:, None]
    return _unit_std(rows[:, :, below] * (1 - weight) + rows[:, :, above] * weight)


def _unit_std(fields: np.ndarray) -> np.ndarray:
    # A 1-in-16 pixel sample estimates the std of a smooth field well enough, at a sixteenth of the cost.
    fields /= fields[:, ::4, ::4].std(axis=(1, 2), keepdims=True) + 1e-6
    return fields


@dataclass
class _Nuclei:
    """Per-nucleus geometry and stain of one tile (arrays of length n)."""

    centre: np.ndarray  # (n, 2) row, column; may lie slightly outside the tile
    semi_axes: np.ndarray  # (n, 2) major, minor in px
    angle: np.ndarray  # (n,) orientation of the major axis
    wobble: np.ndarray  # (n, 3) amplitudes of the 2-, 3- and 4-lobe harmonics of the boundary radius
    phase: np.ndarray  # (n, 3)
    darkness: np.ndarray  # (n,) haematoxylin at the rim
    vesicular: np.ndarray  # (n,) relative paleness of the centre
    chromatin: np.ndarray  # (n,) texture amplitude


def _place_nuclei(rng: np.random.Generator, size: int, style: TileStyle) -> _Nuclei:
    """Small round dark nuclei and larger paler elliptical ones; a share of them placed against an earlier
    nucleus, so that masks touch. Candidates overlapping an earlier nucleus much are dropped."""
    n_target = max(2, round(rng.integers(*style.nuclei_per_tile, endpoint=True) * (size / 320) ** 2))
    n_draw = 4 * n_target  # candidates, more than enough for the overlap rejection below
    small = rng.random(n_draw) < rng.uniform(*style.small_share)
    radius = np.where(small, rng.uniform(*style.small_radius, n_draw), rng.uniform(*style.large_radius, n_draw))
    aspect = np.where(small, rng.uniform(0.8, 1.0, n_draw), rng.uniform(*style.large_aspect, n_draw))
    darkness = np.where(small, rng.uniform(*style.small_darkness, n_draw), rng.uniform(*style.large_darkness, n_draw))
    vesicular = np.where(small, 0.0, rng.uniform(*style.large_vesicular, n_draw))
    touching = rng.random(n_draw) < rng.uniform(*style.touching_share)
    # Free centres may lie a little outside the tile, so that nuclei are cut by its edges as in a real crop.
    free_centre = rng.random((n_draw, 2)) * (size + 0.6 * radius[:, None]) - 0.3 * radius[:, None]
    neighbour_draw = rng.random(n_draw)
    direction = rng.uniform(0, 2 * np.pi, n_draw)
    spacing = rng.uniform(0.8, 0.95, n_draw)

    kept: list[int] = []
    centres = np.empty((n_draw, 2))
    for i in range(n_draw):  # sequential by nature: each candidate is checked against those kept before it
        if len(kept) >= n_target:
            break
        centre = free_centre[i]
        if kept and touching[i]:
            j = kept[int(neighbour_draw[i] * len(kept))]
            reach = (radius[j] + radius[i]) * spacing[i]
            centre = centres[j] + reach * np.array([np.sin(direction[i]), np.cos(direction[i])])
        if kept:
            others = np.array(kept)
            gap = np.hypot(*(centres[others] - centre).T) / (radius[others] + radius[i])
            if gap.min() < 0.75:
                continue
        centres[i] = centre
        kept.append(i)
    k = np.array(kept, dtype=np.int64)
    n = len(k)
    # Semi-axes keep the area of a circle of the drawn radius.
    semi_axes = np.stack([radius[k] / np.sqrt(aspect[k]), radius[k] * np.sqrt(aspect[k])], axis=1)
    return _Nuclei(centre=centres[k], semi_axes=semi_axes, angle=rng.uniform(0, np.pi, n),
                   wobble=rng.uniform(0, style.outline_wobble, (n, 3)), phase=rng.uniform(0, 2 * np.pi, (n, 3)),
                   darkness=darkness[k], vesicular=vesicular[k], chromatin=rng.uniform(*style.chromatin, n))


def _draw_nuclei(nuclei: _Nuclei, size: int, edge_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                        np.ndarray]:
    """(mask, haematoxylin, coverage, chromatin amplitude) maps of the nuclei, each drawn in its bounding box.

    The mask is exact (pixel centre inside the boundary); haematoxylin and coverage fall off linearly across a
    band of about ``edge_px`` px around the boundary, a slightly defocused edge.
    """
    mask = np.zeros((size, size), dtype=bool)
    stain = np.zeros((size, size), dtype=np.float32)
    coverage = np.zeros((size, size), dtype=np.float32)
    chromatin = np.zeros((size, size), dtype=np.float32)
    for i in range(len(nuclei.angle)):  # a loop over nuclei, each a whole-window operation
        cy, cx = nuclei.centre[i]
        major, minor = nuclei.semi_axes[i]
        reach = major * (1 + nuclei.wobble[i].sum()) + edge_px + 1
        y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 2)
        x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1) - cy)[:, None].astype(np.float32)
        dx = (np.arange(x0, x1) - cx)[None, :].astype(np.float32)
        c, s = float(np.cos(nuclei.angle[i])), float(np.sin(nuclei.angle[i]))
        major, minor = float(major), float(minor)
        u, v = (dx * c + dy * s) / major, (-dx * s + dy * c) / minor
        radius = np.hypot(u, v)
        # Boundary radius 1 + sum_k wobble_k cos(k theta + phase_k), k = 2, 3, 4, as Re(wobble e^(i phase) z^k)
        # with z = e^(i theta): powers of z are cheaper than arctan2 and cosines.
        z = (u + 1j * v) / np.maximum(radius, 1e-6)
        z_k = z
        boundary = np.ones_like(radius)
        for amplitude, phase in zip(nuclei.wobble[i], nuclei.phase[i]):
            z_k = z_k * z
            boundary += (z_k * complex(amplitude * np.exp(1j * phase))).real
        t = radius / boundary  # < 1 inside, 1 on the boundary
        inside = t <= 1
        # Distance to the boundary in px, roughly: (1 - t) times the local radius.
        edge = np.clip(0.5 + (1 - t) * (np.sqrt(major * minor) / edge_px), 0, 1)
        # Vesicular nuclei: chromatin against the membrane, a paler centre.
        level = edge * float(nuclei.darkness[i]) * (1 - float(nuclei.vesicular[i]) * (1 - np.minimum(t, 1) ** 2))
        box = (slice(y0, y1), slice(x0, x1))
        mask[box] |= inside
        np.maximum(stain[box], level, out=stain[box])
        np.maximum(coverage[box], edge, out=coverage[box])
        chromatin[box][inside] = nuclei.chromatin[i]
    return mask, stain, coverage, chromatin


def _synthetic_tile(rng: np.random.Generator, size: int, style: TileStyle) -> tuple[np.ndarray, np.ndarray]:
    fibres, grain = _fine_fields(rng, size, [(18, 1.2, rng.uniform(0, np.pi)), (1.2, 1.2, 0.0)])
    density, gaps, basophil = _coarse_fields(rng, size, [28, 40, 12])
    nuclei = _place_nuclei(rng, size, style)
    mask, nuclear_stain, coverage, chromatin = _draw_nuclei(nuclei, size, rng.uniform(*style.edge_blur))

    # Tissue: eosin with dense stroma patches, fibres and near-white gaps, faint haematoxylin.
    eosin = rng.uniform(*style.eosin_base) * (1 + 0.3 * density)
    eosin += rng.uniform(*style.fibre_eosin) * np.maximum(fibres - 1, 0)
    eosin += rng.uniform(*style.stroma_eosin) * np.maximum(density - 0.8, 0)
    eosin *= 1 + 0.08 * grain
    tissue = 1 - 0.85 * np.clip((gaps - rng.uniform(*style.gap_threshold)) * 2, 0, 1)
    eosin *= tissue
    haematoxylin = rng.uniform(*style.tissue_haematoxylin) * np.maximum(1 + 0.6 * basophil, 0) * tissue
    # Nuclei: haematoxylin with granular chromatin on top of somewhat less eosin.
    haematoxylin += nuclear_stain * (1 + chromatin * grain)
    eosin *= 1 - 0.3 * coverage

    # Per-tile stain strength and colour, as between slides and scanners.
    jitter = style.stain_colour_jitter
    h_colour = np.asarray(style.haematoxylin) * (1 + rng.normal(0, jitter, 3)) * rng.uniform(*style.stain_strength)
    e_colour = np.asarray(style.eosin) * (1 + rng.normal(0, jitter, 3)) * rng.uniform(*style.stain_strength)
    h_colour, e_colour = (-np.log(10) * h_colour).astype(np.float32), (-np.log(10) * e_colour).astype(np.float32)
    np.maximum(haematoxylin, 0, out=haematoxylin)
    np.maximum(eosin, 0, out=eosin)
    rgb = np.empty((3, size, size), dtype=np.float32)
    for c in range(3):
        np.exp(haematoxylin * h_colour[c] + eosin * e_colour[c], out=rgb[c])

    # Optics: brighter on one side of the tile, darker corners, sensor noise.
    angle = rng.uniform(0, 2 * np.pi)
    axis = np.arange(size, dtype=np.float32) / size - 0.5
    ramp = float(np.cos(angle)) * axis[None, :] + float(np.sin(angle)) * axis[:, None]
    vignette = axis[None, :] ** 2 + axis[:, None] ** 2
    rgb *= (rng.uniform(*style.brightness) + rng.uniform(*style.illumination_ramp) * ramp
            - rng.uniform(*style.vignetting) * vignette)
    # Uniform noise with the std of style.noise: several times cheaper to draw than normal noise.
    rgb += (rng.random(rgb.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(style.noise * np.sqrt(12))
    return np.clip(rgb, 0, 1, out=rgb), mask


# --------------------------------------------------------------------------------------------------------------
# Real datasets

_MONUSEG_SOURCE = ("download MoNuSeg by hand (registration) from the MICCAI 2018 challenge site "
                   "https://monuseg.grand-challenge.org/Data/")
_MONUSEG_LAYOUT = ("expected {root}/train/ and {root}/test/, each with *.tif images next to their *.xml "
                   "annotations, or with 'Tissue Images/*.tif' and 'Annotations/*.xml' as in the training archive")
_CONSEP_SOURCE = ("download CoNSeP by hand from https://warwick.ac.uk/fac/cross_fac/tia/data/hovernet/")
_CONSEP_LAYOUT = "expected {root}/Train/ and {root}/Test/, each with Images/*.png and Labels/*.mat"

_MASK_CACHE = ".mask_cache"
_MASK_CACHE_VERSION = 1
_SHOWN_STEMS = 5


def _load_real(name: str, root: Path, splits: tuple[str, str], read_split: Callable[[Path, str], list[SegImage]],
               how_to_get: str, layout: str) -> SegDataset:
    layout = layout.format(root=root)
    if not root.is_dir():
        raise DataMissingError(f"dataset {name!r} not found: no folder {root}{_other_case_hint(root)}; "
                               f"{how_to_get} and unpack it there ({layout})")
    for split_dir in (root / split for split in splits):
        if not split_dir.is_dir():
            raise DataMissingError(f"dataset {name!r} is incomplete: no folder {split_dir}"
                                   f"{_other_case_hint(split_dir)}; {layout}")
    train, test = (read_split(root / split, name) for split in splits)
    expected = DELIVERABLE_COUNTS[name]
    if (len(train), len(test)) != expected:
        log.warning("%s in %s has %d train / %d test images; the deliverable used %d / %d (another release or "
                    "split?): results are not comparable with its tables", name, root, len(train), len(test),
                    *expected)
    return SegDataset(name=name, train=train, test=test, source=str(root.resolve()))


def _other_case_hint(path: Path) -> str:
    """' (found X: rename it)' when a sibling differs from ``path`` only in letter case, as archives unpack."""
    if not path.parent.is_dir():
        return ""
    for sibling in path.parent.iterdir():
        if sibling.name != path.name and sibling.name.lower() == path.name.lower() and sibling.is_dir():
            return f" (found {sibling}: rename it to {path.name})"
    return ""


def _files(directory: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
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


def _pair_files(split_dir: Path, name: str, images: dict[str, Path], labels: dict[str, Path],
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
            parts.append(f"{len(unlabelled)} images without annotation ({_shown(unlabelled)})")
        if orphans:
            parts.append(f"{len(orphans)} annotations without image ({_shown(orphans)})")
        raise DataMissingError(f"dataset {name!r}: images and annotations in {split_dir} do not match by file name: "
                               f"{'; '.join(parts)}")
    return [(stem, images[stem], labels[stem]) for stem in sorted(images)]


def _shown(stems: list[str]) -> str:
    more = f", ... {len(stems) - _SHOWN_STEMS} more" if len(stems) > _SHOWN_STEMS else ""
    return ", ".join(stems[:_SHOWN_STEMS]) + more


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _image_tensor(array: np.ndarray, path: Path) -> torch.Tensor:
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


# MoNuSeg ------------------------------------------------------------------------------------------------------


def _monuseg_split(split_dir: Path, name: str) -> list[SegImage]:
    # The training archive keeps images and annotations in two subfolders; the test archive keeps them together.
    image_dir, label_dir = split_dir / "Tissue Images", split_dir / "Annotations"
    image_where = f"*.tif in {image_dir}" if image_dir.is_dir() else f"*.tif in {split_dir} or in {image_dir}"
    label_where = f"*.xml in {label_dir}" if label_dir.is_dir() else f"*.xml in {split_dir} or in {label_dir}"
    image_dir = image_dir if image_dir.is_dir() else split_dir
    label_dir = label_dir if label_dir.is_dir() else split_dir
    pairs = _pair_files(split_dir, name, _files(image_dir, (".tif", ".tiff")), _files(label_dir, (".xml",)),
                        image_where=image_where, label_where=label_where, label_kind=".xml")
    cache_dir = split_dir.parent / _MASK_CACHE / split_dir.name
    out, cache_failed = [], False
    for stem, image_path, xml_path in pairs:
        image = _image_tensor(_read_tif(image_path), image_path)
        shape = (image.shape[1], image.shape[2])
        mask, cache_failed = _cached_monuseg_mask(xml_path, shape, cache_dir / f"{stem}.npy", cache_failed)
        out.append(SegImage(name=stem, image=image, mask=torch.from_numpy(mask)))
    return out


def _read_tif(path: Path) -> np.ndarray:
    import tifffile

    try:
        array = tifffile.imread(path)
    except Exception as err:  # tifffile raises several types for damaged files; all mean "unreadable"
        raise DataMissingError(f"unreadable image {path}: {_one_line(err)}") from err
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
        raise DataMissingError(f"corrupt MoNuSeg annotation {path}: {_one_line(err)}") from err
    if root.tag != "Annotations":
        raise DataMissingError(f"corrupt MoNuSeg annotation {path}: root element is <{root.tag}>, "
                               f"expected <Annotations>")
    mask = np.zeros(shape, dtype=bool)
    for region in root.iterfind("Annotation/Regions/Region"):
        try:
            xy = np.array([(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iterfind("Vertices/Vertex")])
        except (KeyError, ValueError) as err:
            raise DataMissingError(f"corrupt MoNuSeg annotation {path}: region {region.get('Id', '?')} has a vertex "
                                   f"without numeric X and Y ({_one_line(err)})") from err
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
                        _one_line(err))
            cache_failed = True
    return mask, cache_failed


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


# CoNSeP -------------------------------------------------------------------------------------------------------


def _consep_split(split_dir: Path, name: str) -> list[SegImage]:
    image_dir, label_dir = split_dir / "Images", split_dir / "Labels"
    pairs = _pair_files(split_dir, name, _files(image_dir, (".png",)), _files(label_dir, (".mat",)),
                        image_where=f"*.png in {image_dir}", label_where=f"*.mat in {label_dir}", label_kind=".mat")
    out = []
    for stem, image_path, mat_path in pairs:
        image = _image_tensor(_read_png(image_path), image_path)
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
        raise DataMissingError(f"unreadable image {path}: {_one_line(err)}") from err


def _read_consep_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from scipy.io import loadmat

    try:
        contents = loadmat(path, variable_names=["inst_map"])
    except Exception as err:  # scipy raises several types for damaged files; all mean "unreadable"
        raise DataMissingError(f"corrupt CoNSeP label {path}: {_one_line(err)}") from err
    if "inst_map" not in contents:
        raise DataMissingError(f"corrupt CoNSeP label {path}: no variable inst_map")
    inst_map = np.asarray(contents["inst_map"])
    if inst_map.shape != shape:
        raise DataMissingError(f"corrupt CoNSeP label {path}: inst_map has shape {inst_map.shape}, its image "
                               f"{shape[0]}x{shape[1]}")
    return inst_map > 0
