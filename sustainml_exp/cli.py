"""``sml-run``: the Hydra app. Bad input is caught by a preflight composition and reported in one line.

Hydra's own error output spans several lines and only appears once the job starts; the preflight composes
every job of the command line (sweeps expanded) with Hydra's compose API, converts it to the family's typed
schema and validates values, so ``sml-run G_R=0`` exits with status 2 and one line before any work. It also
checks that every results folder takes a file, and for Slurm sweeps the scheduler, so nothing is run or
submitted that would fail for want of either.

Exit status: 0 when every run is ok or skipped, 1 when a run failed (a multirun ends with a summary line naming
the failed run ids), 2 for bad input, 130 / 143 when SIGINT / SIGTERM ended it (one line; the interrupted run
writes no record, finished runs keep theirs).
"""

from __future__ import annotations

import contextlib
import os
import signal
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
from sustainml_exp.registry import family_of, get_family, register_schemas, search_path
from sustainml_exp.results import check_writable
from sustainml_exp.results.record import OK, OOM
from sustainml_exp.slurm import (
    SLURM_LAUNCHER,
    ArrayEnded,
    scheduler_problem,
    stop_waiting_when_array_ends,
    submitit_plugin_problem,
    wait_for_array,
)
from sustainml_exp.sweeps import PlannedJob, plan_job, summary

CONFIG_MODULE = "sustainml_exp.conf"
# sml-run's own flags, removed before Hydra parses the command line.
DRY_RUN_FLAG = "--dry-run"  # list the jobs (with run ids and which are done) and submit nothing
DETACH_FLAG = "--detach"  # run the command in the background, logging under <results_dir>/launcher_logs/
# Flags of a Hydra app whose value is the next argument; all others starting with '-' stand alone.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "--experimental-rerun"}
_SKIP_PREFLIGHT = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--info"}
_SHELL_COMPLETION_FLAGS = ("--shell-completion", "-sc")
_SHELL_COMPLETION_COMMANDS = ("install", "uninstall", "query")
# Exit status of a run ended by a signal: the shell's 128 + signal number.
_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _register() -> None:
    try:
        register_schemas()
    except UserError as exc:  # a family registered from outside that cannot be loaded
        print(f"sml-run: error: {exc}", file=sys.stderr)
        sys.exit(2)


_register()
# Part of the run and sweep folder names besides the microseconds: two sml-run processes started at the same moment
# must never share a folder.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


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


def unknown_key_message(key: str, schema: type | None) -> str:
    parent = key.rpartition(".")[0]
    # family is set by the preset, never typed
    allowed = [k for k in _schema_keys(schema, parent) if k != "family"] if schema is not None else []
    hint = f"; allowed keys{' under ' + parent if parent else ''}: {', '.join(allowed)}" if allowed else ""
    return f"unknown config key '{key}'{hint}"


