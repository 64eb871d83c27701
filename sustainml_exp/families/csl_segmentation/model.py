"""The confidence network of the reference code: RGB image -> K sigmoid confidence maps.

A 3x3 stem to ``width`` channels, six residual blocks of dilated 3x3 convolutions (dilations 1, 2, 3, 5, 10, 20,
padding = dilation so the maps keep the input's size) and a 1x1 head to K channels. At K = 4 on RGB it has
7,372 trainable parameters. The paper's "10.8k" also counts a 3,386-parameter featuriser network that the
reference code builds but never uses for the reported similarities; the records report both figures.
"""

from __future__ import annotations

import torch
from torch import nn

REFERENCE_FEATURISER_PARAMS = 3386
DEFAULT_DILATIONS = (1, 2, 3, 5, 10, 20)


def shift_input(x: torch.Tensor) -> torch.Tensor:
    """Maps [0, 1] intensities to [0.05, 1] so that no attended patch is exactly 0 where logs are taken."""
    return x * 0.95 + 0.05


def n_trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _conv_bn_elu(in_channels: int, out_channels: int, dilation: int) -> nn.Sequential:
    # No conv bias: the BatchNorm shift that follows would make it redundant.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ELU(),
    )


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn_elu(width, width, dilation), _conv_bn_elu(width, width, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConfidenceNet(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, n_classes, H, W) confidences in (0, 1)."""

    def __init__(self, in_channels: int = 3, n_classes: int = 4, width: int = 8,
                 dilations: tuple[int, ...] = DEFAULT_DILATIONS) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.stem = _conv_bn_elu(in_channels, width, dilation=1)
        self.blocks = nn.Sequential(*(_ResidualBlock(width, d) for d in dilations))
        self.head = nn.Conv2d(width, n_classes, kernel_size=1, bias=True)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid maps, for a numerically stable BCE (binary_cross_entropy_with_logits) in the baseline."""
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))
