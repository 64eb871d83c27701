"""GM: dataset condensation by gradient matching (Zhao, Mopuri & Bilen, ICLR 2021, "DC"), without augmentation.

Every iteration draws a freshly initialised ConvNet and alternates ``outer`` image updates with ``inner`` epochs of
training the network on the current synthetic set, DC's schedule:

- image update: for each class, the gradient of the cross-entropy on a random batch of condense.batch_real real
  images and on the class's k synthetic images, with respect to the network's weights; the loss is DC's layer-wise
  distance summed over classes (per output unit: 1 - cosine between the two gradient rows; 1-D parameters, i.e.
  biases and norm scales, contribute nothing); one SGD step on the images (lr 0.1, momentum 0.5 as in DC), in
  normalised coordinates, projected back onto pixels in [0, 1] (see condensation.py);
- network update: ``inner`` epochs of plain SGD (lr 0.01, batches of 256 synthetic images) on the synthetic set.

(outer, inner) follow DC's table by images per class: 1 -> (1, 1), 10 -> (10, 50), 20 -> (20, 25), 30 -> (30, 20),
40 -> (40, 15), 50 -> (50, 10); other k take the row of the largest tabulated k not above it (our rule).
condense.iterations counts fresh networks (DC's 1,000 iterations).

Scale check: DC's image rate moves the pixels of a real-initialised set (k = 10) by about 0.006 (1 x 28 x 28) and
0.002 (3 x 32 x 32) normalised units rms per step. On the 8 x 8 digits the ConvNet's last instance norm acts on
2 x 2 maps, the gradients are ~40 times larger and one step moves pixels by ~0.23: the digits run only exercises
the code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sustainml_exp.families.mfc_coreset.selection.condensation import CondensationSelector, CondenseRun

GM_LR_IMG = 0.1
GM_MOMENTUM = 0.5
GM_LR_NET = 0.01
GM_BATCH_TRAIN = 256
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def dc_loops(k: int) -> tuple[int, int]:
    """(outer image updates, inner network epochs) per iteration for k images per class."""
    return DC_LOOPS[max(key for key in DC_LOOPS if key <= max(k, 1))]


def gradient_distance(grads_syn: list[torch.Tensor], grads_real: list[torch.Tensor]) -> torch.Tensor:
    """DC's matching distance: sum over layers and output units of 1 - cos(real row, synthetic row)."""
    total = grads_syn[0].new_zeros(())
    for g_syn, g_real in zip(grads_syn, grads_real):
        if g_syn.ndim == 1:
            continue
        rows_syn, rows_real = g_syn.reshape(g_syn.shape[0], -1), g_real.reshape(g_real.shape[0], -1)
        cosine = (rows_syn * rows_real).sum(-1) / (rows_syn.norm(dim=-1) * rows_real.norm(dim=-1) + 1e-6)
        total = total + (1.0 - cosine).sum()
    return total


def class_matching_distance(net: nn.Module, matched: list[torch.Tensor], real: torch.Tensor, label: int,
                            syn: torch.Tensor) -> torch.Tensor:
    """DC's distance between the weight gradients of the cross-entropy on real and on synthetic images of one
    class (pixels), differentiable with respect to the synthetic images."""
    real_loss = F.cross_entropy(net(real), torch.full((len(real),), label, device=real.device))
    grads_real = [g.detach() for g in torch.autograd.grad(real_loss, matched)]
    syn_loss = F.cross_entropy(net(syn), torch.full((len(syn),), label, device=syn.device))
    grads_syn = torch.autograd.grad(syn_loss, matched, create_graph=True)
    return gradient_distance(list(grads_syn), grads_real)


class GMSelector(CondensationSelector):
    name = "gm"

    def condense(self, run: CondenseRun) -> dict[str, Any]:
        optimizer_img = torch.optim.SGD([run.z], lr=GM_LR_IMG, momentum=GM_MOMENTUM)
        outer, inner = dc_loops(run.k)
        outer = self.cfg.condense.gm_outer if self.cfg.condense.gm_outer is not None else outer
        inner = self.cfg.condense.gm_inner if self.cfg.condense.gm_inner is not None else inner
        batch_real = self.cfg.condense.batch_real
        for _ in range(run.iterations):
            net = run.fresh_net()
            net.train()
            # Only weights with rows enter the distance; gradients of 1-D parameters would be computed for nothing.
            matched = [p for p in net.parameters() if p.ndim > 1]
            optimizer_net = torch.optim.SGD(net.parameters(), lr=GM_LR_NET)
            outer_losses = []
            for step in range(outer):
                loss = run.z.new_zeros(())
                for c in range(run.n_classes):
                    part = run.syn_slice(c)
                    loss = loss + class_matching_distance(net, matched, run.real_batch(c, batch_real), c,
                                                          run.box.to_pixels(run.z[part]))
                optimizer_img.zero_grad(set_to_none=True)
                loss.backward(inputs=[run.z])
                optimizer_img.step()
                run.box.project_(run.z)
                outer_losses.append(float(loss.detach()))
                if step == outer - 1:
                    break
                self._train_on_synthetic(net, optimizer_net, run, inner)
            self.loss_history.append(sum(outer_losses) / len(outer_losses))
        return {"condense_outer_loop": outer, "condense_inner_loop": inner, "condense_lr_img": GM_LR_IMG,
                "condense_momentum": GM_MOMENTUM, "condense_dsa": False}

    @staticmethod
    def _train_on_synthetic(net, optimizer, run: CondenseRun, epochs: int) -> None:
        images = run.box.to_pixels(run.z.detach())
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=run.generator).to(images.device)
            for start in range(0, len(images), GM_BATCH_TRAIN):
                rows = order[start:start + GM_BATCH_TRAIN]
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(images[rows]), run.labels[rows]).backward()
                optimizer.step()
