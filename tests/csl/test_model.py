"""The confidence network: the reference architecture's parameter count, wiring, receptive field and outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sustainml_exp.families.csl_segmentation.model import (
    REFERENCE_FEATURISER_PARAMS,
    ConfidenceNet,
    n_trainable_params,
    shift_input,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_built_network_has_the_reference_layers_and_7372_trainable_parameters() -> None:
    model = ConfidenceNet(in_channels=3, n_classes=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # Stem 3 -> 8, twelve 8 -> 8 convolutions (two per dilation), a 1x1 head 8 -> 4 with the only bias.
    assert [tuple(c.weight.shape) for c in convs] == [(8, 3, 3, 3)] + [(8, 8, 3, 3)] * 12 + [(4, 8, 1, 1)]
    assert [c.dilation[0] for c in convs[1:-1]] == [d for d in (1, 2, 3, 5, 10, 20) for _ in range(2)]
    assert [c.bias is not None for c in convs] == [False] * 13 + [True]
    assert [n.num_features for n in norms] == [8] * 13
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counted == n_trainable_params(model) == 7372


def test_the_papers_10_8k_adds_the_reference_codes_unused_featuriser() -> None:
    # The reference code's FeatureNetwork (one input channel): conv 3x3 1 -> 8 with bias + BN, then two
    # stride-2 dilation-2 convolutions 8 -> 8 and 8 -> 1 without bias + BN, then a linear 81 -> 32.
    featuriser = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ELU(),
        nn.Conv2d(8, 8, 3, stride=2, dilation=2, bias=False), nn.BatchNorm2d(8), nn.ELU(),
        nn.Conv2d(8, 1, 3, stride=2, dilation=2, bias=False), nn.BatchNorm2d(1), nn.ELU(),
        nn.Flatten(), nn.Linear(81, 32))
    assert featuriser(torch.rand(2, 1, 50, 50)).shape == (2, 32)  # 81 = the 9 x 9 maps of a 50 x 50 patch
    assert n_trainable_params(featuriser) == REFERENCE_FEATURISER_PARAMS
    total = n_trainable_params(ConfidenceNet()) + n_trainable_params(featuriser)
    assert round(total / 1000, 1) == 10.8


def test_parameter_count_follows_classes_and_input_channels() -> None:
    # The head has width * K weights + K biases; the stem 9 * in_channels * width weights.
    assert n_trainable_params(ConfidenceNet(n_classes=2)) == 7372 - 2 * 8 - 2
    assert n_trainable_params(ConfidenceNet(in_channels=1)) == 7372 - 2 * 9 * 8


def test_frozen_parameters_are_not_counted() -> None:
    model = ConfidenceNet()
    for p in model.head.parameters():
        p.requires_grad_(False)
    assert n_trainable_params(model) == 7372 - 36


def test_forward_keeps_the_size_and_returns_sigmoid_of_the_logits() -> None:
    torch.manual_seed(0)
    model = ConfidenceNet()
    x = torch.rand(2, 3, 41, 37)
    conf = model(x)
    assert conf.shape == (2, 4, 41, 37)
    assert bool(((conf > 0) & (conf < 1)).all())
    torch.testing.assert_close(conf, torch.sigmoid(model.forward_logits(x)))


def test_every_parameter_receives_a_gradient() -> None:
    torch.manual_seed(0)
    model = ConfidenceNet()
    model(torch.rand(2, 3, 24, 24)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def test_receptive_field_radius_is_83_pixels() -> None:
    # Stem radius 1 plus two convolutions of radius d per block: 1 + 2 * (1 + 2 + 3 + 5 + 10 + 20) = 83.
    torch.manual_seed(0)
    model = ConfidenceNet().eval()  # running statistics: no batch coupling between pixels
    x = torch.rand(1, 3, 1, 200)
    bumped = x.clone()
    bumped[..., 10] += 10.0
    with torch.no_grad():
        changed = (model.forward_logits(bumped) - model.forward_logits(x)).abs().amax(dim=(0, 1, 2)) > 0
    assert bool(changed[10 + 83])
    assert not bool(changed[10 + 84:].any())


def test_shift_input_maps_unit_interval_to_0_05_1() -> None:
    x = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(shift_input(x), torch.tensor([0.05, 0.525, 1.0]))
