"""What the condensation methods (DM, GM, TM) share: coordinates, initialisation, augmentation, precomputed sets.

Coordinates. Synthetic images are optimised in the dataset's mean/std-normalised coordinates z = (x - mean) / std,
the coordinates the published DM, DC and MTT code optimise in, so that their image learning rates carry over. After
every step z is projected onto the box that maps back to pixels in [0, 1] (the published code does not clamp; we do
so that the attacks later work on valid images). The networks take pixels and normalise inside, so they are fed
``box.to_pixels(z)``. Results are pixels in [0, 1], float32 on the CPU, class-major (k images of class 0, then 1, ...).

Augmentation. DM and MTT train with differentiable Siamese augmentation (DSA, Zhao & Bilen 2021): one transform
family per call (colour, crop, cutout, flip, scale or rotate) with per-image parameters, the same parameters for
the real and the synthetic batch of a class. ``siamese_augment`` is our implementation with DSA's strengths; it
works in normalised coordinates like DSA (crop, rotate and cutout fill with 0 there, i.e. the mean colour). Flips
are left out on the digit datasets (a mirrored digit is another glyph or none): our choice.

Whitening. Where MTT's protocol uses ZCA (CIFAR-100), TM optimises ZCA-whitened images and its networks see
whitened images, as in MTT; ``ZCAWhitening`` maps them back so that the result is pixels like every other method's.

Precomputed sets. ``load_condensed_file`` reads a .pt / .pth (torch.load with weights_only=True: a dict with
"images" and "labels", a DC result file {"data": [[images, labels], ...]} whose first entry is used, or an
(images, labels) pair) or an .npz (arrays "images" and "labels"). Images must be NCHW with the dataset's shape.
file_format=pixels expects values in [0, 1]; meanstd turns mean/std-normalised images (DC / DM / MTT without ZCA)
back into pixels and clamps. ZCA-whitened sets (MTT's --zca) cannot be inverted without their whitening matrix:
convert them to pixels before loading.
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import IMAGE_SHAPES, MEAN_STD, N_CLASSES, MFCRunConfig
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.models import ImageClassifier, build_model
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget

# Values this far outside [0, 1] are taken as rounding of a pixel-space file and clamped silently.
PIXEL_TOLERANCE = 1e-3
# Rows per forward pass when embedding many real images without gradients.
EMBED_CHUNK = 2048

# DSA's transform families and strengths (its ParamDiffAug defaults).
DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DSA_BRIGHTNESS = 1.0
DSA_SATURATION = 2.0
DSA_CONTRAST = 0.5
DSA_CROP = 0.125  # largest shift, as a fraction of the side
DSA_CUTOUT = 0.5  # side of the erased square, as a fraction of the side
DSA_SCALE = 1.2  # scale factors in [1 / 1.2, 1.2] per axis
DSA_ROTATE_DEG = 15.0
NO_FLIP_DATASETS = ("digits", "mnist")


class NormalisedBox:
    """Mean/std-normalised coordinates of one dataset and the box in them that maps to pixels in [0, 1]."""

    def __init__(self, dataset: str, device: str | torch.device) -> None:
        mean, std = MEAN_STD[dataset]
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.lo = -self.mean / self.std
        self.hi = (1.0 - self.mean) / self.std

    def to_z(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def to_pixels(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    @torch.no_grad()
    def project_(self, z: torch.Tensor) -> None:
        z.clamp_(self.lo, self.hi)


# kornia.enhance.ZCAWhitening's regulariser as MTT sets it (ZCAWhitening(eps=0.1, compute_inv=True)).
ZCA_EPS = 0.1
# Rows per block when accumulating the covariance or whitening many images.
ZCA_CHUNK = 4096


class ZCAWhitening:
    """ZCA whitening of normalised images, fitted as MTT fits kornia's ZCAWhitening on the training set: the mean
    and unbiased covariance of the flattened images, transform T = U diag((S + eps)^-1/2) U^T from the covariance's
    eigendecomposition, whitened w = (z - mean) T, and the exact inverse z = w U diag((S + eps)^1/2) U^T + mean.
    Written with torch.linalg (kornia is not a dependency); accumulated in float64 in chunks of rows."""

    def __init__(self, z: torch.Tensor, eps: float = ZCA_EPS) -> None:
        flat = z.flatten(1)
        self.mean = flat.double().mean(0)
        cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64, device=flat.device)
        for start in range(0, len(flat), ZCA_CHUNK):
            centred = flat[start:start + ZCA_CHUNK].double() - self.mean
            cov += centred.T @ centred
        cov /= max(len(flat) - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        eigenvalues = eigenvalues.clamp_min(0.0) + eps
        self.forward_matrix = ((eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T).float()
        self.inverse_matrix = ((eigenvectors * eigenvalues.sqrt()) @ eigenvectors.T).float()
        self.mean = self.mean.float()

    def _apply(self, x: torch.Tensor, matrix: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        out = torch.cat([(flat[i:i + ZCA_CHUNK] - before) @ matrix + after for i in range(0, len(flat), ZCA_CHUNK)])
        return out.view_as(x)

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        return self._apply(z, self.forward_matrix, self.mean, torch.zeros_like(self.mean))

    def unwhiten(self, w: torch.Tensor) -> torch.Tensor:
        return self._apply(w, self.inverse_matrix, torch.zeros_like(self.mean), self.mean)


@dataclass
class CondenseRun:
    """State of one condensation: the real data on the device and the synthetic images being optimised."""

    x: torch.Tensor  # real training pixels on the device
    y: torch.Tensor  # their labels, on the device
    class_rows: list[torch.Tensor]  # per class, its rows of x (on the device)
    n_classes: int
    k: int
    iterations: int
    dataset: str
    device: str
    generator: torch.Generator  # CPU generator: every random draw of the run comes from it or the seeded global RNG
    box: NormalisedBox
    z: torch.Tensor  # (k * n_classes, C, H, W) synthetic images in normalised coordinates, a leaf with grad
    labels: torch.Tensor  # (k * n_classes,) class-major, on the device

    def real_batch(self, c: int, n: int) -> torch.Tensor:
        """n distinct random real images of class c (all of them when the class is smaller), as pixels."""
        rows = self.class_rows[c]
        pick = torch.randperm(len(rows), generator=self.generator)[:n].to(rows.device)
        return self.x[rows[pick]]

    def syn_slice(self, c: int) -> slice:
        return slice(c * self.k, (c + 1) * self.k)

    def fresh_net(self) -> ImageClassifier:
        """A randomly initialised ConvNet (drawn from the global RNG, which ``select`` seeds)."""
        net = build_model("convnet", IMAGE_SHAPES[self.dataset], self.n_classes, MEAN_STD[self.dataset])
        return net.to(self.device)

    def draw_augmentation(self) -> tuple[str, int]:
        """A DSA transform family and a parameter seed, to pass to ``siamese_augment``."""
        ops = augment_ops(self.dataset)
        op = ops[int(torch.randint(len(ops), (1,), generator=self.generator))]
        return op, int(torch.randint(2 ** 62, (1,), generator=self.generator))


def augment_ops(dataset: str) -> tuple[str, ...]:
    return tuple(op for op in DSA_OPS if not (op == "flip" and dataset in NO_FLIP_DATASETS))


def siamese_augment(z: torch.Tensor, op: str, seed: int) -> torch.Tensor:
    """DSA transform ``op`` of normalised images z with per-image parameters drawn from ``seed``.

    Calls with the same (op, seed) give image i of both batches the same parameters (the Siamese pairing);
    the output is differentiable with respect to z.
    """
    n, _, h, w = z.shape
    draws = iter(range(8))

    def generator() -> torch.Generator:
        # One generator per parameter, as DSA reseeds before every draw: image i gets the same values whatever n.
        return torch.Generator().manual_seed(seed + next(draws))

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=generator())

    def integers(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (n,), generator=generator())

    if op == "color":
        z = z + (uniform(1, 1, 1).to(z.device) - 0.5) * DSA_BRIGHTNESS
        grey = z.mean(dim=1, keepdim=True)
        z = (z - grey) * (uniform(1, 1, 1).to(z.device) * DSA_SATURATION) + grey
        level = z.mean(dim=(1, 2, 3), keepdim=True)
        return (z - level) * (uniform(1, 1, 1).to(z.device) + DSA_CONTRAST) + level
    if op == "flip":
        return torch.where(uniform(1, 1, 1).to(z.device) < 0.5, z.flip(3), z)
    if op == "cutout":
        side_h, side_w = int(h * DSA_CUTOUT + 0.5), int(w * DSA_CUTOUT + 0.5)
        centre_y = integers(0, h + (1 - side_h % 2)).view(n, 1, 1).to(z.device)
        centre_x = integers(0, w + (1 - side_w % 2)).view(n, 1, 1).to(z.device)
        rows = torch.arange(h, device=z.device).view(1, h, 1) - (centre_y - side_h // 2)
        cols = torch.arange(w, device=z.device).view(1, 1, w) - (centre_x - side_w // 2)
        erased = (rows >= 0) & (rows < side_h) & (cols >= 0) & (cols < side_w)
        return z * (~erased).unsqueeze(1).to(z.dtype)
    theta = torch.zeros(n, 2, 3)
    if op == "crop":
        # Whole-pixel shifts: with align_corners=False a shift of s pixels is 2 s / side and bilinear sampling at
        # pixel centres copies values exactly.
        reach_h, reach_w = int(h * DSA_CROP + 0.5), int(w * DSA_CROP + 0.5)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = integers(-reach_w, reach_w + 1) * 2.0 / w
        theta[:, 1, 2] = integers(-reach_h, reach_h + 1) * 2.0 / h
    elif op == "scale":
        theta[:, 0, 0] = uniform() * (DSA_SCALE - 1 / DSA_SCALE) + 1 / DSA_SCALE
        theta[:, 1, 1] = uniform() * (DSA_SCALE - 1 / DSA_SCALE) + 1 / DSA_SCALE
    elif op == "rotate":
        angle = (uniform() - 0.5) * 2 * math.radians(DSA_ROTATE_DEG)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), torch.sin(angle)
        theta[:, 1, 0], theta[:, 1, 1] = -torch.sin(angle), torch.cos(angle)
    else:
        raise ValueError(f"unknown augmentation {op!r}; known: {', '.join(DSA_OPS)}")
    grid = F.affine_grid(theta.to(z.device), list(z.shape), align_corners=False)
    return F.grid_sample(z, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def initial_pixels(train: TrainSet, k: int, init: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k starting images per class, class-major: distinct random real images of the class, or uniform noise."""
    labels = torch.arange(train.n_classes, dtype=torch.int64).repeat_interleave(k)
    if init == "noise":
        return torch.rand(k * train.n_classes, *train.x.shape[1:], generator=generator), labels
    if init != "real":
        raise ConfigError(f"condense.init={init!r} is not allowed; allowed: real, noise")
    parts = []
    for c in range(train.n_classes):
        rows = train.class_indices(c)
        parts.append(train.x[rows[torch.randperm(len(rows), generator=generator)[:k].numpy()]])
    return torch.cat(parts).float(), labels


