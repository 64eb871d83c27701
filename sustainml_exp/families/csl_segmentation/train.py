"""The ``csl_segmentation`` run function: train (or fit) one method, choose channel and epoch on validation
images held out from training (selection=val_split) or on the training images' own labels (selection=train_labels,
the paper's protocol), then report test Dice after post-processing."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.csl_segmentation.config import CSLRunConfig
from sustainml_exp.families.csl_segmentation.contrastive import contrastive_loss, draw_patches
from sustainml_exp.families.csl_segmentation.data import SegImage, load_seg_dataset, random_crops, split_train_val
from sustainml_exp.families.csl_segmentation.evaluate import (
    dice,
    fit_intensity_threshold,
    mean_channel_dice,
    postprocess,
    threshold_predict,
)
from sustainml_exp.families.csl_segmentation.model import (
    REFERENCE_FEATURISER_PARAMS,
    ConfidenceNet,
    n_trainable_params,
    shift_input,
)
from sustainml_exp.peak_memory import PeakMemory

log = logging.getLogger("sustainml_exp")


def check_crop_fits(cfg: CSLRunConfig, images: list[SegImage]) -> None:
    smallest = min(min(img.image.shape[1:]) for img in images)
    if cfg.crop_size > smallest:
        raise ConfigError(f"crop_size={cfg.crop_size} is larger than the smallest {cfg.dataset} training image side "
                          f"({smallest} px); allowed: crop_size <= {smallest}")


@torch.no_grad()
def predict_confidence(model: ConfidenceNet, image: torch.Tensor, device: str) -> torch.Tensor:
    """(K, H, W) confidence maps of one full image, on the CPU."""
    model.eval()
    return model(shift_input(image.to(device)[None]))[0].float().cpu()


def _val_channel_dice(model: ConfidenceNet, images: list[SegImage], cfg: CSLRunConfig, device: str) -> np.ndarray:
    """(K,) Dice of every channel after threshold and post-processing, averaged over the images."""
    confs = [predict_confidence(model, img.image, device) for img in images]
    return mean_channel_dice(confs, [img.mask for img in images], cfg.threshold, cfg.postprocess)


def _predicted_mask(model: ConfidenceNet, image: torch.Tensor, channel: int, cfg: CSLRunConfig,
                    device: str) -> np.ndarray:
    conf = predict_confidence(model, image, device)[channel].numpy()
    return postprocess(conf > cfg.threshold, cfg.postprocess)


@dataclass
class Selection:
    """The (epoch, channel) with the best validation Dice and the weights at that epoch."""

    val_dice: float = -1.0
    channel: int = 0
    epoch: int = 0
    train_s: float = 0.0  # training seconds until that epoch
    state: dict[str, torch.Tensor] | None = None

    def offer(self, model: ConfidenceNet, per_channel: np.ndarray, epoch: int, train_s: float) -> None:
        channel = int(per_channel.argmax())
        if per_channel[channel] > self.val_dice:
            self.val_dice, self.channel, self.epoch, self.train_s = float(per_channel[channel]), channel, epoch, train_s
            self.state = copy.deepcopy(model.state_dict())


def _training_loss(model: ConfidenceNet, crops: torch.Tensor, masks: torch.Tensor, cfg: CSLRunConfig,
                   generator: torch.Generator) -> tuple[torch.Tensor | None, str]:
    x = shift_input(crops)
    if cfg.method == "supervised":
        logits = model.forward_logits(x)[:, 0]
        return F.binary_cross_entropy_with_logits(logits, masks.float()), ""
    conf = model(x)
    draws = draw_patches(conf.detach(), cfg.patch_size, cfg.grid_stride, cfg.n_patches, generator)
    return contrastive_loss(x, conf, draws, cfg.similarity)


def _train_network(cfg: CSLRunConfig, ctx, train: list[SegImage], val: list[SegImage]) -> tuple[ConfidenceNet,
                                                                                                 Selection, dict]:
    device = ctx.device
    n_outputs = 1 if cfg.method == "supervised" else cfg.n_classes
    model = ConfidenceNet(n_classes=n_outputs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Crops, batch order and patch draws come from their own CPU generators: a run is reproducible from its seed
    # and draws the same patches on any device.
    data_gen = torch.Generator().manual_seed(cfg.seed)
    draw_gen = torch.Generator().manual_seed(cfg.seed + 1)
    selection = Selection()
    steps = skipped = 0
    train_s = 0.0
    last_loss = float("nan")
    progress = ctx.make_progress(cfg.epochs, f"{cfg.experiment}[{cfg.method}]")
    try:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(len(train), generator=data_gen).tolist()
            for start in range(0, len(order), cfg.batch_size):
                batch = [train[i] for i in order[start:start + cfg.batch_size]]
                crops, masks = random_crops(batch, cfg.crop_size, data_gen)
                loss, reason = _training_loss(model, crops.to(device), masks.to(device), cfg, draw_gen)
                steps += 1
                if loss is None:
                    skipped += 1
                    log.debug("epoch %d: step skipped (%s)", epoch, reason)
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                last_loss = float(loss.detach())
                if not math.isfinite(last_loss):
                    raise FloatingPointError(f"training loss became {last_loss} at epoch {epoch}")
            if device == "cuda":
                torch.cuda.synchronize()
            train_s += time.perf_counter() - t0
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                per_channel = _val_channel_dice(model, val, cfg, device)
                log.info("epoch %d: validation Dice per channel %s", epoch, " ".join(f"{d:.4f}" for d in per_channel))
                selection.offer(model, per_channel, epoch, train_s)
                progress.update(epoch, loss=last_loss, val_dice=selection.val_dice, channel=selection.channel)
            else:
                progress.update(epoch, loss=last_loss)
    finally:
        progress.close()
    model.load_state_dict(selection.state)
    counters = {"steps": steps, "skipped_steps": skipped, "train_s": train_s}
    return model, selection, counters


def _overlay_artifact(path: Path, images: list[SegImage], preds: list[np.ndarray]) -> str:
    np.savez_compressed(path, images=np.stack([img.image.permute(1, 2, 0).numpy() for img in images]),
                        truth=np.stack([img.mask.numpy() for img in images]), pred=np.stack(preds),
                        names=np.array([img.name for img in images]))
    return str(path.resolve())


def run(cfg: CSLRunConfig, ctx) -> dict[str, Any]:
    data = load_seg_dataset(cfg.dataset, Path(cfg.data_dir))
    if cfg.selection == "train_labels":
        # The paper's protocol: train on every training image and choose on their own labels.
        train, val = data.train, data.train
    else:
        train, val = split_train_val(data.train, cfg.val_fraction, cfg.seed)
    check_crop_fits(cfg, train)
    peak_memory = PeakMemory(ctx.device)
    peak_memory.reset()
    log.info("%s on %s: %d train, %d validation, %d test images (%s)", cfg.method, cfg.dataset, len(train), len(val),
             len(data.test), data.source)
    metrics: dict[str, Any] = {"n_train": len(train), "n_val": len(val), "n_test": len(data.test),
                               "threshold_value": float("nan")}
    t0 = time.perf_counter()
    if cfg.method == "threshold":
        t = fit_intensity_threshold([img.image for img in train], [img.mask for img in train])
        fit_s = time.perf_counter() - t0
        val_dice = float(np.mean([dice(threshold_predict(img.image, t), img.mask.numpy()) for img in val]))
        test_preds = [threshold_predict(img.image, t) for img in data.test]
        metrics.update(threshold_value=t, val_dice=val_dice, channel=-1, best_epoch=0, epochs=0, steps=0,
                       skipped_steps=0, n_params=0, n_params_with_featuriser=0, time_to_best_s=fit_s, train_s=fit_s,
                       epochs_per_s=float("nan"))
    else:
        model, selection, counters = _train_network(cfg, ctx, train, val)
        test_preds = [_predicted_mask(model, img.image, selection.channel, cfg, ctx.device) for img in data.test]
        n_params = n_trainable_params(model)
        metrics.update(val_dice=selection.val_dice, channel=selection.channel, best_epoch=selection.epoch,
                       epochs=cfg.epochs, steps=counters["steps"], skipped_steps=counters["skipped_steps"],
                       n_params=n_params,
                       n_params_with_featuriser=n_params + REFERENCE_FEATURISER_PARAMS if cfg.method == "csl" else
                       n_params, time_to_best_s=selection.train_s, train_s=counters["train_s"],
                       epochs_per_s=cfg.epochs / counters["train_s"] if counters["train_s"] > 0 else float("nan"))
        if cfg.method == "supervised":
            metrics["n_classes"] = 1
    per_image = [dice(pred, img.mask.numpy()) for pred, img in zip(test_preds, data.test)]
    shown = data.test[:cfg.overlay_images]
    metrics.update(test_dice=float(np.mean(per_image)), test_dice_per_image=per_image,
                   peak_mem_mb=peak_memory.peak_mb(), peak_mem_source=peak_memory.source)
    if shown:
        overlay = _overlay_artifact(ctx.output_dir / "overlay.npz", shown, test_preds[:len(shown)])
        metrics["artifacts"] = {"overlay": overlay}
    log.info("%s test_dice=%.4f val_dice=%.4f channel=%d epoch=%d", cfg.method, metrics["test_dice"],
             metrics["val_dice"], metrics["channel"], metrics["best_epoch"])
    return metrics
