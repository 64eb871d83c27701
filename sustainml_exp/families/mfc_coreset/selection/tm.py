"""TM: dataset condensation by matching training trajectories (Cazenavette et al., CVPR 2022, "MTT").

The protocol (``MFCRunConfig.tm_protocol``, config.TM_PROTOCOLS) is MTT's published one on the real datasets
(100 experts, start epochs 0 .. 39, 30 / 80 / 20 student steps, ZCA on CIFAR-100, 5,000 iterations at 50 images per
class) and a short one on the embedded digits; ``condense.tm.*`` overrides any value.

Experts (MTT's buffer). Each expert is a ConvNet initialised from its own seed (BUFFER_SEED + index, independent of
the run seed: MTT trains one buffer and reuses it for every distillation) and trained on the real data with MTT's
expert recipe (plain SGD, lr 0.01, batches of 256, DSA augmentation), its parameters saved at the start and after
every epoch. MTT trains experts for ``expert_epochs`` (50) epochs but only ever matches epochs up to
max_start_epoch - 1 + expert_span; with its constant learning rate the later epochs do not change the earlier ones,
so experts train exactly that many epochs. With ``condense.tm.buffer_dir`` the trajectories are written there (one
file per expert, named by everything they depend on), reused by later runs and memory-mapped, so that a buffer of
GBs need not fit in memory; without it they stay in memory for the run.

Distillation. Iteration i matches expert i mod experts (a seeded permutation per pass, as MTT walks its buffer):
a start epoch t uniform in [0, max_start_epoch), a student at theta_t taking ``syn_steps`` SGD steps on minibatches
of ``batch_syn`` DSA-augmented synthetic images (all of them when null) with a learnable step size (initial value
``syn_lr``); the loss ||theta_student - theta_{t+span}||^2 / ||theta_t - theta_{t+span}||^2 is back-propagated
through the unrolled steps (torch.func.functional_call); SGD with momentum 0.5 updates the images (rate ``lr_img``)
and the step size (rate ``lr_lr``).

Coordinates. The networks see what MTT's see: mean/std-normalised images, ZCA-whitened where the protocol says so
(the experts' and the student's networks take them directly; their input normalisation is the identity). After
every step the images are mapped back and projected onto pixels in [0, 1] (our guard, as for every condensation
method); so is the step size onto >= TM_MIN_SYN_LR (a negative one would turn the student's descent into ascent).

On the 8 x 8 digits the ConvNet's gradients are far larger than on 28 x 28 or 32 x 32 images: the short protocol
there only exercises the code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sustainml_exp.families.mfc_coreset.config import IMAGE_SHAPES, TMProtocol
from sustainml_exp.families.mfc_coreset.models import ImageClassifier, build_model
from sustainml_exp.families.mfc_coreset.selection.condensation import (
    CondensationSelector,
    CondenseRun,
    ZCAWhitening,
    augment_ops,
    siamese_augment,
)

TM_LR_TEACHER = 0.01  # the experts' SGD rate (MTT's buffer.py lr_teacher)
TM_EXPERT_BATCH = 256  # the experts' batch (MTT's batch_train)
TM_MIN_SYN_LR = 1e-6
TM_MOMENTUM = 0.5
BUFFER_SEED = 1_000_003  # expert i is initialised and shuffled from BUFFER_SEED + i

Params = dict[str, torch.Tensor]


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


def unroll_student(net: nn.Module, start: Params, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   lr: torch.Tensor | float) -> Params:
    """Parameters after one SGD step of step size lr per (images, labels) batch from ``start``, differentiable
    with respect to the images and lr (the graph of every step is kept)."""
    params = {name: value.detach().clone().requires_grad_(True) for name, value in start.items()}
    for images, labels in batches:
        loss = F.cross_entropy(functional_call(net, params, (images,)), labels)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {name: value - lr * grad for (name, value), grad in zip(params.items(), grads)}
    return params


def normalised_distance(student: Params, start: Params, target: Params) -> torch.Tensor:
    """MTT's loss: ||student - target||^2 / ||start - target||^2 over all parameters."""
    reached = sum(((student[name] - target[name]) ** 2).sum() for name in student)
    travelled = sum(((start[name] - target[name]) ** 2).sum() for name in student)
    return reached / travelled.clamp_min(1e-12)


