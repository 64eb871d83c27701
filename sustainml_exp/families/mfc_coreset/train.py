"""The ``mfc_coreset`` run function: compress the training set (coreset or condensation), train on it (standard or
adversarial), then report clean and robust test accuracy."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sustainml_exp.families.mfc_coreset.attacks import generalized_pgd_attack, pgd_attack
from sustainml_exp.families.mfc_coreset.config import IMAGE_SHAPES, MEAN_STD, MFCRunConfig
from sustainml_exp.families.mfc_coreset.data import ImageDataset, load_image_dataset
from sustainml_exp.families.mfc_coreset.evaluate import evaluate_robustness
from sustainml_exp.families.mfc_coreset.generalized import class_covering_radii
from sustainml_exp.families.mfc_coreset.models import ImageClassifier, build_model, n_trainable_params
from sustainml_exp.families.mfc_coreset.selection import SelectionResult, make_selector
from sustainml_exp.peak_memory import PeakMemory

log = logging.getLogger("sustainml_exp")


def loss_weights(selection: SelectionResult, cfg: MFCRunConfig, n: int) -> torch.Tensor | None:
    """Per-image loss weights with mean 1 (so lr keeps its meaning), or None for an unweighted run."""
    if not cfg.weighted:
        return None
    if selection.weights is None or len(selection.weights) != n:
        raise ValueError(f"method={cfg.method} returned no weights for its {n} images")
    weights = torch.as_tensor(np.asarray(selection.weights, dtype=np.float32))
    return weights * (n / float(weights.sum()))


def train_classifier(model: ImageClassifier, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None,
                     cfg: MFCRunConfig, eps: float, ctx, radii: torch.Tensor | None = None) -> dict[str, float]:
    """SGD for cfg.epochs on (x, y); adversarial examples from PGD in the training norm when train != standard.

    With ``radii`` (one covering radius per image: generalized=true) each image is attacked over
    B_2(radius) + B_norm(eps) instead of the eps-ball (see generalized.py)."""
    device = ctx.device
    x, y = x.to(device), y.to(device)
    weights = weights.to(device) if weights is not None else None
    radii = radii.to(device) if radii is not None else None
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Batch order and PGD random starts come from their own CPU generators: the same draws on any device.
    order_gen = torch.Generator().manual_seed(cfg.seed)
    attack_gen = torch.Generator().manual_seed(cfg.seed + 1)
    norm = {"pgd_linf": "linf", "pgd_l2": "l2"}.get(cfg.train)
    train_s = 0.0
    last_loss = float("nan")
    progress = ctx.make_progress(cfg.epochs, f"{cfg.experiment}[{cfg.method}]")
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            correct = seen = 0
            for batch in torch.randperm(len(x), generator=order_gen).split(cfg.batch_size):
                batch = batch.to(device)
                xb, yb = x[batch], y[batch]
                if norm is not None:
                    # Examples are crafted against the model in eval mode (fixed normalisation statistics), as in
                    # the robust-training baselines; the update itself runs in train mode.
                    model.eval()
                    if radii is None:
                        xb = pgd_attack(model, xb, yb, norm=norm, eps=eps, steps=cfg.train_pgd_steps,
                                        generator=attack_gen)
                    else:
                        xb = generalized_pgd_attack(model, xb, yb, norm=norm, eps=eps, eta=radii[batch],
                                                    steps=cfg.train_pgd_steps, generator=attack_gen)
                model.train()
                logits = model(xb)
                per_sample = F.cross_entropy(logits, yb, reduction="none")
                loss = (per_sample * weights[batch]).mean() if weights is not None else per_sample.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                last_loss = float(loss.detach())
                if not math.isfinite(last_loss):
                    raise FloatingPointError(f"training loss became {last_loss} at epoch {epoch}")
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            train_s += time.perf_counter() - t0
            progress.update(epoch, loss=last_loss, train_acc=correct / seen)
    finally:
        progress.close()
    return {"train_s": train_s, "train_loss": last_loss, "train_acc": correct / seen}


def _selection_artifacts(selection: SelectionResult, output_dir: Path) -> dict[str, str]:
    """The selected indices (and weights), or the condensed images, next to the run's record."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if selection.images is not None:
        path = output_dir / "condensed.pt"
        torch.save({"images": selection.images, "labels": selection.labels}, path)
        return {"condensed": str(path.resolve())}
    path = output_dir / "selection.npz"
    arrays = {"indices": selection.indices}
    if selection.weights is not None:
        arrays["weights"] = np.asarray(selection.weights)
    np.savez_compressed(path, **arrays)
    return {"selection": str(path.resolve())}


