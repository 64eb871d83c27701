"""Our APGD-CE and APGD-DLR against torchattacks' APGD (a port of the official AutoAttack code) on a trained MLP.

Run with ``-m reference``; needs ``pip install --no-deps torchattacks==3.5.1`` (its pinned ``requests`` is old).
"""

from __future__ import annotations

import pytest
import torch

from sustainml_exp.families.mfc_coreset.attacks import apgd_attack, predict

pytestmark = pytest.mark.reference

torchattacks = pytest.importorskip(
    "torchattacks", reason="torchattacks is not importable; install it with pip install --no-deps torchattacks==3.5.1")

# Budgets at which the MLP keeps about half (linf) and a third (l2) of the test digits, so that a weaker attack
# shows as a higher robust accuracy instead of hitting 0 or the clean accuracy.
EPS = {"linf": 0.1, "l2": 0.6}
# The paper's AutoAttack budget.
STEPS, RESTARTS = 100, 5
# Measured on this model over 5 seeds each (25 cross pairs per norm and loss, 397 test digits): robust accuracies
# of ours and torchattacks' differ by at most 3 points (0.76 %), with mean differences between -0.1 % and +0.1 %;
# the spread is random-start noise. Ours may be weaker by at most 6 points (1.5 %, twice the largest difference
# seen) and must agree within 10 points (2.5 %) either way.
WEAKER_TOLERANCE = 0.015
AGREEMENT_TOLERANCE = 0.025


@pytest.fixture(scope="module")
def trained(trained_mlp):
    model, x, y = trained_mlp
    return model, x, y


def _robust_accuracy(model, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, norm: str) -> float:
    delta = (x_adv - x).flatten(1)
    distance = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert distance.max().item() <= EPS[norm] + 1e-5 and 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    return (predict(model, x_adv) == y).float().mean().item()


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_matches_torchattacks(one_thread, trained, norm: str, loss: str) -> None:
    model, x, y = trained
    eps = EPS[norm]
    ours = _robust_accuracy(model, apgd_attack(model, x, y, norm=norm, eps=eps, loss=loss, steps=STEPS,
                                               restarts=RESTARTS, seed=0), x, y, norm)
    reference = torchattacks.APGD(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=STEPS,
                                  n_restarts=RESTARTS, seed=0, loss=loss)
    # torchattacks seeds the global generator; keep that from leaking into other tests.
    with torch.random.fork_rng():
        theirs = _robust_accuracy(model, reference(x, y), x, y, norm)
    clean = (predict(model, x) == y).float().mean().item()
    print(f"APGD-{loss.upper()} {norm} eps={eps} {STEPS}x{RESTARTS}: clean {clean:.4f}, ours {ours:.4f}, "
          f"torchattacks {theirs:.4f}")
    assert 0.2 < theirs < clean - 0.2  # a budget where the comparison can tell attacks apart
    assert ours <= theirs + WEAKER_TOLERANCE
    assert abs(ours - theirs) <= AGREEMENT_TOLERANCE
    assert not model.training  # torchattacks restores the mode it found