def one_line_error(exc: BaseException, schema: type | None = None) -> str:
    """Turn a Hydra/OmegaConf/validation error into one line naming the key and what is allowed (the keys of
    ``schema``, the command's typed schema, for an unknown key)."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, UserError):
        return str(exc)
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        return unknown_key_message(str(cause.full_key), schema)
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


def with_search_path(overrides: list[str]) -> list[str]:
    """``overrides`` plus the search path of the families whose presets live outside this package (unless the
    command sets hydra.searchpath itself)."""
    extra = search_path()
    if not extra or any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
        return overrides
    return [*overrides, f"hydra.searchpath=[{','.join(extra)}]"]


def _compose(overrides: list[str], **kwargs: Any) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=with_search_path(overrides), **kwargs)


def _compose_typed(overrides: list[str]) -> tuple[Any, DictConfig]:
    cfg = _compose(overrides)
    return to_typed(cfg), cfg


def to_typed(cfg: DictConfig) -> Any:
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    typed = OmegaConf.to_object(job_cfg)
    family_of(typed)
    _refuse_added_keys(job_cfg, type(typed))
    typed.validate()
    return typed


def _refuse_added_keys(cfg: DictConfig, schema: type, node_type: type | None = None, path: str = "") -> None:
    """A key added with +key=value that the schema lacks: OmegaConf would set it on the dataclass (and the run id
    would change for a knob nothing reads), so it is refused like a mistyped one."""
    known = {f.name for f in fields(node_type or schema)}
    for key in cfg.keys():
        where = f"{path}{key}"
        if key not in known:
            raise UserError(unknown_key_message(where, schema))
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none() \
                and is_dataclass(OmegaConf.get_type(node)):
            _refuse_added_keys(node, schema, OmegaConf.get_type(node), f"{where}.")


def _command_schema(overrides: list[str]) -> type | None:
    """The typed schema of the preset a command line picks (None when the preset itself is the problem)."""
    preset = [o for o in overrides if o.lstrip("+").split("=", 1)[0] == "experiment"]
    try:
        return get_family(_compose(preset).family).schema
    except Exception:  # noqa: BLE001 - no hint rather than a second error
        return None


@dataclass
class CommandPlan:
    """The jobs a command line would run, each composed and validated, and where they would run."""

    jobs: list[tuple[list[str], Any, DictConfig]]  # (sweep overrides, typed config, job config)
    launcher: str  # choice of the hydra/launcher group
    partition: str | None  # Slurm partition; None: the cluster's default
    sweep_dir: Path | None  # the multirun's folder, resolved once (None for a single run)


def _launcher_name(hydra_overrides: list[str]) -> str:
    chosen = [o.split("=", 1)[1] for o in hydra_overrides if o.split("=", 1)[0] == "hydra/launcher"]
    return chosen[-1] if chosen else "basic"


def _hydra_config(overrides: list[str]) -> DictConfig:
    return _compose(overrides, return_hydra_config=True).hydra


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
        hydra_cfg = _hydra_config([*hydra_overrides, *sweep[0]])
        partition = hydra_cfg.launcher.partition if launcher == SLURM_LAUNCHER else None
        sweep_dir = Path(str(hydra_cfg.sweep.dir)) if multirun else None
        chdir = hydra_cfg.job.chdir
    except Exception as exc:  # noqa: BLE001 - any composition failure is bad input
        raise UserError(one_line_error(exc, _command_schema(user_overrides))) from exc
    if chdir:
        raise UserError("hydra.job.chdir=true is not allowed; allowed: false (sml-run keeps the directory it was "
                        "started in, so that results_dir, data_dir and file paths mean what they say; each run's "
                        "files are in its output folder already)")
    if launcher == SLURM_LAUNCHER and check_scheduler:
        problem = scheduler_problem(partition)
        if problem is not None:
            raise UserError(problem)
    return CommandPlan(jobs=jobs, launcher=launcher, partition=partition, sweep_dir=sweep_dir)


def check_results_writable(plan: CommandPlan) -> None:
    """Raise StorageError (one line) unless every job's record folder takes a file."""
    for folder in sorted({Path(typed.results_dir) / "runs" / typed.family for _, typed, _ in plan.jobs}):
        check_writable(folder)


def preflight(argv: list[str], *, check_scheduler: bool = True) -> str | None:
    """Return None when every job of the command line is valid, else the one-line error."""
    try:
        plan_command(argv, check_scheduler=check_scheduler)
    except UserError as exc:
        return str(exc)
    return None


def describe_plan(plan: CommandPlan) -> list[str]:
    """Lines of ``--dry-run``: one per job, with its run_id and whether a finished record makes it a skip."""
    where = plan.launcher + (f", partition {plan.partition}" if plan.partition else "")
    jobs = _planned_jobs(plan)
    lines = [f"  #{num} {'skip' if job.skip else 'run '} {job.run_id}  {' '.join(overrides) or '(defaults)'}"
             for num, (job, (overrides, _, _)) in enumerate(zip(jobs, plan.jobs))]
    head = (f"{len(plan.jobs)} job(s) (launcher: {where}), {sum(job.skip for job in jobs)} already done and skipped "
            "unless rerun=true; nothing submitted:")
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
    runtime = HydraConfig.get().runtime
    outcome = run_experiment(typed, config_dict, runtime.output_dir, experiment=runtime.choices.get("experiment"))
    if not outcome.skipped and outcome.record.status == OOM:
        print(f"sml-run: error: {outcome.record.error.partition(': ')[2]}", file=sys.stderr)
    done = outcome.skipped or (outcome.stored and outcome.record.status == OK)
    if not done and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt so that the same cleanup runs (no record, no temp
    file). Python's default for SIGTERM ends the process at once and skips it."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _experiments() -> list[str]:
    from importlib.resources import files

    return sorted(p.name.removesuffix(".yaml") for p in (files(CONFIG_MODULE) / "experiment").iterdir()
                  if p.name.endswith(".yaml"))


def _default_preset() -> str:
    """The preset conf/config.yaml's defaults list picks."""
    return str(_compose([], return_hydra_config=True).hydra.runtime.choices.experiment)


