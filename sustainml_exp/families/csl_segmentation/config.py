"""Typed schema of ``experiment=csl_segmentation`` (imports nothing heavy: it is read at CLI start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sustainml_exp.config.schema import BaseRunConfig, check_choice, check_range
from sustainml_exp.errors import ConfigError

SEG_DATASETS = ("synthetic_nuclei", "monuseg", "consep")
SEG_METHODS = ("csl", "threshold", "supervised")
SIMILARITIES = ("mse", "ce")
POSTPROCESSING = ("paper", "open3_close1")
# Where the channel and the epoch are chosen: val_split holds val_fraction of the training images out of training
# and scores on them; train_labels is the paper's protocol (train on every training image, self-supervised, and
# score on their labels).
SELECTIONS = ("val_split", "train_labels")

# Training protocol per dataset: the defaults of the knobs that scale with the images and the training length.
# MoNuSeg and CoNSeP use the paper's. The embedded tiles are smaller and CI trains on them for 80 steps instead of
# the paper's ~1,200, so crops shrink with the tiles (patches keep about the paper's size, the grid stays 6 x 6 or
# so) and the learning rate is raised to get there in 40 epochs. Any knob set on the command line wins.
PROTOCOLS: dict[str, dict[str, float]] = {
    "monuseg": {"epochs": 300, "crop_size": 300, "patch_size": 50, "grid_stride": 20, "lr": 2e-4},
    "consep": {"epochs": 300, "crop_size": 300, "patch_size": 50, "grid_stride": 20, "lr": 2e-4},
    "synthetic_nuclei": {"epochs": 40, "crop_size": 128, "patch_size": 48, "grid_stride": 16, "lr": 1e-3},
}


def protocol_value(dataset: str, key: str) -> float:
    """``${csl_protocol:${dataset},<key>}`` in conf/experiment/csl_segmentation.yaml."""
    # An unknown dataset gets the paper's values here; validate() then reports the name with the allowed ones.
    return PROTOCOLS.get(dataset, PROTOCOLS["monuseg"])[key]


@dataclass
class CSLRunConfig(BaseRunConfig):
    experiment: str = "csl_segmentation"
    dataset: str = "synthetic_nuclei"
    epochs: int = 300
    # csl: the self-supervised confidence network; threshold / supervised: the baselines of Table 3.
    method: str = "csl"
    similarity: str = "mse"
    n_classes: int = 4  # K, confidence maps of the network
    n_patches: int = 10  # patches drawn per image and class
    patch_size: int = 50  # P
    grid_stride: int = 20  # stride of the candidate-patch grid
    crop_size: int = 300  # random square training crops
    batch_size: int = 10
    lr: float = 2e-4
    weight_decay: float = 1e-4
    # Morphology after thresholding (evaluate.POSTPROCESS_STEPS): paper = opening and closing at radius 3, then at
    # radius 1, as the reference code evaluates; open3_close1 = one opening r=3 and one closing r=1.
    postprocess: str = "paper"
    threshold: float = 0.5
    # How the channel and the epoch are chosen (SELECTIONS); the reference code chooses on the test set.
    selection: str = "val_split"
    # Training images held out (never trained on) to choose the channel and the epoch, with selection=val_split.
    val_fraction: float = 0.2
    eval_every: int = 10  # epochs between validation evaluations (the last epoch is always evaluated)
    overlay_images: int = 3  # test images whose prediction is kept for the Figure 7-style overlay

    def record_fields(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "similarity": self.similarity,
            "n_patches": self.n_patches,
            "patch_size": self.patch_size,
            "grid_stride": self.grid_stride,
            "crop_size": self.crop_size,
            "n_classes": self.n_classes,
            "batch_size": self.batch_size,
            "postprocess": self.postprocess,
            "selection": self.selection,
        }

    def validate(self) -> None:
        super().validate()
        check_choice("dataset", self.dataset, SEG_DATASETS)
        check_choice("method", self.method, SEG_METHODS)
        check_choice("similarity", self.similarity, SIMILARITIES)
        check_choice("postprocess", self.postprocess, POSTPROCESSING)
        check_choice("selection", self.selection, SELECTIONS)
        check_range("n_classes", self.n_classes, lo=2)
        check_range("n_patches", self.n_patches, lo=1)
        check_range("patch_size", self.patch_size, lo=1)
        check_range("grid_stride", self.grid_stride, lo=1)
        check_range("crop_size", self.crop_size, lo=1)
        if self.patch_size > self.crop_size:
            raise ConfigError(f"patch_size={self.patch_size} is larger than crop_size={self.crop_size}; "
                              f"allowed: patch_size <= crop_size")
        check_range("batch_size", self.batch_size, lo=1)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_range("threshold", self.threshold, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        check_range("val_fraction", self.val_fraction, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        check_range("eval_every", self.eval_every, lo=1)
        check_range("overlay_images", self.overlay_images, lo=0)
