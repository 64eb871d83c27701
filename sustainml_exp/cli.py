"""``sml-run``: the Hydra app. Bad input is caught by a preflight composition and reported in one line.

Hydra's own error output spans several lines and only appears once the job starts; the preflight composes
every job of the command line (sweeps expanded) with Hydra's compose API, converts it to the family's typed
schema and validates values, so ``sml-run G_R=0`` exits with status 2 and one line before any work.
"""

from __future__ import annotations

import sys
from dataclasses import fields, is_dataclass
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sustainml_exp.errors import UserError
from sustainml_exp.registry import get_family, register_schemas

CONFIG_MODULE = "sustainml_exp.conf"
# Flags of a Hydra app whose value is the next argument; all others starting with '-' stand alone.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "--experimental-rerun"}
_SKIP_PREFLIGHT = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--info"}

register_schemas()


def _split_argv(argv: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun, skip) from a Hydra command line."""
    overrides, multirun, skip = [], False, False
    args = iter(argv)
    for arg in args:
        if arg in _SKIP_PREFLIGHT or arg.startswith("--info="):
            skip = True
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in _FLAGS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun, skip


def _schema_keys(schema: Any, path: str) -> list[str]:
    node = schema
    for part in [p for p in path.split(".") if p]:
        match = [f for f in fields(node) if f.name == part] if is_dataclass(node) else []
        if not match:
            return []
        node = match[0].type if isinstance(match[0].type, type) else match[0].default_factory  # type: ignore[assignment]
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def one_line_error(exc: BaseException, experiment: str | None = None) -> str:
    """Turn a Hydra/OmegaConf/validation error into one line naming the key and what is allowed."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, UserError):
        return str(exc)
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        key = str(cause.full_key)
        parent = key.rpartition(".")[0]
        allowed = []
        if experiment is not None:
            try:
                allowed = _schema_keys(get_family(experiment).schema, parent)
            except UserError:
                pass
        hint = f"; allowed keys{' under ' + parent if parent else ''}: {', '.join(allowed)}" if allowed else ""
        return f"unknown config key '{key}'{hint}"
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(getattr(cause, 'msg', cause)).splitlines()[0]}"
    if isinstance(exc, MissingConfigException) and getattr(exc, "options", None) is not None:
        missing = getattr(exc, "missing_cfg_file", "")
        return f"could not find config '{missing}'; allowed: {', '.join(sorted(exc.options))}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(exc).__name__


def _expand_sweep(overrides: list[str]) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [job for batch in batches for job in batch] or [[]]


def _compose_typed(overrides: list[str]) -> tuple[Any, DictConfig]:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return to_typed(cfg), cfg


def to_typed(cfg: DictConfig) -> Any:
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    typed = OmegaConf.to_object(job_cfg)
    typed.validate()
    return typed


def preflight(argv: list[str]) -> str | None:
    """Return None when every job of the command line is valid, else the one-line error."""
    overrides, multirun, skip = _split_argv(argv)
    if skip:
        return None
    user_overrides = [o for o in overrides if not o.lstrip("~+").startswith("hydra")]
    experiment = next((o.split("=", 1)[1] for o in user_overrides if o.startswith("experiment=")), "gnn_blockquant")
    try:
        jobs = _expand_sweep(user_overrides) if multirun else [user_overrides]
        for job in jobs:
            _compose_typed(job)
    except Exception as exc:  # noqa: BLE001 - any composition failure is bad input
        return one_line_error(exc, experiment)
    return None


@hydra.main(version_base="1.3", config_path="pkg://sustainml_exp.conf", config_name="config")
def _task(cfg: DictConfig) -> None:
    from sustainml_exp.runner import run_experiment

    typed = to_typed(cfg)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    record = run_experiment(typed, config_dict, HydraConfig.get().runtime.output_dir)
    if record["status"] != "ok" and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)


def run_main() -> None:
    error = preflight(sys.argv[1:])
    if error is not None:
        print(f"sml-run: error: {error}", file=sys.stderr)
        sys.exit(2)
    _task()


if __name__ == "__main__":
    run_main()
