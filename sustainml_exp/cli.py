"""``sml-run``: the Hydra app. Bad input is caught by a preflight composition and reported in one line.

Hydra's own error output spans several lines and only appears once the job starts; the preflight composes
every job of the command line (sweeps expanded) with Hydra's compose API, converts it to the family's typed
schema and validates values, so ``sml-run G_R=0`` exits with status 2 and one line before any work. For Slurm
sweeps it also checks the scheduler, so nothing is submitted that would fail on a compute node.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sustainml_exp.errors import UserError
from sustainml_exp.provenance import export_submit_git_state
from sustainml_exp.registry import get_family, register_schemas
from sustainml_exp.slurm import SLURM_LAUNCHER, scheduler_problem, submitit_plugin_problem

CONFIG_MODULE = "sustainml_exp.conf"
# sml-run's own flags, removed before Hydra parses the command line.
DRY_RUN_FLAG = "--dry-run"  # list the jobs (with run ids and which are done) and submit nothing
DETACH_FLAG = "--detach"  # run the command in the background, logging under <results_dir>/launcher_logs/
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


@dataclass
class CommandPlan:
    """The jobs a command line would run, each composed and validated, and where they would run."""

    jobs: list[tuple[list[str], Any, DictConfig]]  # (sweep overrides, typed config, job config)
    launcher: str  # choice of the hydra/launcher group
    partition: str | None  # Slurm partition; None: the cluster's default


def _launcher_name(hydra_overrides: list[str]) -> str:
    chosen = [o.split("=", 1)[1] for o in hydra_overrides if o.split("=", 1)[0] == "hydra/launcher"]
    return chosen[-1] if chosen else "basic"


def _launcher_config(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True).hydra.launcher


def plan_command(argv: list[str], *, check_scheduler: bool = True) -> CommandPlan | None:
    """Compose and validate every job of a command line; raise UserError with one line on bad input.

    None for commands that run no job (--help, --cfg ...). With hydra/launcher=slurm it also checks, unless
    ``check_scheduler`` is false, that the plugin, sbatch, slurmctld and the partition are all there.
    """
    overrides, multirun, skip = _split_argv(argv)
    if skip:
        return None
    user_overrides = [o for o in overrides if not o.lstrip("~+").startswith("hydra")]
    hydra_overrides = [o for o in overrides if o.lstrip("~+").startswith("hydra")]
    experiment = next((o.split("=", 1)[1] for o in user_overrides if o.startswith("experiment=")), "gnn_blockquant")
    launcher = _launcher_name(hydra_overrides)
    if launcher == SLURM_LAUNCHER:
        if not multirun:
            raise UserError("hydra/launcher=slurm only applies to sweeps; add -m (sml-run -m hydra/launcher=slurm ...)")
        problem = submitit_plugin_problem()
        if problem is not None:
            raise UserError(problem)
    try:
        sweep = _expand_sweep(user_overrides) if multirun else [user_overrides]
        jobs = [(job, *_compose_typed(job)) for job in sweep]
        partition = None
        if launcher == SLURM_LAUNCHER:
            partition = _launcher_config([*hydra_overrides, *sweep[0]]).partition
    except Exception as exc:  # noqa: BLE001 - any composition failure is bad input
        raise UserError(one_line_error(exc, experiment)) from exc
    if launcher == SLURM_LAUNCHER and check_scheduler:
        problem = scheduler_problem(partition)
        if problem is not None:
            raise UserError(problem)
    return CommandPlan(jobs=jobs, launcher=launcher, partition=partition)


def preflight(argv: list[str], *, check_scheduler: bool = True) -> str | None:
    """Return None when every job of the command line is valid, else the one-line error."""
    try:
        plan_command(argv, check_scheduler=check_scheduler)
    except UserError as exc:
        return str(exc)
    return None


def describe_plan(plan: CommandPlan) -> list[str]:
    """Lines of ``--dry-run``: one per job, with its run_id and whether a finished record makes it a skip."""
    from sustainml_exp.runner import finished_record, run_identity

    where = plan.launcher + (f", partition {plan.partition}" if plan.partition else "")
    lines, done = [], 0
    for num, (overrides, typed, cfg) in enumerate(plan.jobs):
        _, run_id = run_identity(OmegaConf.to_container(cfg, resolve=True), typed.seed)
        skip = finished_record(typed, run_id) is not None
        done += skip
        lines.append(f"  #{num} {'skip' if skip else 'run '} {run_id}  {' '.join(overrides) or '(defaults)'}")
    head = (f"{len(plan.jobs)} job(s) (launcher: {where}), {done} already done and skipped unless rerun=true; "
            "nothing submitted:")
    return [head, *lines]


def detach(argv: list[str], plan: CommandPlan) -> Path:
    """Run the same command in a new session, logging to a file, so closing the terminal does not stop it."""
    import subprocess
    from datetime import datetime

    results_dir = Path(plan.jobs[0][1].results_dir)
    log_path = results_dir / "launcher_logs" / f"sml-run-{datetime.now():%Y-%m-%d_%H-%M-%S}-{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "sustainml_exp.cli", *argv], stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    return log_path


@hydra.main(version_base="1.3", config_path="pkg://sustainml_exp.conf", config_name="config")
def _task(cfg: DictConfig) -> None:
    from sustainml_exp.runner import run_experiment

    typed = to_typed(cfg)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    record = run_experiment(typed, config_dict, HydraConfig.get().runtime.output_dir)
    if record["status"] == "oom":
        print(f"sml-run: error: {record['error'].partition(': ')[2]}", file=sys.stderr)
    if record["status"] != "ok" and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)


def run_main() -> None:
    argv = sys.argv[1:]
    dry_run, detached = DRY_RUN_FLAG in argv, DETACH_FLAG in argv
    argv = [a for a in argv if a not in (DRY_RUN_FLAG, DETACH_FLAG)]
    try:
        if dry_run and detached:
            raise UserError(f"{DRY_RUN_FLAG} and {DETACH_FLAG} exclude each other; pass one of them")
        plan = plan_command(argv, check_scheduler=not dry_run)
    except UserError as exc:
        print(f"sml-run: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if plan is not None and dry_run:
        print("\n".join(describe_plan(plan)))
        return
    if plan is not None and detached:
        log_path = detach(argv, plan)
        print(f"sml-run: running detached; follow it with: tail -f {log_path}")
        return
    sys.argv = [sys.argv[0], *argv]
    export_submit_git_state()
    _task()


if __name__ == "__main__":
    run_main()
