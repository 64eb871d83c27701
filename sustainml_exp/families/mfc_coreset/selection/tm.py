"""TM: dataset condensation by matching training trajectories (Cazenavette et al., CVPR 2022, "MTT").

Experts: TM_EXPERTS ConvNets, each freshly initialised (seeded) and trained on the real data for
condense.expert_epochs epochs with MTT's expert recipe (plain SGD, lr 0.01, batches of 256, DSA augmentation), with
the parameters saved at the start and after every epoch.

Each iteration picks an expert and a start epoch t uniformly in [0, expert_epochs - expert_span], starts a student
at theta_t and takes condense.syn_steps SGD steps on minibatches of (at most TM_SYN_BATCH) DSA-augmented synthetic
images with a learnable step size (initial value 0.01, the experts' rate). The loss is
||theta_student - theta_{t+span}||^2 / ||theta_t - theta_{t+span}||^2, back-propagated through the unrolled steps
(torch.func.functional_call); SGD with momentum 0.5 updates the images and the step size (learning rate TM_LR_LR).

Image learning rate: MTT uses 100 to 10,000 on its inputs (ZCA-whitened on CIFAR). We optimise mean/std-normalised
coordinates (see condensation.py) with TM_LR_IMG = 1,000 and the step size's rate TM_LR_LR = 1e-7 (MTT's CIFAR-10
single-image value; 1e-5 drove the step size below zero within a few iterations on the digits). Measured first
image steps at lr 1,000 (k = 10, ten student steps): about 0.05 (1 x 28 x 28) and 0.02 (3 x 32 x 32) normalised
units rms. On the 8 x 8 digits the ConvNet's last instance norm acts on 2 x 2 maps and the gradients are ~1e5 times
larger: images saturate at once there, so the digits run only exercises the code. Our guard, not MTT's: the step
size is kept >= TM_MIN_SYN_LR (a negative one would turn the student's descent into ascent).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sustainml_exp.families.mfc_coreset.config import MFCRunConfig
from sustainml_exp.families.mfc_coreset.selection.condensation import (
    CondensationSelector,
    CondenseRun,
    siamese_augment,
)

TM_EXPERTS = 2
TM_LR_TEACHER = 0.01  # the experts' SGD rate and the student's initial step size
TM_EXPERT_BATCH = 256
TM_SYN_BATCH = 256
TM_LR_IMG = 1000.0
TM_LR_LR = 1e-7
TM_MIN_SYN_LR = 1e-6
TM_MOMENTUM = 0.5

Trajectory = list[dict[str, torch.Tensor]]


class ShuffledRows:
    """Minibatches of row indices walking through shuffled passes, reshuffling when a pass is used up (MTT)."""

    def __init__(self, n: int, batch: int, generator: torch.Generator) -> None:
        self.n, self.batch, self.generator = n, batch, generator
        self.pending = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        if len(self.pending) < self.batch:
            self.pending = torch.cat([self.pending, torch.randperm(self.n, generator=self.generator)])
        rows, self.pending = self.pending[:self.batch], self.pending[self.batch:]
        return rows


def unroll_student(net: nn.Module, start: dict[str, torch.Tensor], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   lr: torch.Tensor | float) -> dict[str, torch.Tensor]:
    """Parameters after one SGD step of step size lr per (images, labels) batch from ``start``, differentiable
    with respect to the images and lr (the graph of every step is kept)."""
    params = {name: value.detach().clone().requires_grad_(True) for name, value in start.items()}
    for images, labels in batches:
        loss = F.cross_entropy(functional_call(net, params, (images,)), labels)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {name: value - lr * grad for (name, value), grad in zip(params.items(), grads)}
    return params


def normalised_distance(student: dict[str, torch.Tensor], start: dict[str, torch.Tensor],
                        target: dict[str, torch.Tensor]) -> torch.Tensor:
    """MTT's loss: ||student - target||^2 / ||start - target||^2 over all parameters."""
    reached = sum(((student[name] - target[name]) ** 2).sum() for name in student)
    travelled = sum(((start[name] - target[name]) ** 2).sum() for name in student)
    return reached / travelled.clamp_min(1e-12)


