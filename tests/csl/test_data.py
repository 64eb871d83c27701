"""Nuclei segmentation data: the synthetic tiles, the MoNuSeg and CoNSeP readers on tiny files written in the
real formats (TIFF + XML polygons, RGBA PNG + MATLAB inst_map), the mask cache, the one-line errors, the
train/validation split and the random crops."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tifffile
import torch
from PIL import Image

from sustainml_exp.errors import ConfigError, DataMissingError
from sustainml_exp.families.csl_segmentation.data import (
    SegDataset,
    SegImage,
    load_seg_dataset,
    make_synthetic_nuclei,
    random_crops,
    rasterise_monuseg_xml,
    split_train_val,
)

H, W = 12, 16  # tiny real-format images


def rgb_pattern(seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, channels), dtype=np.uint8)


def monuseg_xml(polygons: list[list[tuple[float, float]]]) -> str:
    """An annotation file as MoNuSeg ships them: one Annotation, a header block, one Region per nucleus."""
    regions = []
    for i, vertices in enumerate(polygons, start=1):
        points = "\n".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in vertices)
        regions.append(f'<Region Id="{i}" Type="0" Zoom="0.042" Selected="0" ImageLocation="" ImageFocus="-1" '
                       f'Length="40.0" Area="100.0" LengthMicrons="10.1" AreaMicrons="6.3" Text="" NegativeROA="0" '
                       f'InputRegionId="0" Analyze="1" DisplayId="{i}">\n<Attributes/>\n<Vertices>\n{points}\n'
                       f'</Vertices>\n</Region>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel="0.252100">\n'
            '<Annotation Id="1" Name="" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" Incremental="0" '
            'Type="4" LineColor="65280" Visible="1" Selected="1" MarkupImagePath="" MacroName="">\n'
            '<Attributes>\n<Attribute Name="Description" Id="0" Value=""/>\n</Attributes>\n<Regions>\n'
            '<RegionAttributeHeaders>\n<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>\n'
            '</RegionAttributeHeaders>\n' + "\n".join(regions) + '\n</Regions>\n<Plots/>\n</Annotation>\n'
            '</Annotations>\n')


# Rows 2-6 and columns 3-7 (both inclusive: skimage fills boundary pixels); vertices round to those corners.
SQUARE = [(2.6, 1.6), (7.4, 1.9), (7.2, 6.4), (3.1, 5.5)]


def square_mask() -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[2:7, 3:8] = True
    return mask


# A second region partly outside the image: rows -3..4, columns 12..20 clip to rows 0-4, cols 12-15.
CLIPPED = [(12, -3), (20, -3), (20, 4), (12, 4)]


def clipped_mask() -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[0:5, 12:16] = True
    return mask


def write_monuseg_pair(image_dir: Path, xml_dir: Path, stem: str, seed: int,
                       polygons: list[list[tuple[float, float]]], channels: int = 3) -> np.ndarray:
    image_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    pixels = rgb_pattern(seed, channels)
    tifffile.imwrite(image_dir / f"{stem}.tif", pixels, photometric="rgb")
    (xml_dir / f"{stem}.xml").write_text(monuseg_xml(polygons))
    return pixels


def make_monuseg(root: Path, official_train_layout: bool) -> dict[str, np.ndarray]:
    """monuseg/ with two training images (one RGBA) and one test image; returns the written pixels by stem."""
    train = root / "monuseg" / "train"
    image_dir, xml_dir = (train / "Tissue Images", train / "Annotations") if official_train_layout else (train, train)
    pixels = {
        "TCGA-A1": write_monuseg_pair(image_dir, xml_dir, "TCGA-A1", 1, [SQUARE]),
        "TCGA-B2": write_monuseg_pair(image_dir, xml_dir, "TCGA-B2", 2, [SQUARE, CLIPPED], channels=4),
    }
    test = root / "monuseg" / "test"
    pixels["TCGA-T1"] = write_monuseg_pair(test, test, "TCGA-T1", 3, [CLIPPED])
    return pixels


def assert_image_equals(img: SegImage, pixels: np.ndarray) -> None:
    assert img.image.dtype == torch.float32 and img.image.shape == (3, H, W)
    expected = torch.from_numpy(pixels[..., :3].astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(img.image, expected)
    assert img.mask.dtype == torch.bool and img.mask.shape == (H, W)


# --------------------------------------------------------------------------------------------------------------
# MoNuSeg


@pytest.mark.parametrize("official_train_layout", [False, True], ids=["flat", "tissue-images-annotations"])
def test_monuseg_reads_images_and_rasterises_polygons(tmp_path: Path, official_train_layout: bool,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    pixels = make_monuseg(tmp_path, official_train_layout)
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        data = load_seg_dataset("monuseg", tmp_path)
    assert isinstance(data, SegDataset) and data.name == "monuseg"
    assert data.source == str((tmp_path / "monuseg").resolve())
    assert [img.name for img in data.train] == ["TCGA-A1", "TCGA-B2"]
    assert [img.name for img in data.test] == ["TCGA-T1"]
    for img in data.train + data.test:
        assert_image_equals(img, pixels[img.name])  # the RGBA one loses its alpha
    assert torch.equal(data.train[0].mask, torch.from_numpy(square_mask()))
    assert torch.equal(data.train[1].mask, torch.from_numpy(square_mask() | clipped_mask()))
    assert torch.equal(data.test[0].mask, torch.from_numpy(clipped_mask()))
    # Not the deliverable's 37 / 14: loads, with a warning that names both counts.
    assert "2 train / 1 test" in caplog.text and "37 / 14" in caplog.text


def test_rasterise_fills_union_of_rounded_clipped_polygons(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(monuseg_xml([SQUARE, CLIPPED, [(0, 10), (1, 10), (1, 11), (0, 11)]]))
    expected = square_mask() | clipped_mask()
    expected[10:12, 0:2] = True
    assert np.array_equal(rasterise_monuseg_xml(path, (H, W)), expected)
    path.write_text(monuseg_xml([]))
    assert not rasterise_monuseg_xml(path, (H, W)).any()


def test_monuseg_mask_cache_is_used_and_invalidated_when_the_xml_changes(tmp_path: Path) -> None:
    make_monuseg(tmp_path, official_train_layout=False)
    load_seg_dataset("monuseg", tmp_path)
    cache = tmp_path / "monuseg" / ".mask_cache" / "train" / "TCGA-A1.npy"
    assert cache.is_file() and (tmp_path / "monuseg" / ".mask_cache" / "test" / "TCGA-T1.npy").is_file()
    assert sorted(p.name for p in cache.parent.iterdir()) == ["TCGA-A1.npy", "TCGA-B2.npy"]  # no temp files

    # A planted cache entry with a matching key is what the loader returns: the cache is read, not redone.
    record = np.load(cache)
    planted = np.zeros((H, W), dtype=bool)
    planted[0, 0] = True
    record["bits"][0] = np.packbits(planted.ravel())
    np.save(cache, record)
    assert torch.equal(load_seg_dataset("monuseg", tmp_path).train[0].mask, torch.from_numpy(planted))

    # Same size, new modification time: rasterised again from the xml, and the cache rewritten.
    xml = tmp_path / "monuseg" / "train" / "TCGA-A1.xml"
    stat = xml.stat()
    os.utime(xml, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert torch.equal(load_seg_dataset("monuseg", tmp_path).train[0].mask, torch.from_numpy(square_mask()))
    assert np.array_equal(np.unpackbits(np.load(cache)["bits"][0], count=H * W).reshape(H, W), square_mask())

    # New content (another size): the new polygon.
    xml.write_text(monuseg_xml([CLIPPED]))
    os.utime(xml, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old time
    assert torch.equal(load_seg_dataset("monuseg", tmp_path).train[0].mask, torch.from_numpy(clipped_mask()))

    # A damaged cache file is ignored and replaced.
    cache.write_bytes(b"not an npy file")
    assert torch.equal(load_seg_dataset("monuseg", tmp_path).train[0].mask, torch.from_numpy(clipped_mask()))
    assert np.load(cache)["bits"].shape[0] == 1


# --------------------------------------------------------------------------------------------------------------
# CoNSeP


def write_consep_pair(split_dir: Path, stem: str, seed: int, inst_map: np.ndarray) -> np.ndarray:
    (split_dir / "Images").mkdir(parents=True, exist_ok=True)
    (split_dir / "Labels").mkdir(parents=True, exist_ok=True)
    pixels = rgb_pattern(seed, channels=4)  # CoNSeP ships RGBA; the alpha here is random and must be dropped
    Image.fromarray(pixels, mode="RGBA").save(split_dir / "Images" / f"{stem}.png")
    scipy.io.savemat(split_dir / "Labels" / f"{stem}.mat",
                     {"inst_map": inst_map.astype(np.float64), "type_map": (inst_map > 0).astype(np.float64)})
    return pixels


def instance_map(seed: int) -> np.ndarray:
    inst = np.zeros((H, W))
    inst[1:4, 2:6] = 1
    inst[7:11, 9:15] = 2 + seed  # instance ids are arbitrary positive numbers
    return inst


def make_consep(root: Path) -> dict[str, np.ndarray]:
    return {
        "train_1": write_consep_pair(root / "consep" / "Train", "train_1", 1, instance_map(1)),
        "train_2": write_consep_pair(root / "consep" / "Train", "train_2", 2, instance_map(2)),
        "test_1": write_consep_pair(root / "consep" / "Test", "test_1", 3, instance_map(3)),
    }


def test_consep_reads_rgba_png_and_inst_map(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pixels = make_consep(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sustainml_exp"):
        data = load_seg_dataset("consep", tmp_path)
    assert data.name == "consep" and data.source == str((tmp_path / "consep").resolve())
    assert [img.name for img in data.train] == ["train_1", "train_2"] and [img.name for img in data.test] == ["test_1"]
    for i, img in enumerate(data.train + data.test, start=1):
        assert_image_equals(img, pixels[img.name])
        assert torch.equal(img.mask, torch.from_numpy(instance_map(i) > 0))
    assert "2 train / 1 test" in caplog.text and "27 / 14" in caplog.text


# --------------------------------------------------------------------------------------------------------------
# One-line errors


def one_line_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("name, where, hints", [
    ("monuseg", "monuseg", ["https://monuseg.grand-challenge.org/Data/", "MICCAI 2018", "by hand", "Tissue Images"]),
    ("consep", "consep", ["https://warwick.ac.uk/fac/cross_fac/tia/data/hovernet/", "by hand", "Labels/*.mat"]),
])
def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path: Path, name: str, where: str,
                                                                hints: list[str]) -> None:
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset(name, tmp_path)
    message = one_line_error(err)
    assert str(tmp_path / where) in message
    for hint in hints:
        assert hint in message


def test_missing_dataset_points_at_a_folder_that_differs_only_in_case(tmp_path: Path) -> None:
    (tmp_path / "CoNSeP" / "Train").mkdir(parents=True)
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("consep", tmp_path)
    assert f"found {tmp_path / 'CoNSeP'}: rename it to consep" in one_line_error(err)


def test_missing_split_folder(tmp_path: Path) -> None:
    make_monuseg(tmp_path, official_train_layout=False)
    for path in (tmp_path / "monuseg" / "test").iterdir():
        path.unlink()
    (tmp_path / "monuseg" / "test").rmdir()
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("monuseg", tmp_path)
    assert f"no folder {tmp_path / 'monuseg' / 'test'}" in one_line_error(err)


def test_split_with_images_but_no_annotations(tmp_path: Path) -> None:
    make_monuseg(tmp_path, official_train_layout=True)
    for xml in (tmp_path / "monuseg" / "train" / "Annotations").iterdir():
        xml.unlink()
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("monuseg", tmp_path)
    message = one_line_error(err)
    assert "2 images but no .xml annotations" in message and str(tmp_path / "monuseg" / "train") in message


def test_split_without_images(tmp_path: Path) -> None:
    make_consep(tmp_path)
    for png in (tmp_path / "consep" / "Test" / "Images").iterdir():
        png.unlink()
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("consep", tmp_path)
    assert f"no images in {tmp_path / 'consep' / 'Test'}" in one_line_error(err)


def test_unmatched_images_and_annotations_are_named(tmp_path: Path) -> None:
    make_monuseg(tmp_path, official_train_layout=False)
    train = tmp_path / "monuseg" / "train"
    (train / "TCGA-A1.xml").rename(train / "TCGA-ZZ.xml")
    for i in range(7):
        tifffile.imwrite(train / f"extra-{i}.tif", rgb_pattern(i), photometric="rgb")
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("monuseg", tmp_path)
    message = one_line_error(err)
    assert "8 images without annotation (TCGA-A1, extra-0, extra-1, extra-2, extra-3, ... 3 more)" in message
    assert "1 annotations without image (TCGA-ZZ)" in message


@pytest.mark.parametrize("content, problem", [
    ("<Annotations><Annotation><Regions><Region", "unclosed token: line 1"),
    ("<Root/>", "root element is <Root>"),
    (monuseg_xml([[(1, 1), (2, 1), (2, 2)]]).replace('Y="2"', 'Y="two"'), "without numeric X and Y"),
    (monuseg_xml([[(1, 1), (2, 1), (2, 2)]]).replace(' Y="1"', "", 1), "without numeric X and Y"),
], ids=["truncated", "other-xml", "non-numeric", "missing-attribute"])
def test_corrupt_monuseg_annotation_names_the_file(tmp_path: Path, content: str, problem: str) -> None:
    make_monuseg(tmp_path, official_train_layout=False)
    xml = tmp_path / "monuseg" / "train" / "TCGA-B2.xml"
    xml.write_text(content)
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("monuseg", tmp_path)
    message = one_line_error(err)
    assert f"corrupt MoNuSeg annotation {xml}" in message and problem in message


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    make_monuseg(tmp_path, official_train_layout=False)
    tif = tmp_path / "monuseg" / "test" / "TCGA-T1.tif"
    tif.write_bytes(b"II*\x00garbage")
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("monuseg", tmp_path)
    assert f"unreadable image {tif}" in one_line_error(err)


def test_greyscale_image_is_refused_with_its_shape(tmp_path: Path) -> None:
    make_monuseg(tmp_path, official_train_layout=False)
    tif = tmp_path / "monuseg" / "test" / "TCGA-T1.tif"
    tifffile.imwrite(tif, np.zeros((H, W), dtype=np.uint8))
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("monuseg", tmp_path)
    assert f"image {tif} has shape ({H}, {W}); expected RGB" in one_line_error(err)


@pytest.mark.parametrize("contents, problem", [
    ({"type_map": np.ones((H, W))}, "no variable inst_map"),
    ({"inst_map": np.ones((H, W + 1))}, f"inst_map has shape ({H}, {W + 1}), its image {H}x{W}"),
    (None, "corrupt CoNSeP label"),
], ids=["no-inst-map", "shape-mismatch", "not-a-mat-file"])
def test_corrupt_consep_label_names_the_file(tmp_path: Path, contents: dict | None, problem: str) -> None:
    make_consep(tmp_path)
    mat = tmp_path / "consep" / "Train" / "Labels" / "train_2.mat"
    if contents is None:
        mat.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    else:
        scipy.io.savemat(mat, contents)
    with pytest.raises(DataMissingError) as err:
        load_seg_dataset("consep", tmp_path)
    message = one_line_error(err)
    assert f"corrupt CoNSeP label {mat}" in message and problem in message


def test_unknown_dataset_lists_the_allowed_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_seg_dataset("kumar", tmp_path)
    message = one_line_error(err)
    assert "'kumar'" in message and "synthetic_nuclei, monuseg, consep" in message


# --------------------------------------------------------------------------------------------------------------
# Synthetic nuclei


def best_threshold_dice(images: list[SegImage]) -> float:
    """Mean Dice of the best single grey threshold (pixel < t) over all the images: the baseline's ceiling."""
    grey = np.stack([img.image.mean(0).numpy() for img in images])
    truth = np.stack([img.mask.numpy() for img in images])
    best = 0.0
    for t in np.linspace(0, 1, 101):
        pred = grey < t
        overlap = (pred & truth).sum(axis=(1, 2))
        best = max(best, float(np.mean(2 * overlap / (pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))))))
    return best


