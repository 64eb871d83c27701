"""The paper's classifiers, each taking pixels in [0, 1] and normalising inside (attacks work in pixel space).

Every model is ``classifier(features(normalize(x)))``: ``embed`` exposes the features for the selectors and
condensation methods that work in a network's embedding space (herding, craig, gradmatch, DM).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import MODELS


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    def __init__(self, normalize: Normalize, features: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def _mlp_features(in_shape: tuple[int, int, int], width: int = 128) -> tuple[nn.Module, int]:
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(), nn.Linear(width, width),
                         nn.ReLU()), width


def _convnet_features(in_shape: tuple[int, int, int], width: int = 128) -> tuple[nn.Module, int]:
    # The condensation papers' ConvNet: conv3x3 -> instance norm (GroupNorm with one group per channel) -> ReLU
    # -> 2x2 average pooling, three times. Smaller images get fewer blocks so that the last instance norm still
    # sees 4 x 4 maps: on 8 x 8 digits a third block normalises 2 x 2 maps, which leaves features that barely
    # differ between images and image gradients ~40x larger (condensation then destroys its images).
    c, h, w = in_shape
    depth = min(3, int(math.log2(min(h, w))) - 1)
    if depth < 1:
        raise ConfigError(f"model=convnet needs images of at least 4 x 4 pixels, got {h} x {w}; allowed: mlp")
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width, affine=True), nn.ReLU(),
                   nn.AvgPool2d(2)]
        c, h, w = width, h // 2, w // 2
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), c * h * w


def _resnet18_features(in_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    # Small-input variant: 3x3 stride-1 stem and no max pooling (32 x 32 and 64 x 64 images keep their
    # resolution through the first stage); adaptive average pooling handles any input size.
    net = resnet18(num_classes=1)
    net.conv1 = nn.Conv2d(in_shape[0], 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512


def build_model(name: str, in_shape: tuple[int, int, int], n_classes: int,
                mean_std: tuple[tuple[float, ...], tuple[float, ...]]) -> ImageClassifier:
    builders = {"mlp": _mlp_features, "convnet": _convnet_features, "resnet18": _resnet18_features}
    if name not in builders:
        raise ConfigError(f"model={name!r} is not allowed; allowed: {', '.join(MODELS)}")
    features, dim = builders[name](in_shape)
    return ImageClassifier(Normalize(*mean_std), features, dim, n_classes)


def n_trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
