"""The generalized adversarial loss over a covering: its perturbation set B_2(eta) + B_norm(eps) on hand-computed
points, its worst case on a linear model, the per-class covering radii, and training on the embedded digits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sustainml_exp.families.mfc_coreset import train as train_module
from sustainml_exp.families.mfc_coreset.attacks import (
    covering_excess,
    generalized_pgd_attack,
    pgd_attack,
    predict,
)
from sustainml_exp.families.mfc_coreset.config import MEAN_STD, MFCRunConfig
from sustainml_exp.families.mfc_coreset.data import TrainSet, load_image_dataset
from sustainml_exp.families.mfc_coreset.generalized import class_covering_radii
from sustainml_exp.families.mfc_coreset.models import build_model
from sustainml_exp.families.mfc_coreset.selection import make_selector
from sustainml_exp.progress import Progress
from sustainml_exp.runner import RunContext

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(*pairs: tuple[float, float]) -> torch.Tensor:
    """Two-pixel images (N, 1, 1, 2)."""
    return torch.tensor(pairs, dtype=torch.float64).view(len(pairs), 1, 1, 2)


def test_excess_is_the_l2_distance_to_the_eps_ball_of_each_norm() -> None:
    delta = _images((0.5, 0.0), (0.3, 0.3), (-0.05, 0.1))
    # linf, eps 0.1: soft-threshold each coordinate by 0.1, then the l2 norm.
    torch.testing.assert_close(covering_excess(delta, "linf", 0.1),
                               torch.tensor([0.4, math.sqrt(0.08), 0.0], dtype=torch.float64))
    # l2, eps 0.1: ||delta|| - 0.1 outside the ball.
    torch.testing.assert_close(covering_excess(_images((0.3, 0.4)), "l2", 0.1),
                               torch.tensor([0.4], dtype=torch.float64))


def test_the_set_is_not_the_linf_ball_of_eps_plus_eta() -> None:
    # (0.4, 0.4) is in the linf ball of eps + eta = 0.1 + 0.3 but 0.3 sqrt(2) = 0.42 from B_inf(0.1): outside.
    # (0.4, 0.0) and (0.1 + 0.3 / sqrt(2), same) lie on the boundary; the per-sample radius decides.
    delta = _images((0.4, 0.4), (0.4, 0.0), (0.1 + 0.3 / math.sqrt(2),) * 2)
    torch.testing.assert_close(covering_excess(delta, "linf", 0.1),
                               torch.tensor([0.3 * math.sqrt(2), 0.3, 0.3], dtype=torch.float64))


def _linear_model(w: torch.Tensor, bias: float) -> nn.Module:
    """Logits (w . x + bias, 0) of a flattened image."""
    linear = nn.Linear(len(w), 2).double()
    with torch.no_grad():
        linear.weight.copy_(torch.stack([w, torch.zeros_like(w)]))
        linear.bias.copy_(torch.tensor([bias, 0.0]))
    return nn.Sequential(nn.Flatten(), linear)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_worst_case_on_a_linear_model_is_the_hand_computed_loss(norm: str) -> None:
    # Over B_norm(eps) + B_2(eta) the margin w . (c + delta) + b falls by at most eps * ||w||_dual + eta * ||w||_2
    # (the dual of linf is l1): the generalized loss of class 0 is softplus(-(margin - that fall)), of class 1
    # softplus(margin + that fall). The centres sit mid-box, so the pixel box never binds.
    w = torch.tensor([1.0, -2.0, 0.5, 0.25], dtype=torch.float64)
    model = _linear_model(w, bias=0.425)  # margin 0.5 * (-0.25) + 0.425 = 0.3 at c = 0.5
    x = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    y = torch.tensor([0, 1])
    eps, eta = 0.05, torch.tensor([0.1, 0.2], dtype=torch.float64)
    dual = float(w.abs().sum()) if norm == "linf" else float(w.norm())
    fall = eps * dual + eta * float(w.norm())  # linf: 0.1875 + eta * 2.3049
    expected = torch.stack([nn.functional.softplus(-(0.3 - fall[0])), nn.functional.softplus(0.3 + fall[1])])
    # The maximiser by hand: eps times the norm's steepest direction plus eta along w (signs per class).
    direction = torch.stack([-w, w]).view(2, 1, 2, 2)
    steepest = direction.sign() if norm == "linf" else direction / w.norm()
    best = x + eps * steepest + eta.view(2, 1, 1, 1) * direction / w.norm()
    assert bool((covering_excess(best - x, norm, eps) <= eta + 1e-12).all())
    torch.testing.assert_close(nn.functional.cross_entropy(model(best), y, reduction="none").detach(), expected)
    # PGD from the centre reaches it; from a random start it gets close and never beyond.
    x_adv = generalized_pgd_attack(model, x, y, norm=norm, eps=eps, eta=eta, steps=20, random_start=False)
    torch.testing.assert_close(x_adv, best)
    x_adv = generalized_pgd_attack(model, x, y, norm=norm, eps=eps, eta=eta, steps=20,
                                   generator=torch.Generator().manual_seed(0))
    reached = nn.functional.cross_entropy(model(x_adv), y, reduction="none").detach()
    assert bool((reached <= expected + 1e-12).all()) and bool((reached >= expected - 0.02).all()), (reached, expected)
    assert bool((covering_excess(x_adv - x, norm, eps) <= eta + 1e-12).all())
    if norm == "linf":
        # One pixel-wise budget of eps + eta (the broken reading) reaches a larger loss: the sets differ.
        wider = pgd_attack(model, x[:1], y[:1], norm="linf", eps=eps + 0.1, steps=50)
        assert float(nn.functional.cross_entropy(model(wider), y[:1]).detach()) > float(expected[0]) + 0.05


def test_zero_radius_is_plain_pgd() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, MEAN_STD["digits"]).eval()
    x, y = 0.3 + 0.4 * torch.rand(6, 1, 8, 8), torch.arange(6)  # the pixel box never clips here
    for norm, eps in (("linf", 0.1), ("l2", 0.4)):
        plain = pgd_attack(model, x, y, norm=norm, eps=eps, steps=5, generator=torch.Generator().manual_seed(1))
        generalized = generalized_pgd_attack(model, x, y, norm=norm, eps=eps, eta=torch.zeros(6), steps=5,
                                             generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(generalized, plain)


def test_class_radii_are_the_covering_radius_of_the_selected_centres() -> None:
    # Class 0: points (0, 0), (3, 0), (0, 4) with centre (0, 0): radius 4. Class 1: (1, 1), (1, 2), (4, 5) with
    # centres (1, 1) and (4, 5): radius 1.
    points = torch.tensor([[0, 0], [3, 0], [0, 4], [1, 1], [1, 2], [4, 5]], dtype=torch.float32).view(6, 1, 1, 2)
    train = TrainSet(x=points, y=torch.tensor([0, 0, 0, 1, 1, 1]), n_classes=2, dataset="digits")
    indices = np.array([0, 3, 5])
    np.testing.assert_allclose(class_covering_radii(train, indices), [4.0, 1.0])
    # A class with no selected image has no finite radius.
    assert class_covering_radii(train, np.array([0]))[1] == np.inf


def test_generalized_training_on_digits_stays_in_its_ball_and_learns(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """MCS k = 50 per class, PGD-linf: every training perturbation lies in B_2(eta_class) + B_inf(eps), each
    image uses its class's radius, and the MLP ends far above chance (10 %) on the test digits."""
    cfg = MFCRunConfig(method="mcs", k=50, epochs=20, train="pgd_linf", generalized=True)
    data = load_image_dataset("digits", tmp_path)
    selection = make_selector(cfg).select(data.train, cfg.k, cfg.seed)
    per_class = class_covering_radii(data.train, selection.indices)
    x_sel, y_sel = selection.training_set(data.train)
    radii = torch.as_tensor(per_class, dtype=torch.float32)[y_sel]
    assert per_class.max() <= selection.info["eta"] + 1e-5 and per_class.min() < per_class.max()
    worst_excess: list[float] = []
    seen_radii: set[float] = set()
    real_attack = generalized_pgd_attack

    def checked_attack(model, x, y, *, norm, eps, eta, steps, generator):
        x_adv = real_attack(model, x, y, norm=norm, eps=eps, eta=eta, steps=steps, generator=generator)
        worst_excess.append(float((covering_excess(x_adv - x, norm, eps) - eta).max()))
        assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
        seen_radii.update(eta.tolist())
        return x_adv

    monkeypatch.setattr(train_module, "generalized_pgd_attack", checked_attack)
    torch.manual_seed(cfg.seed)
    model = build_model("mlp", (1, 8, 8), 10, MEAN_STD["digits"])
    ctx = RunContext(device="cpu", output_dir=tmp_path, make_progress=lambda total, desc: Progress(total, desc, "off"))
    train_module.train_classifier(model, x_sel, y_sel, None, cfg, cfg.eps_for("linf"), ctx, radii)
    assert len(worst_excess) == 20 * 4 and max(worst_excess) <= 1e-5
    assert sorted(seen_radii) == pytest.approx(sorted(per_class), abs=1e-6)
    model.eval()
    clean = float((predict(model, data.test_x) == data.test_y).float().mean())
    assert clean > 0.35, clean