def test_synthetic_nuclei_are_deterministic_per_seed() -> None:
    a, b = make_synthetic_nuclei(3, 96, seed=7), make_synthetic_nuclei(3, 96, seed=7)
    for x, y in zip(a, b):
        assert x.name == y.name and torch.equal(x.image, y.image) and torch.equal(x.mask, y.mask)
    # A longer list starts with the same tiles; another seed gives other tiles.
    longer = make_synthetic_nuclei(5, 96, seed=7)
    assert all(torch.equal(x.image, y.image) for x, y in zip(a, longer[:3]))
    other = make_synthetic_nuclei(3, 96, seed=8)
    assert not any(torch.equal(x.image, y.image) or torch.equal(x.mask, y.mask) for x, y in zip(a, other))
    assert len({img.name for img in longer}) == 5


def test_synthetic_nuclei_neither_use_nor_advance_the_global_rngs() -> None:
    np_saved, torch_saved = np.random.get_state(), torch.get_rng_state()
    try:
        np.random.seed(1)
        torch.manual_seed(1)
        first = make_synthetic_nuclei(1, 64, seed=3)[0]
        np.random.seed(2)
        torch.manual_seed(2)
        np_before, torch_before = np.random.get_state()[1].copy(), torch.get_rng_state()
        assert torch.equal(make_synthetic_nuclei(1, 64, seed=3)[0].image, first.image)
        assert np.array_equal(np.random.get_state()[1], np_before)
        assert torch.equal(torch.get_rng_state(), torch_before)
    finally:
        np.random.set_state(np_saved)
        torch.set_rng_state(torch_saved)


