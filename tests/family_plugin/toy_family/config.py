"""Typed schema of experiment=toy_family (imports nothing heavy: sml-run reads it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sustainml_exp.config.checks import check_choice, check_range
from sustainml_exp.config.schema import BaseRunConfig

DATASETS = ("line",)
OPTIMIZERS = ("sgd", "adam")


@dataclass
class ToyRunConfig(BaseRunConfig):
    dataset: str = "line"
    epochs: int = 50
    method: str = "sgd"  # the optimizer
    lr: float = 0.1
    n_points: int = 64
    noise: float = 0.1  # std of the noise added to y = 2 x + 1

    def record_fields(self) -> dict[str, Any]:
        return {"method": self.method, "lr": self.lr, "n_points": self.n_points, "noise": self.noise}

    def validate(self) -> None:
        super().validate()
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("method", self.method, OPTIMIZERS)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("n_points", self.n_points, lo=2)
        check_range("noise", self.noise, lo=0.0)
