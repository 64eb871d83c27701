"""The briefly trained proxy model of the model-based selectors (herding, craig, gradmatch, submod).

DeepCore's recipe: train the run's architecture on the full training set for a few epochs (``cfg.proxy``), then
select on its penultimate embedding or on per-sample gradients of the loss with respect to the last layer. Those
gradients have a closed form, so no autograd pass per sample is needed: for cross-entropy on logits
``z = W h + b`` the bias gradient is ``softmax(z) - onehot(y)`` and the weight gradient its outer product with
the embedding ``h``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sustainml_exp.families.mfc_coreset.config import MEAN_STD, MFCRunConfig
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.models import ImageClassifier, build_model

# Rows per forward pass when only inference is needed (no activations kept for a backward pass).
INFERENCE_BATCH = 1024


@dataclass
class Proxy:
    model: ImageClassifier  # in eval mode, on the selector's device
    train_acc: float  # accuracy on the full training set after training
    train_s: float

    def info(self) -> dict[str, float]:
        return {"proxy_train_acc": self.train_acc, "proxy_train_s": self.train_s}


def train_proxy(cfg: MFCRunConfig, train: TrainSet, seed: int, device: str) -> Proxy:
    """cfg.model trained with SGD (cfg.proxy.lr, the run's momentum and weight decay) for cfg.proxy.epochs.

    Deterministic for a seed on a given device: the initialisation is drawn under a forked global RNG seeded with
    ``seed`` (the run's own RNG state is left untouched) and the batch order from a seeded generator.
    """
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg.model, tuple(train.x.shape[1:]), train.n_classes, MEAN_STD[train.dataset])
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.proxy.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    order_rng = torch.Generator().manual_seed(seed)
    n = len(train.y)
    model.train()
    for _ in range(cfg.proxy.epochs):
        order = torch.randperm(n, generator=order_rng)
        for start_row in range(0, n, cfg.proxy.batch_size):
            batch = order[start_row:start_row + cfg.proxy.batch_size]
            if len(batch) < 2 and start_row > 0:
                continue  # batch norm (resnet18) cannot train on one image: skip this epoch's single leftover
            x, y = train.x[batch].to(device), train.y[batch].to(device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    model.requires_grad_(False)
    correct = 0
    with torch.no_grad():
        for rows in _batches(n):
            correct += int((model(train.x[rows].to(device)).argmax(1).cpu() == train.y[rows]).sum())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return Proxy(model=model, train_acc=correct / n, train_s=time.perf_counter() - start)


def _batches(n: int) -> list[slice]:
    return [slice(i, min(i + INFERENCE_BATCH, n)) for i in range(0, n, INFERENCE_BATCH)]


@torch.no_grad()
def embeddings(model: ImageClassifier, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features (n, feature_dim) float32 on the model's device."""
    device = next(model.parameters()).device
    return torch.cat([model.embed(x[rows].to(device)) for rows in _batches(len(x))])


@torch.no_grad()
def last_layer_gradients(model: ImageClassifier, x: torch.Tensor, y: torch.Tensor, *,
                         with_weights: bool = True) -> torch.Tensor:
    """Per-sample gradient of the cross-entropy w.r.t. the last layer, float32 on the model's device.

    (n, C) bias part ``softmax(z) - onehot(y)``; with_weights appends the weight part flattened in (class, feature)
    order, (n, C + C * feature_dim), as DeepCore's Craig, GradMatch and Submodular do.
    """
    device = next(model.parameters()).device
    parts = []
    for rows in _batches(len(x)):
        h = model.embed(x[rows].to(device))
        labels = y[rows].to(device)
        g = torch.softmax(model.classifier(h), dim=1)
        g[torch.arange(len(labels), device=device), labels] -= 1.0
        if with_weights:
            g = torch.cat([g, (g[:, :, None] * h[:, None, :]).flatten(1)], dim=1)
        parts.append(g)
    return torch.cat(parts)