def test_synthetic_nuclei_look_like_stained_nuclei() -> None:
    tiles = make_synthetic_nuclei(8, 320, seed=11)
    for tile in tiles:
        assert tile.image.shape == (3, 320, 320) and tile.image.dtype == torch.float32
        assert tile.image.is_contiguous()
        assert tile.mask.shape == (320, 320) and tile.mask.dtype == torch.bool
        assert 0.0 <= float(tile.image.min()) and float(tile.image.max()) <= 1.0
        assert 0.03 < float(tile.mask.float().mean()) < 0.35  # nuclei cover part of the tile, not all of it
        grey = tile.image.mean(0)
        assert float(grey[tile.mask].mean()) < float(grey[~tile.mask].mean()) - 0.1  # darker on average
        # Haematoxylin is blue-purple, eosin pink: blue over red is higher inside nuclei.
        ratio = tile.image[2] / tile.image[0].clamp_min(1e-3)
        assert float(ratio[tile.mask].mean()) > float(ratio[~tile.mask].mean())
    # Nucleus sizes: connected blobs from a few px to ~20 px radius, not single pixels nor the whole tile.
    from skimage.measure import label, regionprops

    areas = np.array([r.area for t in tiles for r in regionprops(label(t.mask.numpy()))])
    assert np.median(areas) > np.pi * 5 ** 2 and areas.max() < 6 * np.pi * 20 ** 2
    # A single global grey threshold is imperfect, even chosen with the labels.
    assert 0.5 < best_threshold_dice(tiles) < 0.85


