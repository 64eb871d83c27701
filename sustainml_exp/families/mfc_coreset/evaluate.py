"""Clean and robust test accuracy of a trained classifier under the configured attacks."""

from __future__ import annotations

import torch
from torch import nn

from sustainml_exp.families.mfc_coreset.attacks import autoattack, pgd_attack, predict
from sustainml_exp.families.mfc_coreset.config import MFCRunConfig


def _batches(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def evaluate_robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: MFCRunConfig,
                        device: str) -> dict[str, float]:
    """Clean accuracy on all of (x, y) and robust accuracy under each attack in cfg.attack.names.

    Robust accuracy is measured on the first cfg.attack.max_examples test images (all when null) and counts a point
    only if it is classified correctly both clean and under the attack, so it never exceeds the clean accuracy of
    those images. pgd_linf and pgd_l2 use that norm's eps with cfg.attack.pgd_steps from a random start seeded with
    cfg.seed; aa is the worst case of APGD-CE and APGD-DLR under cfg.norm (cfg.attack.aa_steps x aa_restarts) and
    also reports each component. Only clean-correct points are attacked. The model runs in eval mode on ``device``
    in batches of cfg.attack.batch_size; its previous mode is restored afterwards.

    Returns fractions in [0, 1] under "std_acc" and "rob_acc_<attack>" (NaN for apgd_dlr with fewer than 3
    classes) and the number of images the robust accuracies are measured on, "n_robust_eval".
    """
    n_total = len(x)
    if n_total == 0 or len(y) != n_total:
        raise ValueError(f"evaluate_robustness needs as many labels as images (at least one), got {n_total} images "
                         f"and {len(y)} labels")
    attack_cfg = cfg.attack
    was_training = model.training
    model.to(device)
    model.eval()
    try:
        clean_correct = torch.cat([predict(model, x[b].to(device)) == y[b].to(device)
                                   for b in _batches(n_total, attack_cfg.batch_size)]).cpu()
        n_rob = n_total if attack_cfg.max_examples is None else min(attack_cfg.max_examples, n_total)
        result: dict[str, float] = {"std_acc": clean_correct.float().mean().item(), "n_robust_eval": n_rob}
        for name in attack_cfg.names:
            robust = _robust_correct(model, x[:n_rob], y[:n_rob], clean_correct[:n_rob], name, cfg, device)
            for key, correct in robust.items():
                result[f"rob_acc_{key}"] = correct.float().mean().item()
            if name == "aa" and "apgd_dlr" not in robust:
                result["rob_acc_apgd_dlr"] = float("nan")
    finally:
        model.train(was_training)
    return result


def _robust_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean_correct: torch.Tensor, name: str,
                    cfg: MFCRunConfig, device: str) -> dict[str, torch.Tensor]:
    """Per image, whether it is classified correctly both clean and under the attack ``name`` (for aa also under
    each APGD component), as CPU boolean masks keyed by attack name."""
    attack_cfg = cfg.attack
    # One CPU generator per attack, seeded with cfg.seed: the same random starts on any device, and adding an
    # attack to the list does not shift another attack's starts.
    generator = torch.Generator().manual_seed(cfg.seed)
    keys = [name]
    if name == "aa":
        with torch.no_grad():
            n_classes = model(x[:1].to(device)).shape[1]
        keys += ["apgd_ce", "apgd_dlr"] if n_classes >= 3 else ["apgd_ce"]
    # Misclassified clean points stay False: they are not robust, and attacking them would only cost time.
    robust = {key: torch.zeros(len(x), dtype=torch.bool) for key in keys}
    for b in _batches(len(x), attack_cfg.batch_size):
        todo = b.start + clean_correct[b].nonzero().squeeze(1)
        if todo.numel() == 0:
            continue
        xb, yb = x[todo].to(device), y[todo].to(device)
        if name == "aa":
            seed = int(torch.randint(2 ** 62, (), generator=generator))
            _, correct = autoattack(model, xb, yb, norm=cfg.norm, eps=cfg.eps_for(cfg.norm),
                                    steps=attack_cfg.aa_steps, restarts=attack_cfg.aa_restarts, seed=seed)
        else:
            norm = name.removeprefix("pgd_")
            x_adv = pgd_attack(model, xb, yb, norm=norm, eps=cfg.eps_for(norm), steps=attack_cfg.pgd_steps,
                               generator=generator)
            correct = {name: predict(model, x_adv) == yb}
        for key in keys:
            robust[key][todo] = correct[key].cpu()
    return robust
