"""The generalized adversarial loss over a finite covering (MCS with ``generalized=true``).

Setting. MCS picks, per class c, centres S_c such that every training image x of class c lies within l2 distance
eta_c of a centre of S_c (the covering radius of the class, pixels in [0, 1]). The attack's threat model is the
eps-ball of ``norm`` (linf or l2). Write B_2(r) for the l2 ball and B_p(eps) for the threat model's ball.

Definition used here. For a centre s of class c, its perturbation set is the Minkowski sum
Delta_s = B_2(eta_c) + B_p(eps), kept inside the pixel box. The generalized adversarial loss of a model f over the
covering is the (multiplicity-weighted with ``weighted=true``) mean over centres of max_{delta in Delta_s}
CE(f(s + delta), c).

Why. If x is covered by s (||x - s||_2 <= eta_c) and ||delta'||_p <= eps, then x + delta' = s + ((x - s) + delta')
with (x - s) + delta' in Delta_s. So every adversarial example of every covered image is one of the centre's, and
the centre's worst case bounds theirs: with covering multiplicities as weights (each image counted at its nearest
centre) the loss bounds the full training set's mean adversarial loss; unweighted, the largest centre term bounds
the largest image term. The two norms are kept apart: eta is an l2 radius (the covering's norm) and is never
turned into an linf budget, which would allow a far larger set (a pixel-wise eps + eta of 1.2 on digits covers
the whole [0, 1] box). Each class uses its own radius.

Source. The paper (Chen & Selvan, arXiv 2402.05675) defines this loss over the covering; its text was not
available to this implementation, so the definition above is derived from the covering property the paper's bound
rests on (the spec: "generalized perturbation (eta-ball plus eps-ball)"). The public code trains only plain and
multiplicity-weighted adversarial training.

The inner maximisation is ``attacks.generalized_pgd_attack``; this module gives the radii.
"""

from __future__ import annotations

import numpy as np
import torch

from sustainml_exp.families.mfc_coreset.data import TrainSet


def class_covering_radii(train: TrainSet, indices: np.ndarray) -> np.ndarray:
    """Per class, the largest l2 distance from one of its training images to the nearest selected image of the
    class: the covering radius the selected centres achieve (at most the eta the solver certified). Classes
    without a selected image get inf."""
    selected = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    radii = np.full(train.n_classes, np.inf)
    labels = train.y[selected]
    for c in range(train.n_classes):
        centres = train.x[selected[labels == c]].flatten(1).double()
        if len(centres) == 0:
            continue
        members = train.x[torch.as_tensor(train.class_indices(c))].flatten(1).double()
        radii[c] = float(torch.cdist(members, centres).min(1).values.max())
    return radii
