"""Attacks in pixel space: PGD, Auto-PGD (Croce & Hein, ICML 2020) and the AutoAttack-style worst case of APGD-CE
and APGD-DLR that the paper's Table 1 reports.

Every attack takes pixels in [0, 1] (the models normalise inside) and returns points inside the eps-ball of x (linf
or l2) intersected with [0, 1]. Input gradients come from ``torch.autograd.grad``, so parameters never receive
``.grad``, and no attack touches ``model.training``: the caller decides the mode (training PGD runs in whatever mode
the training loop uses, evaluation switches to eval first).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sustainml_exp.errors import ConfigError

NORMS = ("linf", "l2")
APGD_LOSSES = ("ce", "dlr")
# Auto-PGD's constants from the paper: momentum weight, the fraction of loss-increasing steps a checkpoint window
# needs to keep its step size, and the checkpoint schedule p_0 = 0, p_1 = 0.22,
# p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
APGD_MOMENTUM = 0.75
APGD_RHO = 0.75
_CHECKPOINT_FIRST = 0.22
_CHECKPOINT_SHRINK = 0.03
_CHECKPOINT_MIN_GAP = 0.06
# Keeps divisions by a gradient norm or a logit gap finite where that quantity is zero.
_TINY = 1e-12


def _check_attack_args(norm: str, eps: float, steps: int) -> None:
    if norm not in NORMS:
        raise ConfigError(f"attack norm={norm!r} is not allowed; allowed: {', '.join(NORMS)}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"attack eps={eps!r} is out of range; allowed: [0, inf)")
    if steps < 1:
        raise ConfigError(f"attack steps={steps!r} is out of range; allowed: [1, inf)")


def _sample_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Shape that broadcasts one value per sample over x."""
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def _l2_norms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(_sample_shape(v))


def _project_ball(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Euclidean projection of each sample's perturbation onto the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / (_l2_norms(delta) + _TINY)).clamp(max=1.0)


def project(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project onto the eps-ball around x, then clip to [0, 1].

    Clipping after projecting keeps the point in the ball: x is in [0, 1], so clipping only shrinks each
    coordinate of the perturbation. (For l2 this is not the exact projection onto ball and box together, the
    usual approximation.)
    """
    return (x + _project_ball(x_adv - x, norm, eps)).clamp(0.0, 1.0)


def _ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest ascent direction of unit norm: the sign for linf, the normalised gradient for l2 (per sample)."""
    if norm == "linf":
        return grad.sign()
    return grad / (_l2_norms(grad) + _TINY)


def _uniform_in_ball(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """Perturbation drawn uniformly from the eps-ball, one per sample, on x's device.

    It is drawn on the generator's device (CPU for a plain ``torch.Generator()``), so a seed gives the same start
    on CPU and GPU.
    """
    where = generator.device if generator is not None else x.device
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=generator, device=where) * 2 - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=generator, device=where)
        direction = direction / (_l2_norms(direction) + _TINY)
        # The radius of a uniform point in a d-ball is eps * u^(1/d).
        dim = x[0].numel()
        radius = eps * torch.rand(_sample_shape(x), generator=generator, device=where) ** (1.0 / dim)
        noise = direction * radius
    return noise.to(device=x.device, dtype=x.dtype)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio per sample: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), pi sorting z descending.

    Positive once the point is misclassified; invariant to shifting and rescaling the logits.
    """
    if logits.shape[1] < 3:
        raise ConfigError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}; allowed: "
                          f"loss=ce for fewer classes")
    top3 = logits.topk(3, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    # The largest other logit is the top one unless y is on top, then it is the second.
    y_on_top = logits.argmax(dim=1) == y
    max_other = torch.where(y_on_top, top3[:, 1], top3[:, 0])
    return -(z_y - max_other) / (top3[:, 0] - top3[:, 2] + _TINY)


def _per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    return dlr_loss(logits, y)


def _loss_and_gradient(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                       loss: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss, predicted labels and the gradient of the loss w.r.t. the input only."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        losses = _per_sample_loss(logits, y, loss)
        # Samples are independent, so the gradient of the sum is each sample's own gradient.
        (grad,) = torch.autograd.grad(losses.sum(), x_adv)
    return losses.detach(), logits.detach().argmax(dim=1), grad.detach()


@torch.no_grad()
def _loss_and_prediction(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                         loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x_adv)
    return _per_sample_loss(logits, y, loss), logits.argmax(dim=1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(dim=1)


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int,
               step_size: float | None = None, random_start: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy (Madry et al.) within the eps-ball of x and [0, 1].

    linf takes sign steps, l2 steps along each sample's normalised gradient; both project after every step.
    step_size defaults to 2.5 * eps / steps (enough to cross the ball from any start). The last iterate is
    returned. Per-sample loss weights would not change it: each sample's step depends only on the direction of its
    own gradient, which a positive weight does not change.
    """
    _check_attack_args(norm, eps, steps)
    x = x.detach()
    if eps == 0:
        return x.clone()
    step = 2.5 * eps / steps if step_size is None else step_size
    x_adv = project(x + _uniform_in_ball(x, norm, eps, generator), x, norm, eps) if random_start else x.clone()
    for _ in range(steps):
        _, _, grad = _loss_and_gradient(model, x_adv, y, "ce")
        x_adv = project(x_adv + step * _ascent_direction(grad, norm), x, norm, eps)
    return x_adv