class Trajectories:
    """Expert trajectories as (epochs + 1, n_params) float32 rows, with the network's parameter layout."""

    def __init__(self, layout: list[tuple[str, torch.Size]], experts: list[torch.Tensor]) -> None:
        self.layout = layout
        self.experts = experts

    def __len__(self) -> int:
        return len(self.experts)

    def params(self, expert: int, epoch: int, device: torch.device | str) -> Params:
        row = self.experts[expert][epoch].to(device)
        out, offset = {}, 0
        for name, shape in self.layout:
            out[name] = row[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        return out


def _flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()]).float().cpu()


class TMSelector(CondensationSelector):
    """After ``select`` (when it condensed) ``trajectories`` holds the expert trajectories it matched."""

    name = "tm"

    def __init__(self, cfg, device: str = "cpu") -> None:
        super().__init__(cfg, device)
        self.trajectories: Trajectories | None = None

    def condense(self, run: CondenseRun) -> dict[str, Any]:
        protocol = self.cfg.tm_protocol
        zca = ZCAWhitening(run.box.to_z(run.x)) if protocol.zca else None

        def encode(z: torch.Tensor) -> torch.Tensor:
            """Normalised images -> what the networks see."""
            return zca.whiten(z) if zca is not None else z

        def decode(inputs: torch.Tensor) -> torch.Tensor:
            return zca.unwhiten(inputs) if zca is not None else inputs

        real = encode(run.box.to_z(run.x))
        epochs = protocol.max_start_epoch - 1 + protocol.expert_span
        self.trajectories = trajectories = self._buffer(run, real, protocol, epochs)
        net = self._net(run)  # structure and buffers only: parameters come from the trajectories
        syn = encode(run.z.detach()).requires_grad_(True)
        syn_lr = torch.tensor(protocol.syn_lr, device=syn.device, requires_grad=True)
        optimizer_img = torch.optim.SGD([syn], lr=protocol.lr_img, momentum=TM_MOMENTUM)
        optimizer_lr = torch.optim.SGD([syn_lr], lr=protocol.lr_lr, momentum=TM_MOMENTUM)
        batch = len(syn) if protocol.batch_syn is None else min(len(syn), protocol.batch_syn)
        rows = ShuffledRows(len(syn), batch, run.generator)
        order: list[int] = []
        for _ in range(run.iterations):
            if not order:
                order = torch.randperm(len(trajectories), generator=run.generator).tolist()
            expert = order.pop()
            start_epoch = int(torch.randint(protocol.max_start_epoch, (1,), generator=run.generator))
            start = trajectories.params(expert, start_epoch, syn.device)
            target = trajectories.params(expert, start_epoch + protocol.expert_span, syn.device)
            batches = (self._synthetic_batch(run, syn, rows.next()) for _ in range(protocol.syn_steps))
            loss = normalised_distance(unroll_student(net, start, batches, syn_lr), start, target)
            optimizer_img.zero_grad(set_to_none=True)
            optimizer_lr.zero_grad(set_to_none=True)
            loss.backward(inputs=[syn, syn_lr])
            optimizer_img.step()
            optimizer_lr.step()
            with torch.no_grad():
                z = decode(syn)
                run.box.project_(z)
                syn.copy_(encode(z))
                syn_lr.clamp_(min=TM_MIN_SYN_LR)
            self.loss_history.append(float(loss.detach()))
        with torch.no_grad():
            run.z.copy_(decode(syn))
            run.box.project_(run.z)
        return {"condense_tm_protocol": protocol.source, "condense_experts": protocol.experts,
                "condense_expert_epochs": protocol.expert_epochs, "condense_expert_epochs_trained": epochs,
                "condense_max_start_epoch": protocol.max_start_epoch, "condense_expert_span": protocol.expert_span,
                "condense_syn_steps": protocol.syn_steps, "condense_batch_syn": batch, "condense_zca": protocol.zca,
                "condense_lr_img": protocol.lr_img, "condense_lr_lr": protocol.lr_lr,
                "condense_syn_lr": float(syn_lr.detach()), "condense_dsa": True,
                "condense_buffer_dir": self.cfg.condense.tm.buffer_dir or ""}

    @staticmethod
    def _net(run: CondenseRun) -> ImageClassifier:
        """A ConvNet taking the TM coordinates directly (identity input normalisation)."""
        channels = IMAGE_SHAPES[run.dataset][0]
        net = build_model("convnet", IMAGE_SHAPES[run.dataset], run.n_classes, ((0.0,) * channels,
                                                                                  (1.0,) * channels))
        return net.to(run.device)

    @staticmethod
    def _synthetic_batch(run: CondenseRun, syn: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthetic images of ``rows`` through one DSA transform, with their labels."""
        rows = rows.to(syn.device)
        op, seed = run.draw_augmentation()
        return siamese_augment(syn[rows], op, seed), run.labels[rows]

    def _buffer(self, run: CondenseRun, real: torch.Tensor, protocol: TMProtocol, epochs: int) -> Trajectories:
        """The protocol's experts, read from condense.tm.buffer_dir where a matching file exists, else trained
        (and written there when it is set)."""
        folder = Path(self.cfg.condense.tm.buffer_dir) if self.cfg.condense.tm.buffer_dir else None
        layout = [(name, p.shape) for name, p in self._net(run).named_parameters()]
        recipe = {"dataset": run.dataset, "n_train": len(real), "shape": list(real.shape[1:]),
                  "classes": run.n_classes, "zca": protocol.zca, "epochs": epochs, "lr": TM_LR_TEACHER,
                  "batch": TM_EXPERT_BATCH, "augment": list(augment_ops(run.dataset)), "seed": BUFFER_SEED,
                  "layout": [(name, list(shape)) for name, shape in layout]}
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
        experts = []
        for index in range(protocol.experts):
            path = folder / f"tm-{run.dataset}-{key}-expert{index:03d}.pt" if folder is not None else None
            if path is not None and path.is_file():
                experts.append(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
                continue
            trajectory = self._train_expert(run, real, index, epochs)
            if path is not None:
                folder.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".partial")
                torch.save(trajectory, partial)
                partial.replace(path)  # a buffer file is whole or absent
                trajectory = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            experts.append(trajectory)
        return Trajectories(layout, experts)

    def _train_expert(self, run: CondenseRun, real: torch.Tensor, index: int, epochs: int) -> torch.Tensor:
        """(epochs + 1, n_params): a ConvNet's parameters before and after each epoch of SGD on ``real``."""
        generator = torch.Generator().manual_seed(BUFFER_SEED + index)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(BUFFER_SEED + index)
            net = self._net(run)
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=TM_LR_TEACHER)
        ops = augment_ops(run.dataset)

        def augment(images: torch.Tensor) -> torch.Tensor:
            op = ops[int(torch.randint(len(ops), (1,), generator=generator))]
            return siamese_augment(images, op, int(torch.randint(2 ** 62, (1,), generator=generator)))

        snapshots = [_flat(net)]
        for _ in range(epochs):
            order = torch.randperm(len(real), generator=generator).to(real.device)
            for first in range(0, len(order), TM_EXPERT_BATCH):
                rows = order[first:first + TM_EXPERT_BATCH]
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(augment(real[rows])), run.y[rows]).backward()
                optimizer.step()
            snapshots.append(_flat(net))
        return torch.stack(snapshots)
