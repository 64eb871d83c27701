"""MCS: per class, the minimal finite covering of the raw pixels with at most k centres (Chen & Selvan, D3.2 §2).

Per class because the robustness bound needs every training image within eta of a centre of its own label. Each
class gets the smallest radius eta that k of its images can cover that its search finds within ``mcs.time_limit_s``
(``covering.min_radius_cover``: bisection over the pairwise distances, decided by greedy / Lagrangian-guided covers
with local search and packing / Lagrangian lower bounds, HiGHS on small classes), certified by recomputing every
image's distance to its nearest centre, with a certified gap: the class's eta is within that fraction of the
smallest possible radius for k centres.

When the cover at that eta has fewer than k centres, the class is topped up to k with farthest-first points: the
budget is k images per class for every method, and extra centres keep the cover. The cover's own size is recorded
as mcs_k_cover. Weights are covering multiplicities: the images of the class whose nearest centre each centre is.

Record fields (``info``): eta (the largest class radius: the run's certificate), mcs_eta_lower (the largest class
lower bound: no selection of k images per class reaches a radius below it), mcs_gap (the largest class gap),
mcs_class_gaps (every class's gap, in class order), mcs_status (the worst class status in ``MCS_STATUSES``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from sustainml_exp.families.mfc_coreset.config import MCS_STATUSES
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector, check_budget
from sustainml_exp.families.mfc_coreset.selection.covering import (
    assign_to_centres,
    min_radius_cover,
    pad_farthest,
    pairwise_distances,
    verify_certificate,
)

log = logging.getLogger("sustainml_exp")


class MCSSelector(Selector):
    name = "mcs"

    def select(self, train: TrainSet, k: int, seed: int) -> SelectionResult:
        check_budget(train, k)
        settings = self.cfg.mcs
        # Same draw as kcenter's: with one seed both start their class's traversal at the same image.
        rng = np.random.default_rng(seed)
        indices, weights, classes = [], [], []
        distance_s = solve_s = 0.0
        for c in range(train.n_classes):
            members = train.class_indices(c)
            first = int(rng.integers(len(members)))
            pixels = train.x[torch.as_tensor(members)].flatten(1).to(self.device)
            begin = time.perf_counter()
            dist = pairwise_distances(pixels, block=settings.distance_block)
            if dist.device.type == "cuda":
                torch.cuda.synchronize(dist.device)
            distance_s += time.perf_counter() - begin
            begin = time.perf_counter()
            cover = min_radius_cover(dist, k, first=first, solver=settings.solver,
                                     time_limit_s=settings.time_limit_s, target_gap=settings.target_gap,
                                     max_steps=settings.max_bisection_steps, block=settings.distance_block)
            solve_s += time.perf_counter() - begin
            centres = pad_farthest(dist, cover.centres, k) if cover.k < k else cover.centres
            _, multiplicities, _ = assign_to_centres(dist, centres)
            certified = verify_certificate(pixels, centres, cover.eta, points=True, block=settings.distance_block)
            if not certified:
                log.warning("mcs class %d: some image is farther than eta=%.6g from every centre", c, cover.eta)
            log.info("mcs class %d: %d images, eta=%.4f >= %.4f (k-center %.4f), %s, gap %.4f; cover %d (greedy %d, "
                     "lower bound %.0f%s), %d of %d decisions open, %.1f s", c, len(members), cover.eta,
                     cover.eta_lower, cover.kcenter_radius, cover.status, cover.gap, cover.k, cover.k_greedy,
                     cover.lower_bound, f", +{k - cover.k} farthest" if cover.k < k else "", cover.undecided,
                     cover.steps, cover.timings["total_s"])
            indices.append(members[centres])
            weights.append(multiplicities.astype(np.float64))
            classes.append((cover, certified))
            del dist

        flat = np.concatenate(indices).astype(np.int64)
        order = np.argsort(flat, kind="stable")
        covers = [cover for cover, _ in classes]
        etas = [cover.eta for cover in covers]
        info = {
            "eta": float(max(etas)),
            "eta_mean": float(np.mean(etas)),
            "mcs_eta_lower": float(max(cover.eta_lower for cover in covers)),
            "mcs_gap": float(max(cover.gap for cover in covers)),
            "mcs_class_gaps": " ".join(f"{cover.gap:.6g}" for cover in covers),
            "mcs_status": max((cover.status for cover in covers), key=MCS_STATUSES.index),
            "mcs_k_greedy": int(sum(cover.k_greedy for cover in covers)),
            "mcs_k_cover": int(sum(cover.k for cover in covers)),
            "mcs_padded": int(sum(k - cover.k for cover in covers)),
            "mcs_lower_bound": float(sum(cover.lower_bound for cover in covers)),
            "mcs_certified": all(certified for _, certified in classes),
            "mcs_time_limited_classes": int(sum(cover.time_limited for cover in covers)),
            "mcs_steps": int(sum(cover.steps for cover in covers)),
            "mcs_undecided": int(sum(cover.undecided for cover in covers)),
            "mcs_highs_decisions": int(sum(cover.decided_by.get("highs", 0) for cover in covers)),
            "mcs_distance_s": distance_s,
            "mcs_solve_s": solve_s,
        }
        return SelectionResult(indices=flat[order], weights=np.concatenate(weights)[order], info=info)
