"""Which experiment families exist: the built-in ones and those registered from outside the package.

A family is found through the module that declares its ``FAMILY`` (see family.py), from three places, in order:
- ``BUILTIN``: the families of this package;
- the entry point group ``sustainml_exp.families`` of installed distributions, naming the module that declares
  ``FAMILY`` or the object itself (``[project.entry-points."sustainml_exp.families"] my_family = "my_pkg.my_family"``);
- the environment variable ``SML_FAMILIES``: comma-separated module paths, importable from ``sys.path``
  (``SML_FAMILIES=my_family PYTHONPATH=src sml-run experiment=my_family``).

Only the declaring modules are imported (schemas, no torch), so ``sml-run --help`` and ``--cfg job`` stay fast.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from functools import cache, partial
from importlib import metadata
from typing import Any

from sustainml_exp.config.schema import BaseRunConfig
from sustainml_exp.errors import ConfigError, UserError
from sustainml_exp.family import Family

BUILTIN = ("sustainml_exp.families.gnn_blockquant", "sustainml_exp.families.csl_segmentation",
           "sustainml_exp.families.mfc_coreset")
ENTRY_POINT_GROUP = "sustainml_exp.families"
FAMILIES_ENV = "SML_FAMILIES"


def _declared(load: Callable[[], Any], what: str, source: str) -> Family:
    """The Family that ``load()`` returns (a Family, or a module declaring FAMILY)."""
    try:
        found = load()
    except Exception as exc:  # noqa: BLE001 - any failure to import a plugin is one line for the user
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{source}: cannot load the family {what!r} ({type(exc).__name__}: {detail})") from exc
    family = found if isinstance(found, Family) else getattr(found, "FAMILY", None)
    if not isinstance(family, Family):
        raise UserError(f"{source}: {what} is not a sustainml_exp.family.Family and declares no FAMILY")
    return family


def _sources() -> list[tuple[Callable[[], Any], str, str]]:
    """(load, what, where it was named) of every family to load."""
    found = [(partial(importlib.import_module, module), module, "built-in") for module in BUILTIN]
    found += [(entry.load, entry.value, f"entry point {entry.name!r} ({ENTRY_POINT_GROUP})")
              for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    found += [(partial(importlib.import_module, module.strip()), module.strip(), FAMILIES_ENV)
              for module in os.environ.get(FAMILIES_ENV, "").split(",") if module.strip()]
    return found


@cache
def families() -> dict[str, Family]:
    """Every family by name; raises UserError (one line) for a family that cannot be loaded or a name taken twice."""
    found: dict[str, Family] = {}
    for load, what, source in _sources():
        family = _declared(load, what, source)
        if family.name in found and found[family.name] is not family:
            raise UserError(f"{source}: family {family.name!r} ({what}) is already registered by "
                            f"{found[family.name].schema.__module__}; family names must be unique")
        found[family.name] = family
    return found


def get_family(name: str) -> Family:
    try:
        return families()[name]
    except KeyError:
        raise ConfigError(f"unknown experiment family {name!r}; allowed: {', '.join(sorted(families()))}") from None


def family_of(cfg: BaseRunConfig) -> Family:
    """The family a typed run config belongs to; its ``family`` key cannot name another family's schema."""
    family = get_family(cfg.family)
    if type(cfg) is not family.schema:
        owner = next((f.name for f in families().values() if f.schema is type(cfg)), "?")
        raise ConfigError(f"family={cfg.family!r} does not match the experiment's schema (family {owner}): the "
                          f"family is set by experiment=<preset>, not overridden; allowed here: family={owner}")
    return family


def search_path() -> list[str]:
    """Hydra search path entries of the families whose presets live outside this package."""
    return [f"file://{family.config_dir.resolve()}" for family in families().values() if family.config_dir]


def register_schemas() -> None:
    """Put every family schema in Hydra's ConfigStore as ``schema/<name>`` (package _global_, with ``family`` set
    to the name) and register the resolvers the families' config files use."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for family in families().values():
        store.store(group="schema", name=family.name, node=family.schema(family=family.name), package="_global_")
        for name, function in family.resolvers:
            OmegaConf.register_new_resolver(name, function, replace=True)
