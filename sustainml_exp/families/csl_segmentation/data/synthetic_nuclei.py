"""The embedded dataset: synthetic H&E tiles with nucleus masks (no download; fixed data seeds).

Tiles are composed in optical density, as light passes through stained tissue (Beer-Lambert): each pixel holds
a haematoxylin and an eosin amount, and RGB = 10 ** -(h * H + e * E) for the stains' colour vectors H and E.
Nuclei are haematoxylin-rich perturbed ellipses; the tissue around them is eosin with smooth density changes,
fibres, pale gaps and faint haematoxylin. Nuclei are darker than tissue on average, but a single grey
threshold stays imperfect (pale vesicular nuclei, dense dark stroma, per-tile stain strength, uneven
illumination), while colour, texture and shape still tell nuclei apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sustainml_exp.families.csl_segmentation.data.base import SegDataset, SegImage

# Data seeds of the embedded dataset are fixed, so that runs with different seeds see the same images.
SYNTHETIC_TRAIN = (24, 320, 1000)  # n_images, size, seed
SYNTHETIC_TEST = (8, 320, 2000)


def load(data_dir: Path) -> SegDataset:
    return SegDataset(name="synthetic_nuclei", train=make_synthetic_nuclei(*SYNTHETIC_TRAIN),
                      test=make_synthetic_nuclei(*SYNTHETIC_TEST), source="embedded")


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
