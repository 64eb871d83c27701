"""Typed config schemas and their registration with Hydra's ConfigStore (no heavy imports here)."""

from sustainml_exp.config.schema import BaseRunConfig, EnergySchema, check_choice, check_range

__all__ = ["BaseRunConfig", "EnergySchema", "check_choice", "check_range"]