def test_synthetic_tile_size_is_the_field_of_view() -> None:
    """Same magnification at every size: nuclei keep their size, a larger tile holds more of them."""
    from skimage.measure import label

    small, large = make_synthetic_nuclei(4, 96, seed=5), make_synthetic_nuclei(2, 640, seed=5)
    assert small[0].image.shape == (3, 96, 96) and large[0].image.shape == (3, 640, 640)
    assert all(t.mask.any() for t in small)
    blobs_small = np.mean([label(t.mask.numpy()).max() for t in small])
    blobs_large = np.mean([label(t.mask.numpy()).max() for t in large])
    assert blobs_large > 10 * blobs_small
    coverage = [float(t.mask.float().mean()) for t in small + large]
    assert all(0.01 < c < 0.4 for c in coverage)


def test_embedded_dataset_is_fixed_and_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    data = load_seg_dataset("synthetic_nuclei", tmp_path / "nowhere")
    seconds = time.perf_counter() - start
    assert data.name == "synthetic_nuclei" and data.source == "embedded"
    assert len(data.train) == 24 and len(data.test) == 8
    assert all(img.image.shape == (3, 320, 320) for img in data.train + data.test)
    assert torch.equal(data.train[5].image, make_synthetic_nuclei(6, 320, seed=1000)[5].image)
    assert torch.equal(data.test[0].mask, make_synthetic_nuclei(1, 320, seed=2000)[0].mask)
    assert not {img.name for img in data.train} & {img.name for img in data.test}
    # Well under 2 s on an idle core; the bound leaves room for a loaded test machine, not for per-pixel loops.
    assert seconds < 8, f"32 synthetic tiles took {seconds:.1f} s"