class TMSelector(CondensationSelector):
    """After ``select`` (when it condensed) ``experts`` holds the expert trajectories it matched."""

    name = "tm"

    def __init__(self, cfg: MFCRunConfig, device: str = "cpu") -> None:
        super().__init__(cfg, device)
        self.experts: list[Trajectory] = []

    def condense(self, run: CondenseRun) -> dict[str, Any]:
        condense = self.cfg.condense
        experts = [self._train_expert(run, condense.expert_epochs) for _ in range(TM_EXPERTS)]
        net = run.fresh_net()  # only its structure and buffers are used: parameters come from the trajectories
        syn_lr = torch.tensor(TM_LR_TEACHER, device=run.z.device, requires_grad=True)
        optimizer_img = torch.optim.SGD([run.z], lr=TM_LR_IMG, momentum=TM_MOMENTUM)
        optimizer_lr = torch.optim.SGD([syn_lr], lr=TM_LR_LR, momentum=TM_MOMENTUM)
        rows = ShuffledRows(len(run.z), min(len(run.z), TM_SYN_BATCH), run.generator)
        self.experts = experts
        for _ in range(run.iterations):
            trajectory = experts[int(torch.randint(len(experts), (1,), generator=run.generator))]
            start_epoch = int(torch.randint(condense.expert_epochs - condense.expert_span + 1, (1,),
                                            generator=run.generator))
            start, target = trajectory[start_epoch], trajectory[start_epoch + condense.expert_span]
            batches = (self._synthetic_batch(run, rows.next()) for _ in range(condense.syn_steps))
            student = unroll_student(net, start, batches, syn_lr)
            loss = normalised_distance(student, start, target)
            optimizer_img.zero_grad(set_to_none=True)
            optimizer_lr.zero_grad(set_to_none=True)
            loss.backward(inputs=[run.z, syn_lr])
            optimizer_img.step()
            optimizer_lr.step()
            run.box.project_(run.z)
            with torch.no_grad():
                syn_lr.clamp_(min=TM_MIN_SYN_LR)
            self.loss_history.append(float(loss.detach()))
        return {"condense_experts": TM_EXPERTS, "condense_expert_epochs": condense.expert_epochs,
                "condense_expert_span": condense.expert_span, "condense_syn_steps": condense.syn_steps,
                "condense_lr_img": TM_LR_IMG, "condense_syn_lr": float(syn_lr.detach()), "condense_dsa": True}

    @staticmethod
    def _synthetic_batch(run: CondenseRun, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthetic pixels of ``rows`` through one DSA transform, with their labels."""
        rows = rows.to(run.z.device)
        op, seed = run.draw_augmentation()
        return run.box.to_pixels(siamese_augment(run.z[rows], op, seed)), run.labels[rows]

    @staticmethod
    def _train_expert(run: CondenseRun, epochs: int) -> Trajectory:
        """Parameters of a freshly initialised ConvNet before and after each epoch of SGD on the real data."""
        net = run.fresh_net()
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=TM_LR_TEACHER)

        def snapshot() -> dict[str, torch.Tensor]:
            return {name: p.detach().clone() for name, p in net.named_parameters()}

        trajectory = [snapshot()]
        for _ in range(epochs):
            order = torch.randperm(len(run.x), generator=run.generator).to(run.x.device)
            for first in range(0, len(order), TM_EXPERT_BATCH):
                rows = order[first:first + TM_EXPERT_BATCH]
                op, seed = run.draw_augmentation()
                images = run.box.to_pixels(siamese_augment(run.box.to_z(run.x[rows]), op, seed))
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(images), run.y[rows]).backward()
                optimizer.step()
            trajectory.append(snapshot())
        return trajectory
