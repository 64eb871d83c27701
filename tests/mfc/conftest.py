"""Fixtures of the coreset-family tests: scikit-learn's bundled digits as a TrainSet and an MLP trained on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sustainml_exp.families.mfc_coreset.config import MEAN_STD
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.models import ImageClassifier, build_model


@pytest.fixture(scope="session")
def digits_train() -> TrainSet:
    """All 1,797 8 x 8 digits (pixels / 16), independent of the family's own loader and split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    return TrainSet(x=x, y=torch.from_numpy(bunch.target.astype(np.int64)), n_classes=10, dataset="digits")


@pytest.fixture(scope="session")
def trained_mlp(digits_train) -> tuple[ImageClassifier, torch.Tensor, torch.Tensor]:
    """An MLP trained with SGD for 15 epochs on 1,400 shuffled digits (eval mode), and the other 397 digits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    order = torch.randperm(len(digits_train.y))
    x, y = digits_train.x[order], digits_train.y[order]
    model = build_model("mlp", (1, 8, 8), 10, MEAN_STD["digits"])
    # Plain SGD with momentum written out: constructing a torch.optim optimizer costs seconds of imports.
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    for _ in range(15):
        for start in range(0, 1400, 50):
            loss = F.cross_entropy(model(x[start:start + 50]), y[start:start + 50])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, v, g in zip(params, velocity, grads):
                    p -= 0.05 * v.mul_(0.9).add_(g)
    model.eval()
    torch.set_num_threads(threads)
    return model, x[1400:], y[1400:]
