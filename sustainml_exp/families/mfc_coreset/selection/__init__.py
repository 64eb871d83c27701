"""Selection methods by config name; each lives in its own module, imported only when used."""

from __future__ import annotations

import importlib

from sustainml_exp.errors import ConfigError
from sustainml_exp.families.mfc_coreset.config import CONDENSATION_METHODS, CORESET_METHODS, MFCRunConfig
from sustainml_exp.families.mfc_coreset.data import TrainSet
from sustainml_exp.families.mfc_coreset.selection.base import SelectionResult, Selector

__all__ = ["SELECTORS", "SelectionResult", "Selector", "TrainSet", "make_selector"]

SELECTORS: dict[str, str] = {**CORESET_METHODS, **CONDENSATION_METHODS}


def make_selector(cfg: MFCRunConfig, device: str = "cpu") -> Selector:
    if cfg.method not in SELECTORS:
        raise ConfigError(f"method={cfg.method!r} is not allowed; allowed: {', '.join(SELECTORS)}")
    module, _, cls = SELECTORS[cfg.method].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(cfg, device)