def usage() -> str:
    """sml-run's own part of --help (Hydra prints the config groups and the composed config after it)."""
    return f"""usage: sml-run [-m] [{DRY_RUN_FLAG} | {DETACH_FLAG}] [KEY=VALUE ...]

Runs an experiment and writes one JSON record per run under <results_dir>/runs/<family>/ (sml-tables builds
the tables from them). A run whose record is already ok is skipped unless rerun=true.

  experiment=NAME       {', '.join(_experiments())} (default: {_default_preset()})
  KEY=VALUE             any config key shown below, e.g. seed=3 epochs=5 G_R=64 results_dir=/shared/results
  -m, --multirun        sweep every combination of comma-separated values (-m G_R=2,4,8 seed=0,1); ends with
                        one summary line (ok, skipped, failed run ids) and exits 1 when any job failed
  -m hydra/launcher=slurm   submit the sweep as one Slurm job array and wait for it
  {DRY_RUN_FLAG}             list the jobs with their run ids, marking those already done; run nothing
  {DETACH_FLAG}              run the command in the background, logging to <results_dir>/launcher_logs/
  --cfg job             print the composed config and run nothing
  --hydra-help          Hydra's own flags (--shell-completion install=bash, --info, ...)

Exit status: 0 every run ok or skipped, 1 a run failed, 2 bad input (one line, nothing run), 130 / 143 ended by
SIGINT / SIGTERM (the interrupted run records nothing; finished runs keep their records).
"""


def _shell_completion_problem(argv: list[str]) -> str | None:
    """Hydra answers a --shell-completion without exactly one known subcommand with a traceback."""
    if not any(arg in _SHELL_COMPLETION_FLAGS for arg in argv):
        return None
    from hydra.core.plugins import Plugins
    from hydra.plugins.completion_plugin import CompletionPlugin

    shells = sorted(plugin.provides() for plugin in Plugins.instance().discover(CompletionPlugin))
    commands = [arg.split("=", 1) for arg in argv if arg.split("=", 1)[0] in _SHELL_COMPLETION_COMMANDS]
    if len(commands) == 1 and len(commands[0]) == 2 and commands[0][1] in shells:
        return None
    return (f"--shell-completion needs one of {', '.join(c + '=SHELL' for c in _SHELL_COMPLETION_COMMANDS)}, "
            f"SHELL one of: {', '.join(shells)} (e.g. eval \"$(sml-run --shell-completion install=bash)\")")


def _planned_jobs(plan: CommandPlan) -> list[PlannedJob]:
    from sustainml_exp.runner import finished_record, run_identity

    jobs = []
    for _, typed, cfg in plan.jobs:
        _, run_id = run_identity(typed, OmegaConf.to_container(cfg, resolve=True))
        jobs.append(plan_job(run_id, Path(typed.results_dir), typed.family,
                             skip=finished_record(typed, run_id) is not None))
    return jobs


def _quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value (a path may hold commas, which would make it a sweep)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _run(argv: list[str]) -> None:
    if any(arg in ("--help", "-h") for arg in argv):
        print(usage())
    dry_run, detached = DRY_RUN_FLAG in argv, DETACH_FLAG in argv
    argv = [a for a in argv if a not in (DRY_RUN_FLAG, DETACH_FLAG)]
    try:
        if dry_run and detached:
            raise UserError(f"{DRY_RUN_FLAG} and {DETACH_FLAG} exclude each other; pass one of them")
        problem = _shell_completion_problem(argv)
        if problem is not None:
            raise UserError(problem)
        plan = plan_command(argv, check_scheduler=not dry_run)
        if plan is not None and not dry_run:
            check_results_writable(plan)
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
    sweep = None
    if plan is not None and plan.sweep_dir is not None:
        # The folder resolved by the preflight is the one the jobs use, so the summary knows where to look.
        argv = [a for a in argv if not a.lstrip("+").startswith("hydra.sweep.dir=")]
        argv.append(f"hydra.sweep.dir={_quoted(str(plan.sweep_dir))}")
        sweep = _planned_jobs(plan)
    sys.argv = [sys.argv[0], *with_search_path(argv)]
    export_submit_git_state()
    slurm_sweep = sweep is not None and plan.launcher == SLURM_LAUNCHER
    status = 0
    try:
        with stop_waiting_when_array_ends(plan.sweep_dir) if slurm_sweep else contextlib.nullcontext():
            _task()
    except SystemExit as exc:
        if sweep is None:
            raise
        status = 1 if exc.code else 0
    except ArrayEnded:
        pass  # every task has left the queue; the records tell what each did
    if sweep is not None:
        if slurm_sweep:
            wait_for_array(plan.sweep_dir)  # the launcher stops waiting at the first task that left no result
        line, failed = summary(sweep, plan.sweep_dir)
        print(f"sml-run: {line}", file=sys.stderr)
        if failed or status:
            sys.exit(1)


def run_main() -> None:
    """``sml-run``; SIGINT and SIGTERM end it with one line and the shell's status for the signal."""
    argv = sys.argv[1:]
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _run(argv)
    except KeyboardInterrupt as exc:
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        slurm = _launcher_name(argv) == SLURM_LAUNCHER
        print(f"sml-run: interrupted by {signum.name}: the running job wrote no record, finished jobs keep theirs"
              + ("; Slurm tasks already submitted keep running (squeue lists them)" if slurm else ""),
              file=sys.stderr)
        sys.exit(_SIGNAL_EXIT[signum])
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    run_main()