# ---------------------------------------------------------------------------------------------------------------
# The perturbation set of the generalized adversarial loss over a finite covering (see generalized.py): each centre
# c may move within B_2(eta_c) + B_norm(eps), the Minkowski sum of the l2 covering ball and the attack's eps-ball.
# Its points are those whose l2 distance to the eps-ball is at most eta_c: the norms stay apart, and the set is the
# union of the eps-balls of every point the centre covers.


def covering_excess(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Per sample, the l2 distance of the perturbation ``delta`` to the eps-ball of ``norm``: delta lies in
    B_2(eta) + B_norm(eps) exactly when this is <= eta."""
    return (delta - _project_ball(delta, norm, eps)).flatten(1).norm(dim=1)


def generalized_pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                           eta: torch.Tensor, steps: int, random_start: bool = True,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD on the cross-entropy over x + (B_2(eta) + B_norm(eps)) intersected with [0, 1], eta one l2 radius per
    sample (the covering radius of its class).

    A point of the Minkowski sum is u + v with u in the eps-ball and v in the eta-ball, and the maximum over the sum
    is the maximum over both parts jointly, so each part runs its own PGD on the gradient at clip(x + u + v): u the
    norm's step (sign steps for linf) of 2.5 eps / steps projected on its ball, v normalised-gradient steps of
    2.5 eta / steps projected on the l2 ball. Clipping to [0, 1] keeps the point in the set (it only shrinks
    coordinates of u + v toward 0, and the set holds every such shrinking of its points). The random start draws
    u and v uniformly from their balls. With eta = 0 this is ``pgd_attack`` wherever the box does not clip. The
    last iterate is returned.
    """
    _check_attack_args(norm, eps, steps)
    x = x.detach()
    eta = torch.as_tensor(eta, dtype=x.dtype, device=x.device).expand(len(x))
    if not (bool(torch.isfinite(eta).all()) and bool((eta >= 0).all())):
        raise ConfigError(f"covering radii eta must be finite and >= 0, got min {float(eta.min())}")
    radius = eta.view(_sample_shape(x))
    u, v = torch.zeros_like(x), torch.zeros_like(x)
    if random_start:
        u = _uniform_in_ball(x, norm, eps, generator)
        v = _uniform_in_ball(x, "l2", 1.0, generator) * radius
    fraction = 2.5 / steps
    for _ in range(steps):
        _, _, grad = _loss_and_gradient(model, (x + u + v).clamp(0.0, 1.0), y, "ce")
        u = _project_ball(u + fraction * eps * _ascent_direction(grad, norm), norm, eps)
        v = v + fraction * radius * _ascent_direction(grad, "l2")
        v = v * (radius / (_l2_norms(v) + _TINY)).clamp(max=1.0)
    return (x + u + v).clamp(0.0, 1.0)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which Auto-PGD may halve its step size: ceil(p_j * steps) for 0 < p_j < 1."""
    fractions = [0.0, _CHECKPOINT_FIRST]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - _CHECKPOINT_SHRINK,
                                             _CHECKPOINT_MIN_GAP))
    # The tolerance keeps e.g. 0.41 * 100 = 41.000000000000007 from becoming 42.
    points = {math.ceil(p * steps - 1e-9) for p in fractions[1:] if p < 1.0}
    return sorted(w for w in points if 0 < w < steps)


def _apgd_single_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, loss: str,
                     steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Auto-PGD run from a random start (Algorithm 1 of the paper), all samples in parallel.

    Each sample has its own step size, starting at 2 eps. At a checkpoint w_j a sample halves its step and
    restarts from its best point when (1) fewer than rho * (w_j - w_{j-1}) of the steps since w_{j-1} increased
    its loss, or (2) its step was not halved at w_{j-1} and its best loss has not grown since then.

    Returns, per sample, the best point (a misclassifying one if any iterate misclassified, else the highest-loss
    one), the highest loss reached and whether some iterate was misclassified. ``steps`` gradients are taken.
    """
    shape = _sample_shape(x)
    checkpoints = set(apgd_checkpoints(steps))
    step = torch.full(shape, 2.0 * eps, dtype=x.dtype, device=x.device)

    x_cur = project(x + _uniform_in_ball(x, norm, eps, generator), x, norm, eps)
    loss_cur, pred, grad = _loss_and_gradient(model, x_cur, y, loss)
    fooled = pred != y
    x_fooled = x_cur.clone()
    best_loss, x_best, grad_best = loss_cur.clone(), x_cur.clone(), grad.clone()
    x_prev = x_cur

    increases = torch.zeros_like(best_loss)  # loss increases since the last checkpoint
    best_loss_at_checkpoint = best_loss.clone()
    halved_at_checkpoint = torch.zeros_like(fooled)
    last_checkpoint = 0
    for k in range(steps):
        z = project(x_cur + step * _ascent_direction(grad, norm), x, norm, eps)
        if k == 0:
            x_next = z  # the first step has no previous step to carry momentum from
        else:
            x_next = project(x_cur + APGD_MOMENTUM * (z - x_cur) + (1 - APGD_MOMENTUM) * (x_cur - x_prev),
                             x, norm, eps)
        x_prev, x_cur = x_cur, x_next
        if k + 1 < steps:
            loss_next, pred, grad = _loss_and_gradient(model, x_cur, y, loss)
        else:
            loss_next, pred = _loss_and_prediction(model, x_cur, y, loss)

        newly_fooled = (pred != y) & ~fooled
        x_fooled[newly_fooled] = x_cur[newly_fooled]
        fooled |= newly_fooled
        increases += (loss_next > loss_cur).to(increases.dtype)
        improved = loss_next > best_loss
        best_loss = torch.where(improved, loss_next, best_loss)
        x_best[improved] = x_cur[improved]
        if k + 1 < steps:
            grad_best[improved] = grad[improved]
        loss_cur = loss_next

        if k + 1 in checkpoints:
            window = k + 1 - last_checkpoint
            too_few_increases = increases < APGD_RHO * window
            stalled = ~halved_at_checkpoint & (best_loss <= best_loss_at_checkpoint)
            halve = too_few_increases | stalled
            step[halve] /= 2
            # Restart the halved samples from their best point, without momentum from the abandoned path.
            x_cur = torch.where(halve.view(shape), x_best, x_cur)
            x_prev = x_cur
            grad = torch.where(halve.view(shape), grad_best, grad)
            loss_cur = torch.where(halve, best_loss, loss_cur)
            halved_at_checkpoint = halve
            best_loss_at_checkpoint = best_loss.clone()
            increases.zero_()
            last_checkpoint = k + 1

    x_out = torch.where(fooled.view(shape), x_fooled, x_best)
    return x_out, best_loss, fooled


def apgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, loss: str = "ce",
                steps: int = 100, restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020) on the cross-entropy ("ce") or the DLR loss ("dlr", needs >= 3 classes).

    Each restart starts uniformly at random in the ball (drawn from a CPU generator seeded with ``seed``) and runs
    ``steps`` iterations; later restarts attack only the points still classified correctly. Per sample the result
    is a misclassifying point if any was found, else the highest-loss point over all restarts. Clean points that
    are already misclassified are returned unchanged.
    """
    _check_attack_args(norm, eps, steps)
    if loss not in APGD_LOSSES:
        raise ConfigError(f"apgd loss={loss!r} is not allowed; allowed: {', '.join(APGD_LOSSES)}")
    if restarts < 1:
        raise ConfigError(f"apgd restarts={restarts!r} is out of range; allowed: [1, inf)")
    x, y = x.detach(), y.detach()
    clean_loss, clean_pred = _loss_and_prediction(model, x, y, loss)  # raises for DLR with < 3 classes
    x_adv = x.clone()
    if eps == 0:
        return x_adv
    generator = torch.Generator().manual_seed(seed)
    # A misclassified clean point is already its own best point.
    fooled = clean_pred != y
    best_loss = clean_loss
    for _ in range(restarts):
        todo = (~fooled).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        x_run, loss_run, fooled_run = _apgd_single_run(model, x[todo], y[todo], norm=norm, eps=eps, loss=loss,
                                                       steps=steps, generator=generator)
        take = fooled_run | (loss_run > best_loss[todo])
        x_adv[todo[take]] = x_run[take]
        best_loss[todo] = torch.maximum(best_loss[todo], loss_run)
        fooled[todo] = fooled_run
    return x_adv


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int = 100,
               restarts: int = 5, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AutoAttack-style worst case of APGD-CE and APGD-DLR (the paper's custom version: 5 restarts x 100 steps).

    Returns the per-sample worst-case points and, as boolean masks over the samples, whether the model still
    classifies each one correctly under "apgd_ce", "apgd_dlr" and their worst case "aa". Unlike AutoAttack's
    cascade, APGD-DLR attacks every clean-correct point, not only those APGD-CE left standing, so that both
    components' robust accuracies mean something on their own. "aa" is the same worst case as the cascade's (each
    point is attacked independently; only its random starts differ); the price is one more APGD-DLR run on the
    points APGD-CE broke, usually a single restart each, since a broken point is not attacked again. With fewer
    than 3 classes DLR is undefined: "apgd_dlr" is left out and "aa" is APGD-CE alone.
    """
    x, y = x.detach(), y.detach()
    x_ce = apgd_attack(model, x, y, norm=norm, eps=eps, loss="ce", steps=steps, restarts=restarts, seed=seed)
    correct_ce = predict(model, x_ce) == y
    correct = {"apgd_ce": correct_ce}
    x_adv = x_ce
    with torch.no_grad():
        n_classes = model(x[:1]).shape[1] if len(x) else 0
    if n_classes >= 3:
        # A different seed, so the two attacks do not share their random starts.
        x_dlr = apgd_attack(model, x, y, norm=norm, eps=eps, loss="dlr", steps=steps, restarts=restarts, seed=seed + 1)
        correct_dlr = predict(model, x_dlr) == y
        correct["apgd_dlr"] = correct_dlr
        # Where CE failed but DLR succeeded, DLR's point is the worst case; elsewhere CE's.
        use_dlr = correct_ce & ~correct_dlr
        x_adv = torch.where(use_dlr.view(_sample_shape(x)), x_dlr, x_ce)
    correct["aa"] = torch.stack(list(correct.values())).all(dim=0)
    return x_adv, correct