def _scalar_info(info: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in info.items() if isinstance(value, (bool, int, float, str))}


def run(cfg: MFCRunConfig, ctx) -> dict[str, Any]:
    data: ImageDataset = load_image_dataset(cfg.dataset, Path(cfg.data_dir), cfg.download)
    log.info("%s on %s: %d training, %d test images (%s)", cfg.method, cfg.dataset, len(data.train.y),
             len(data.test_y), data.source)
    peak_memory = PeakMemory(ctx.device)
    peak_memory.reset()

    t0 = time.perf_counter()
    selection = make_selector(cfg, ctx.device).select(data.train, cfg.k, cfg.seed)
    select_s = time.perf_counter() - t0
    x_sel, y_sel = selection.training_set(data.train)
    eta = float(selection.info.get("eta", float("nan")))
    log.info("%s selected %d images in %.2f s%s", cfg.method, len(y_sel), select_s,
             f" (eta={eta:.4f})" if math.isfinite(eta) else "")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, IMAGE_SHAPES[cfg.dataset], data.train.n_classes, MEAN_STD[cfg.dataset])
    model = model.to(ctx.device)
    eps_train = cfg.eps_for("linf" if cfg.train == "pgd_linf" else "l2") if cfg.train != "standard" else 0.0
    generalized: dict[str, Any] = {}
    radii = None
    if cfg.generalized:
        per_class = class_covering_radii(data.train, selection.indices)
        radii = torch.as_tensor(per_class, dtype=torch.float32)[y_sel]  # each image trains with its class's radius
        generalized = {"eta_train_max": float(per_class.max()), "eta_train_min": float(per_class.min()),
                       "eta_train_per_class": [float(r) for r in per_class]}
        log.info("generalized training: eps=%.4g (%s) + l2 covering radius per class %.4f .. %.4f", eps_train,
                 cfg.train, per_class.min(), per_class.max())
    counters = train_classifier(model, x_sel, y_sel, loss_weights(selection, cfg, len(y_sel)), cfg, eps_train, ctx,
                                radii)
    accuracies = evaluate_robustness(model, data.test_x, data.test_y, cfg, ctx.device)

    metrics: dict[str, Any] = {
        **_scalar_info(selection.info),
        **accuracies,
        "eta": eta,
        "select_s": select_s,
        "n_selected": int(len(y_sel)),
        "n_train_full": int(len(data.train.y)),
        "n_test": int(len(data.test_y)),
        "eps_train": eps_train,
        **generalized,
        "pgd_steps": cfg.attack.pgd_steps,
        "aa_steps": cfg.attack.aa_steps,
        "aa_restarts": cfg.attack.aa_restarts,
        "n_params": n_trainable_params(model),
        "epochs": cfg.epochs,
        "epochs_per_s": cfg.epochs / counters["train_s"] if counters["train_s"] > 0 else float("nan"),
        **counters,
        "peak_mem_mb": peak_memory.peak_mb(),
        "peak_mem_source": peak_memory.source,
        "data_source": data.source,
        "artifacts": _selection_artifacts(selection, ctx.output_dir),
    }
    log.info("%s k=%d train=%s std_acc=%.4f %s", cfg.method, cfg.k, cfg.train, metrics["std_acc"],
             " ".join(f"{key}={value:.4f}" for key, value in accuracies.items() if key.startswith("rob_acc_")))
    return metrics
