"""The toy_family run function: one seeded fit, returning the metrics every run records and its own."""

from __future__ import annotations

import time
from typing import Any

import torch

from sustainml_exp.family import RunContext
from sustainml_exp.peak_memory import PeakMemory
from toy_family.config import ToyRunConfig


def run(cfg: ToyRunConfig, ctx: RunContext) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(cfg.seed)
    x = torch.rand(cfg.n_points, 1, generator=generator)
    y = 2 * x + 1 + cfg.noise * torch.randn(cfg.n_points, 1, generator=generator)
    model = torch.nn.Linear(1, 1).to(ctx.device)
    optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[cfg.method](model.parameters(), lr=cfg.lr)
    peak_memory = PeakMemory(ctx.device)
    peak_memory.reset()
    progress = ctx.make_progress(cfg.epochs, cfg.method)
    t0 = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x.to(ctx.device)), y.to(ctx.device))
            loss.backward()
            optimizer.step()
            progress.update(epoch, loss=float(loss))
    finally:
        progress.close()
    train_s = time.perf_counter() - t0
    return {
        "epochs": cfg.epochs,
        "epochs_per_s": cfg.epochs / train_s if train_s > 0 else float("nan"),
        "train_s": train_s,
        "peak_mem_mb": peak_memory.peak_mb(),
        "peak_mem_source": peak_memory.source,
        "n_params": sum(p.numel() for p in model.parameters()),
        "mse": float(loss),
        "slope": float(model.weight),
    }
