"""DM: dataset condensation by distribution matching (Zhao & Bilen, WACV 2023).

Every iteration draws a freshly initialised ConvNet, frozen, and for each class embeds a random batch of
condense.batch_real real images and all k synthetic images of the class, both through the same DSA transform
(Siamese augmentation, as DM does). The loss is the sum over classes of the squared distance between the mean real
and the mean synthetic embedding; one SGD step on the synthetic images (learning rate condense.lr_img, 1 in DM,
momentum 0.5) follows, in normalised coordinates and projected back onto pixels in [0, 1] (see condensation.py).
"""

from __future__ import annotations

from typing import Any

import torch

from sustainml_exp.families.mfc_coreset.selection.condensation import (
    CondensationSelector,
    CondenseRun,
    embed_real_means,
    siamese_augment,
)

DM_MOMENTUM = 0.5


class DMSelector(CondensationSelector):
    name = "dm"

    def condense(self, run: CondenseRun) -> dict[str, Any]:
        optimizer = torch.optim.SGD([run.z], lr=self.cfg.condense.lr_img, momentum=DM_MOMENTUM)
        batch_real = self.cfg.condense.batch_real
        for _ in range(run.iterations):
            net = run.fresh_net()
            net.requires_grad_(False)
            real_batches, syn_batches = [], []
            for c in range(run.n_classes):
                op, seed = run.draw_augmentation()
                real_z = run.box.to_z(run.real_batch(c, batch_real))
                real_batches.append(run.box.to_pixels(siamese_augment(real_z, op, seed)))
                syn_batches.append(siamese_augment(run.z[run.syn_slice(c)], op, seed))
            real_means = embed_real_means(net, real_batches)
            # Classes are embedded together: the ConvNet's instance norm makes every image's features independent.
            syn_emb = net.embed(run.box.to_pixels(torch.cat(syn_batches)))
            syn_means = syn_emb.view(run.n_classes, run.k, -1).mean(dim=1)
            loss = ((real_means - syn_means) ** 2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.box.project_(run.z)
            self.loss_history.append(float(loss.detach()))
        return {"condense_dsa": True, "condense_lr_img": self.cfg.condense.lr_img, "condense_momentum": DM_MOMENTUM}