# --------------------------------------------------------------------------------------------------------------
# Train/validation split


def named_images(n: int) -> list[SegImage]:
    return [SegImage(name=f"img{i}", image=torch.zeros(3, 4, 4), mask=torch.zeros(4, 4, dtype=torch.bool))
            for i in range(n)]


def test_split_is_deterministic_disjoint_and_covering() -> None:
    images = named_images(10)
    train, val = split_train_val(images, 0.2, seed=3)
    assert len(train) == 8 and len(val) == 2
    names = [img.name for img in train + val]
    assert sorted(names) == sorted(img.name for img in images) and len(set(names)) == 10
    assert [img.name for img in train] == [img.name for img in images if img in train]  # input order kept
    again_train, again_val = split_train_val(images, 0.2, seed=3)
    assert [i.name for i in again_val] == [i.name for i in val] and [i.name for i in again_train] == [
        i.name for i in train]
    held_out = {tuple(img.name for img in split_train_val(images, 0.2, seed=s)[1]) for s in range(10)}
    assert len(held_out) > 1  # the seed matters


@pytest.mark.parametrize("n, fraction, n_val", [(10, 0.01, 1), (10, 0.99, 9), (2, 0.5, 1), (37, 0.2, 7)])
def test_split_keeps_at_least_one_image_on_each_side(n: int, fraction: float, n_val: int) -> None:
    train, val = split_train_val(named_images(n), fraction, seed=0)
    assert len(val) == n_val and len(train) == n - n_val


