"""Maps experiment names to their typed schema and (lazily imported) implementation.

Only the schema classes are imported eagerly; the run and table functions are referenced as ``module:attr``
strings so that ``sml-run --help`` and ``--cfg job`` never import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sustainml_exp.config.schema import BaseRunConfig
from sustainml_exp.errors import ConfigError
from sustainml_exp.families.csl_segmentation.config import CSLRunConfig
from sustainml_exp.families.csl_segmentation.config import protocol_value as csl_protocol_value
from sustainml_exp.families.gnn_blockquant.config import GNNRunConfig
from sustainml_exp.families.mfc_coreset.config import MFCRunConfig
from sustainml_exp.families.mfc_coreset.config import protocol_value as mfc_protocol_value


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Family:
    name: str
    schema: type[BaseRunConfig]
    run_ref: str  # "module:function" taking (cfg, RunContext) and returning a dict of metrics
    tables_ref: str  # "module:function" taking (DataFrame, out_dir) and writing the family's tables/figures
    # OmegaConf resolvers the family's config files use, as (name, function) pairs.
    resolvers: tuple[tuple[str, Callable[..., Any]], ...] = ()

    def load_run(self) -> Callable[..., dict[str, Any]]:
        return _load(self.run_ref)

    def load_tables(self) -> Callable[..., list[Any]]:
        return _load(self.tables_ref)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="gnn_blockquant",
            schema=GNNRunConfig,
            run_ref="sustainml_exp.families.gnn_blockquant.train:run",
            tables_ref="sustainml_exp.families.gnn_blockquant.tables:write_tables",
        ),
        Family(
            name="csl_segmentation",
            schema=CSLRunConfig,
            run_ref="sustainml_exp.families.csl_segmentation.train:run",
            tables_ref="sustainml_exp.families.csl_segmentation.tables:write_tables",
            resolvers=(("csl_protocol", csl_protocol_value),),
        ),
        Family(
            name="mfc_coreset",
            schema=MFCRunConfig,
            run_ref="sustainml_exp.families.mfc_coreset.train:run",
            tables_ref="sustainml_exp.families.mfc_coreset.tables:write_tables",
            resolvers=(("mfc_protocol", mfc_protocol_value),),
        ),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown experiment family {name!r}; allowed: {', '.join(sorted(FAMILIES))}") from None


def register_schemas() -> None:
    """Put every family schema in Hydra's ConfigStore as ``schema/<name>`` (package _global_) and register the
    resolvers the families' config files use."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for family in FAMILIES.values():
        store.store(group="schema", name=family.name, node=family.schema, package="_global_")
        for name, function in family.resolvers:
            OmegaConf.register_new_resolver(name, function, replace=True)