class CondensationSelector(Selector):
    """Common driver: a precomputed file when condense.file is set, otherwise seeded condensation by ``condense``.

    After ``select`` the selector keeps ``loss_history``: the matching loss of every iteration, in order.
    """

    def __init__(self, cfg: MFCRunConfig, device: str = "cpu") -> None:
        super().__init__(cfg, device)
        self.loss_history: list[float] = []

    @abstractmethod
    def condense(self, run: CondenseRun) -> dict[str, Any]:
        """Optimise ``run.z`` in place for ``run.iterations`` iterations, filling ``loss_history``; returns the
        method's own info entries."""

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        condense = self.cfg.condense
        self.loss_history = []
        if condense.file is not None:
            images, labels, info = read_condensed_file(condense.file, train.dataset, k, condense.file_format)
            return SelectionResult(indices=np.empty(0, np.int64), images=images, labels=labels,
                                   info={"condense_source": "file", "condense_iterations": 0, **info})
        check_budget(train, k)
        # The iteration count of this method even when the config names another method (its property is per method).
        iterations = dataclasses.replace(self.cfg, method=self.name).condense_iterations
        generator = torch.Generator().manual_seed(seed)
        # Random networks come from the global CPU RNG: seed it for this run and restore it afterwards.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            pixels, labels = initial_pixels(train, k, condense.init, generator)
            box = NormalisedBox(train.dataset, self.device)
            z = box.to_z(pixels.to(self.device))
            box.project_(z)
            x = train.x.to(self.device)
            y = train.y.to(self.device)
            run = CondenseRun(x=x, y=y, class_rows=[torch.nonzero(y == c).flatten() for c in range(train.n_classes)],
                              n_classes=train.n_classes, k=k, iterations=iterations, dataset=train.dataset,
                              device=self.device, generator=generator, box=box, z=z.requires_grad_(True),
                              labels=labels.to(self.device))
            method_info = self.condense(run)
        images = box.to_pixels(run.z.detach()).clamp_(0.0, 1.0).float().cpu().contiguous()
        history = self.loss_history
        tail = history[-max(1, len(history) // 10):]
        info = {"condense_source": self.name, "condense_init": condense.init, "condense_iterations": iterations,
                "condense_loss_first": history[0] if history else float("nan"),
                # Mean over the last tenth of the iterations: each iteration draws a new network and batch.
                "condense_loss_final": float(np.mean(tail)) if tail else float("nan"), **method_info}
        return SelectionResult(indices=np.empty(0, np.int64), images=images, labels=labels.cpu(), info=info)


def embed_real_means(net: ImageClassifier, batches: list[torch.Tensor]) -> torch.Tensor:
    """Mean embedding of each batch of real pixels, without gradients, in chunks of EMBED_CHUNK rows."""
    rows = torch.cat(batches)
    owner = torch.repeat_interleave(torch.arange(len(batches), device=rows.device),
                                    torch.tensor([len(b) for b in batches], device=rows.device))
    with torch.no_grad():
        emb = torch.cat([net.embed(rows[i:i + EMBED_CHUNK]) for i in range(0, len(rows), EMBED_CHUNK)])
        sums = torch.zeros(len(batches), emb.shape[1], device=emb.device).index_add_(0, owner, emb)
        counts = torch.bincount(owner, minlength=len(batches)).to(emb.dtype).unsqueeze(1)
    return sums / counts


# ---------------------------------------------------------------------------------------------------------------
# Precomputed condensed sets


def _file_error(path: Path, what: str) -> ConfigError:
    return ConfigError(f"condense.file={path}: {what}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_arrays(path: Path) -> tuple[Any, Any, str]:
    """(images, labels, note) from a .pt / .pth / .npz file; note says which entry was used."""
    layouts = ('a dict with "images" and "labels", a DC result {"data": [[images, labels], ...]}, '
               "or an (images, labels) pair")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in ("images", "labels") if key not in archive.files]
                if missing:
                    raise _file_error(path, f"has arrays {sorted(archive.files)}, missing {missing}; allowed: an "
                                            f".npz with arrays images (N, C, H, W) and labels (N,)")
                return archive["images"], archive["labels"], "npz"
        except ConfigError:
            raise
        except Exception as error:  # a damaged or foreign file: report it in one line
            raise _file_error(path, f"cannot be read as .npz ({_first_line(error)})") from None
    if suffix not in (".pt", ".pth"):
        raise _file_error(path, f"has suffix {suffix or '(none)'!r}; allowed: .pt, .pth (torch) or .npz (numpy)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses pickled objects other than tensors and containers
        raise _file_error(path, f"cannot be read with torch.load(weights_only=True) ({_first_line(error)}); "
                                f"allowed: tensors in {layouts}") from None
    if isinstance(content, dict) and "images" in content and "labels" in content:
        return content["images"], content["labels"], "dict"
    if isinstance(content, dict) and isinstance(content.get("data"), (list, tuple)) and content["data"]:
        entry = content["data"][0]
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            return entry[0], entry[1], "data[0]"
    if isinstance(content, (list, tuple)) and len(content) == 2:
        return content[0], content[1], "pair"
    found = f"a dict with keys {sorted(map(str, content))}" if isinstance(content, dict) else type(content).__name__
    raise _file_error(path, f"holds {found}; allowed: {layouts}")


def _as_tensor(value: Any, path: Path, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise _file_error(path, f"{name} is an object array; allowed: a numeric array")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    raise _file_error(path, f"{name} is a {type(value).__name__}; allowed: a tensor or array")


def _per_class_summary(counts: np.ndarray) -> str:
    if counts.min() == counts.max():
        return f"{int(counts[0])} images per class"
    low, high = int(counts.argmin()), int(counts.argmax())
    return (f"between {counts[low]} (class {low}) and {counts[high]} (class {high}) images per class")


def read_condensed_file(path: str | Path, dataset: str, k: int,
                        file_format: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Images (k * C, C, H, W) float32 pixels in [0, 1] sorted by class, labels (k * C,) int64, and info entries."""
    path = Path(path)
    if not path.is_file():
        raise _file_error(path, "no such file; allowed: an existing .pt, .pth or .npz condensed set")
    if file_format not in ("pixels", "meanstd"):
        raise ConfigError(f"condense.file_format={file_format!r} is not allowed; allowed: pixels, meanstd")
    raw_images, raw_labels, entry = _read_arrays(path)
    images = _as_tensor(raw_images, path, "images")
    labels = _as_tensor(raw_labels, path, "labels")
    shape = IMAGE_SHAPES[dataset]
    n_classes = N_CLASSES[dataset]
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        hint = ""
        if images.ndim == 4 and tuple(images.shape[1:]) == (shape[1], shape[2], shape[0]):
            hint = " (looks like NHWC: move the channel axis to dimension 1)"
        raise _file_error(path, f"images have shape {tuple(images.shape)}{hint}; allowed: (N, {shape[0]}, {shape[1]}, "
                                f"{shape[2]}) (NCHW) for {dataset}")
    if not images.is_floating_point():
        raise _file_error(path, f"images have dtype {images.dtype}; allowed: floating point")
    if labels.ndim != 1 or len(labels) != len(images):
        raise _file_error(path, f"labels have shape {tuple(labels.shape)} for {len(images)} images; allowed: "
                                f"({len(images)},) integer class labels")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise _file_error(path, f"labels have dtype {labels.dtype}; allowed: integer class labels (hard labels)")
    labels = labels.to(torch.int64)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise _file_error(path, f"labels range from {int(labels.min())} to {int(labels.max())}; allowed: 0 .. "
                                f"{n_classes - 1} ({dataset} has {n_classes} classes)")
    counts = np.bincount(labels.numpy(), minlength=n_classes)
    if (counts != k).any():
        raise _file_error(path, f"has {_per_class_summary(counts)}; allowed: exactly k={k} images of each of the "
                                f"{n_classes} classes")
    images = images.to(torch.float32)
    if not torch.isfinite(images).all():
        raise _file_error(path, f"images have {int((~torch.isfinite(images)).sum())} NaN or infinite values; "
                                f"allowed: finite values")
    info: dict[str, Any] = {"condense_file": str(path), "condense_file_format": file_format,
                            "condense_file_entry": entry}
    if file_format == "pixels":
        low, high = float(images.min()), float(images.max())
        if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
            raise _file_error(path, f"values range from {low:.4g} to {high:.4g}, outside [0, 1] pixels; allowed: "
                                    f"pixels in [0, 1], or set condense.file_format=meanstd for a mean/std-normalised "
                                    f"set (a ZCA-whitened set cannot be inverted without its transform: convert it "
                                    f"to pixels first)")
        info["condense_clamped_fraction"] = 0.0
    else:
        mean, std = MEAN_STD[dataset]
        images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        outside = (images < -PIXEL_TOLERANCE) | (images > 1 + PIXEL_TOLERANCE)
        # A large fraction suggests a set that was not mean/std-normalised with this dataset's statistics (ZCA).
        info["condense_clamped_fraction"] = float(outside.float().mean())
    order = torch.argsort(labels, stable=True)
    return images.clamp(0.0, 1.0)[order].contiguous(), labels[order].contiguous(), info


def load_condensed_file(path: str | Path, dataset: str, k: int, file_format: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A precomputed condensed set as (images in [0, 1] pixels, labels), checked against dataset and k per class."""
    images, labels, _ = read_condensed_file(path, dataset, k, file_format)
    return images, labels