@pytest.mark.parametrize("n, fraction, problem", [(1, 0.2, "at least 2 training images"), (5, 0.0, "0 < val"),
                                                  (5, 1.0, "0 < val")])
def test_split_that_is_impossible_is_a_config_error(n: int, fraction: float, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        split_train_val(named_images(n), fraction, seed=0)
    assert problem in one_line_error(err)


# --------------------------------------------------------------------------------------------------------------
# Random crops


def coordinate_image(name: str, height: int, width: int) -> SegImage:
    """Channel 0 holds the row, channel 1 the column (scaled into [0, 1]); the mask is a fixed pattern."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width) / 1000
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width) / 1000
    image = torch.stack([rows, cols, torch.zeros(height, width)])
    mask = (torch.arange(height)[:, None] * 7 + torch.arange(width)[None, :] * 3) % 5 == 0
    return SegImage(name=name, image=image, mask=mask)


def crop_offsets(crops: torch.Tensor) -> list[tuple[int, int]]:
    return [(round(float(c[0, 0, 0]) * 1000), round(float(c[1, 0, 0]) * 1000)) for c in crops]


def test_crops_are_windows_of_the_images_inside_their_bounds() -> None:
    images = [coordinate_image("a", 20, 30), coordinate_image("b", 25, 25), coordinate_image("c", 12, 40)]
    crops, masks = random_crops(images, 10, torch.Generator().manual_seed(0))
    assert crops.shape == (3, 3, 10, 10) and crops.dtype == torch.float32
    assert masks.shape == (3, 10, 10) and masks.dtype == torch.bool
    for img, crop, mask, (top, left) in zip(images, crops, masks, crop_offsets(crops)):
        height, width = img.mask.shape
        assert 0 <= top <= height - 10 and 0 <= left <= width - 10
        assert torch.equal(crop, img.image[:, top:top + 10, left:left + 10])
        assert torch.equal(mask, img.mask[top:top + 10, left:left + 10])


def test_crops_depend_only_on_the_generator() -> None:
    images = [coordinate_image(f"i{k}", 40, 50) for k in range(6)]
    torch.manual_seed(123)
    first = random_crops(images, 16, torch.Generator().manual_seed(5))
    torch.manual_seed(456)  # the global RNG must not matter
    second = random_crops(images, 16, torch.Generator().manual_seed(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    other = random_crops(images, 16, torch.Generator().manual_seed(6))
    assert crop_offsets(other[0]) != crop_offsets(first[0])


def test_crops_reach_every_offset_and_the_full_image() -> None:
    image = coordinate_image("small", 6, 7)
    generator = torch.Generator().manual_seed(0)
    seen = {offset for _ in range(300) for offset in crop_offsets(random_crops([image], 4, generator)[0])}
    assert seen == {(top, left) for top in range(3) for left in range(4)}
    whole, mask = random_crops([image], 6, generator)  # as high as the image: only the column can vary
    top, left = crop_offsets(whole)[0]
    assert top == 0 and left in (0, 1)
    assert torch.equal(whole[0], image.image[:, :, left:left + 6])
    assert torch.equal(mask[0], image.mask[:, left:left + 6])


def test_crop_larger_than_an_image_is_a_config_error() -> None:
    images = [coordinate_image("big", 50, 50), coordinate_image("slide-7", 30, 60)]
    with pytest.raises(ConfigError) as err:
        random_crops(images, 40, torch.Generator().manual_seed(0))
    assert "crop_size=40 is larger than image 'slide-7' (30x60 px)" in one_line_error(err)
