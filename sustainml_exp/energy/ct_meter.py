"""The ``carbontracker`` energy meter: carbontracker behind bounded, failure-swallowing, offline and quiet calls.

Every call that could block runs in a daemon worker and is waited on for at most ``EnergyConfig.timeout_s``.

What carbontracker 2.4.7 does, read from its source, and how this module deals with it (the internals it patches
are checked by tests/test_energy.py::test_patched_carbontracker_internals_exist; pyproject.toml pins the version)
Network
    ``CarbonTracker.__init__`` builds ``IntensityService`` synchronously, and its constructor calls
    ``geocoder.ip("me")``: a plain-HTTP request to ipinfo.io (requests timeout 5 s, DNS resolution unbounded;
    it also sends the node's public IP to a third party). That is the only network access when no ``api_keys``
    are given: the intensity fetchers (electricitymaps, carbonintensity.org.uk, energidataservice) are only
    built from ``api_keys``, and with none the 15-minute intensity thread and the final CO2 computation use a
    static default. So we pass ``api_keys=None`` and, *only while the constructor runs* and under a module lock,
    replace ``IntensityService._fetch_geo_location`` by "no location" (``unittest.mock.patch.object``). If a
    future carbontracker renames that method the patch raises, the meter reports ``unavailable:start-error...``
    and nothing reaches the network. carbontracker's own CO2 figure (world/country average) is ignored.
Components
    probes.py decides which of CPU and GPU can be measured, and how (counters or simulated TDP); the GPU is measured
    only when the run's device is ``cuda``.
Errors and threads
    Without ``ignore_errors=True`` carbontracker calls ``sys.exit(70)`` (main thread) or ``os._exit(70)`` (its
    monitor thread) on any internal error; we always pass ``ignore_errors=True`` and detect that it stopped
    itself (``deleted``). The constructor starts two daemon threads: power sampling every ``update_interval``
    (1 s; RAPL sampling itself sleeps 1 s) while an epoch is open, and the 900 s intensity refresher (offline
    here). ``stop()`` joins the sampling thread without a timeout.
Output
    Its loggers print to stdout (errors always, results when ``verbose > 0``) and the simulated handlers
    ``print`` from their ``init``. We pass ``verbose=0`` and, only during construction, wrap
    ``loggerutil.Logger._setup`` to drop its console handlers and substitute silent subclasses of the simulated
    handlers. Everything carbontracker says goes to ``log_dir``: ``<prefix>_*_carbontracker.log`` (per-epoch
    power), ``*_carbontracker_output.log`` (totals), ``*_carbontracker_err.log`` (warnings/errors); ct_logs.py
    reads the totals back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sustainml_exp.energy import probes
from sustainml_exp.energy.config import EnergyConfig
from sustainml_exp.energy.ct_logs import read_totals
from sustainml_exp.energy.meter import NAN, EnergyReport
from sustainml_exp.energy.probes import slug

log = logging.getLogger("sustainml_exp.energy")

# Larger than any real epoch count, so carbontracker never decides on its own that monitoring is over.
_MANY_EPOCHS = 10**9
# Serialises the scoped monkeypatches around carbontracker's constructor (two meters starting at once).
_PATCH_LOCK = threading.Lock()


@dataclass
class _Plan:
    components: str  # carbontracker's components= ("cpu", "gpu", "gpu,cpu")
    ct_kwargs: dict[str, Any]
    sources: dict[str, str]  # "cpu"/"gpu" -> source string
    notes: list[tuple[int, str]]  # (logging level, message) to log once started


class _CallFailed(Exception):
    pass


class CarbonTrackerMeter:
    """carbontracker behind bounded, failure-swallowing calls. Use via ``make_energy_meter``."""

    def __init__(self, cfg: EnergyConfig, log_dir: Path, device: str) -> None:
        self._cfg = cfg
        self._log_dir = Path(log_dir)
        self._device = device
        try:
            timeout = float(cfg.timeout_s)
        except (TypeError, ValueError):
            timeout = 10.0
        self._timeout = timeout if math.isfinite(timeout) and timeout > 0 else 10.0
        self._prefix = f"sml{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self._ct: Any = None
        self._loggers: list[logging.Logger] = []
        self._std_log: Optional[str] = None
        self._out_log: Optional[str] = None
        self._plan: Optional[_Plan] = None
        self._failure: Optional[str] = None  # first failure; after it the meter does nothing
        self._timed_out = False
        self._warned = False
        self._started = False
        self._epoch_open = False
        self._epochs_done = 0
        self._report: Optional[EnergyReport] = None

    # ---- public API ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started or self._report is not None:
            return
        self._started = True
        try:
            result = self._bounded("start", self._start_worker, on_late=self._discard_late_start)
        except _CallFailed:
            return
        plan, ct, loggers, std_log, out_log = result
        self._plan, self._ct, self._loggers = plan, ct, loggers
        self._std_log, self._out_log = std_log, out_log
        for level, note in plan.notes:
            log.log(level, "energy: %s", note)
        if ct is None:
            log.warning("energy: nothing can be measured here (cpu %s, gpu %s); energy_kwh will be NaN",
                        plan.sources.get("cpu"), plan.sources.get("gpu"))

    def epoch_start(self) -> None:
        if self._ct is None or self._failure or self._epoch_open or self._report is not None:
            return
        with contextlib.suppress(_CallFailed):
            self._bounded("epoch_start", self._ct.epoch_start)
            self._epoch_open = True

    def epoch_end(self) -> None:
        if self._ct is None or self._failure or not self._epoch_open:
            return
        self._epoch_open = False
        with contextlib.suppress(_CallFailed):
            self._bounded("epoch_end", self._ct.epoch_end)
            self._epochs_done += 1

    def stop(self) -> EnergyReport:
        if self._report is not None:
            return self._report
        try:
            if self._epoch_open:
                self.epoch_end()
            report = self._finish()
        except Exception as exc:  # noqa: BLE001 - the meter must never take the run down
            self._warn_once("stop", f"{type(exc).__name__}: {exc}")
            report = self._unavailable(f"error(stop):{slug(type(exc).__name__)}")
        finally:
            if not self._timed_out:
                self._close_logs()
        self._report = report
        return report

    # ---- start -------------------------------------------------------------------------------------------

    def _start_worker(self) -> tuple[_Plan, Any, list[logging.Logger], Optional[str], Optional[str]]:
        plan = self._make_plan()
        if not plan.components:
            return plan, None, [], None, None
        ct, loggers = self._construct(plan)
        std_log = _file_of(loggers[0]) if loggers else None
        out_log = _file_of(loggers[1]) if len(loggers) > 1 else None
        if getattr(ct, "deleted", False):
            raise RuntimeError("carbontracker stopped itself while starting")
        return plan, ct, loggers, std_log, out_log

    def _make_plan(self) -> _Plan:
        notes: list[tuple[int, str]] = []
        sources: dict[str, str] = {}
        ct_kwargs: dict[str, Any] = {}
        names: list[str] = []

        if self._device.startswith("cuda"):
            ok, why = probes.probe_nvml()
            sources["gpu"] = "nvml" if ok else f"unavailable:{why}"
            if ok:
                names.append("gpu")
            else:
                notes.append((logging.WARNING, f"device={self._device} but GPU power cannot be read ({why}); "
                                               "energy_kwh leaves the GPU out"))
        else:
            sources["gpu"] = "unavailable:no-gpu"

        ok, why = probes.probe_rapl()
        if ok:
            sources["cpu"] = "rapl"
        elif platform.system() == "Darwin" and probes.probe_powermetrics(self._timeout)[0]:
            sources["cpu"] = "apple_powermetrics"
        else:
            if self._cfg.cpu_tdp_w is not None:
                name, tdp, origin = "configured CPU", float(self._cfg.cpu_tdp_w), ""
            else:
                try:
                    name, tdp, origin = probes.ct_table_tdp()
                except Exception as exc:  # noqa: BLE001 - no TDP -> CPU unavailable, not a failed meter
                    name, tdp, origin = "", None, ""
                    why = f"{why}-tdp-lookup-{slug(type(exc).__name__)}"
            if tdp is not None and math.isfinite(tdp) and tdp > 0:
                ct_kwargs = {"sim_cpu": name, "sim_cpu_tdp": tdp, "sim_cpu_util": probes.SIM_CPU_UTIL}
                sources["cpu"] = f"simulated_tdp:{tdp:g}W" + (f"({origin})" if origin else "")
                origin_text = origin or "energy.cpu_tdp_w"
                notes.append((logging.INFO, f"no readable CPU power counter ({why}); CPU power simulated as "
                                            f"{probes.SIM_CPU_UTIL:g} x {tdp:g} W TDP ({origin_text}; {name})"))
            else:
                sources["cpu"] = f"unavailable:{why}-no-tdp"
        if not sources["cpu"].startswith("unavailable:"):
            names.append("cpu")
        return _Plan(",".join(names), ct_kwargs, sources, notes)

    def _construct(self, plan: _Plan) -> tuple[Any, list[logging.Logger]]:
        from unittest import mock

        from carbontracker import loggerutil
        from carbontracker.components import component as ct_component
        from carbontracker.emissions.intensity import intensity as ct_intensity
        from carbontracker.tracker import CarbonTracker

        captured: list[logging.Logger] = []
        original_setup = loggerutil.Logger._setup  # noqa: SLF001

        def quiet_setup(logger_self: Any, *args: Any, **kwargs: Any) -> Any:
            loggers = original_setup(logger_self, *args, **kwargs)
            for lg in loggers:
                for handler in list(lg.handlers):
                    if type(handler) is logging.StreamHandler:  # console; FileHandlers are subclasses, kept
                        lg.removeHandler(handler)
            captured.extend(loggers)
            return loggers

        def no_location(service_self: Any) -> None:
            return None  # offline: replaces geocoder.ip("me")

        if not _PATCH_LOCK.acquire(timeout=self._timeout):
            raise TimeoutError("another energy meter is starting")
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(mock.patch.object(ct_intensity.IntensityService, "_fetch_geo_location",
                                                      no_location))
                stack.enter_context(mock.patch.object(loggerutil.Logger, "_setup", quiet_setup))
                for attr in ("SimulatedCPUHandler", "SimulatedGPUHandler"):
                    stack.enter_context(mock.patch.object(ct_component, attr,
                                                          _silent_handler(getattr(ct_component, attr))))
                ct = CarbonTracker(
                    epochs=_MANY_EPOCHS,
                    epochs_before_pred=0,  # no prediction output
                    monitor_epochs=-1,
                    update_interval=1,
                    interpretable=True,  # parser.get_consumption only matches totals followed by equivalents
                    stop_and_confirm=False,
                    ignore_errors=True,  # otherwise sys.exit(70) / os._exit(70) on any meter error
                    components=plan.components,
                    devices_by_pid=False,
                    log_dir=str(self._log_dir),
                    log_file_prefix=self._prefix,
                    verbose=0,
                    decimal_precision=15,
                    api_keys=None,  # no carbon-intensity API
                    **plan.ct_kwargs,
                )
        finally:
            _PATCH_LOCK.release()
        return ct, captured

    def _discard_late_start(self, result: Any) -> None:
        """start() gave up waiting but the worker finished later: shut that tracker down."""
        _plan, ct, loggers, _std, _out = result
        if ct is not None:
            with contextlib.suppress(BaseException):
                ct.stop()
        _close_loggers(loggers)

    # ---- stop --------------------------------------------------------------------------------------------

    def _finish(self) -> EnergyReport:
        if not self._started:
            return self._unavailable("not-started")
        if self._failure:
            self._release_after_failure()
            return self._unavailable(self._failure)
        if self._plan is None:
            return self._unavailable("not-started")
        if self._ct is None:  # nothing measurable: the plan's sources say why
            return self._report_from(NAN, dict(self._plan.sources))
        ct = self._ct
        stopped_itself = bool(getattr(ct, "deleted", False))
        try:
            self._bounded("stop", ct.stop)
        except _CallFailed:
            return self._unavailable(self._failure or "error(stop)")
        if stopped_itself:
            self._warn_once("monitoring", "carbontracker stopped itself after an internal error")
            return self._unavailable("carbontracker-error")
        if self._epochs_done == 0:
            return self._unavailable("no-epochs")
        try:
            energy, powers = self._read_logs()
        except Exception as exc:  # noqa: BLE001
            self._warn_once("reading logs", f"{type(exc).__name__}: {exc}")
            return self._unavailable(f"log-parse({slug(type(exc).__name__)})")

        sources = dict(self._plan.sources)
        measured = []
        for comp in self._plan.components.split(","):
            values = [v for epoch in powers.get(comp, []) for v in epoch]
            if not any(math.isfinite(v) and v > 0 for v in values):
                sources[comp] = f"unavailable:no-samples({sources[comp]})"
            else:
                measured.append(comp)
        if energy is None or not math.isfinite(energy) or energy <= 0 or not measured:
            if energy is not None and energy == 0:
                for comp in measured:
                    sources[comp] = f"unavailable:zero-reading({sources[comp]})"
            self._warn_once("totals", f"no usable energy total (energy={energy}, sources={sources})")
            energy = NAN
        return self._report_from(float(energy), sources)

    def _read_logs(self) -> tuple[Optional[float], dict[str, list[list[float]]]]:
        if not self._out_log or not self._std_log:
            raise FileNotFoundError(f"carbontracker log files not found under {self._log_dir}")
        for lg in self._loggers:
            for handler in lg.handlers:
                handler.flush()
        return read_totals(self._out_log, self._std_log)

    # ---- helpers -----------------------------------------------------------------------------------------

    def _report_from(self, energy_kwh: float, sources: dict[str, str]) -> EnergyReport:
        intensity = float(self._cfg.carbon_intensity_g_per_kwh)
        return EnergyReport(
            energy_kwh=energy_kwh,
            co2_g=energy_kwh * intensity,
            energy_backend="carbontracker",
            cpu_power_source=sources.get("cpu", "unavailable:unknown"),
            gpu_power_source=sources.get("gpu", "unavailable:unknown"),
        )

    def _unavailable(self, reason: str) -> EnergyReport:
        sources = {}
        for comp in ("cpu", "gpu"):
            planned = self._plan.sources.get(comp, "") if self._plan else ""
            # Keep a component's own reason (e.g. no-gpu); otherwise say why the run has no figure.
            sources[comp] = planned if planned.startswith("unavailable:") else f"unavailable:{reason}"
        return self._report_from(NAN, sources)

    def _bounded(self, what: str, fn: Callable[[], Any], on_late: Optional[Callable[[Any], None]] = None) -> Any:
        """Run fn in a daemon thread, wait at most timeout_s; on timeout or error: record, warn once, raise
        _CallFailed (caught by the public methods)."""
        box: dict[str, Any] = {}
        done = threading.Event()
        lock = threading.Lock()
        abandoned = [False]

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - includes carbontracker's SystemExit
                box["error"] = exc
            with lock:
                done.set()
                late = abandoned[0]
            if late and on_late is not None and "value" in box:
                with contextlib.suppress(BaseException):
                    on_late(box["value"])

        worker = threading.Thread(target=target, name=f"sustainml-energy-{what}", daemon=True)
        worker.start()
        done.wait(self._timeout)
        with lock:
            finished = done.is_set()
            if not finished:
                abandoned[0] = True
        if not finished:
            self._timed_out = True
            self._fail(what, f"timeout({what})", f"no answer within timeout_s={self._timeout:g}")
        if "error" in box:
            exc = box["error"]
            self._fail(what, f"error({what}):{slug(type(exc).__name__)}", f"{type(exc).__name__}: {exc}")
        return box.get("value")

    def _fail(self, what: str, reason: str, detail: str) -> None:
        if self._failure is None:
            self._failure = reason
        self._warn_once(what, detail)
        raise _CallFailed(reason)

    def _warn_once(self, what: str, detail: str) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning("energy meter (carbontracker) failed in %s: %s; the run continues, energy_kwh=NaN "
                    "(carbontracker logs: %s)", what, detail, self._log_dir)

    def _release_after_failure(self) -> None:
        """Best effort, never waited on: let carbontracker's threads end after a failed call."""
        ct = self._ct
        if ct is None or self._timed_out:
            return

        def stop_quietly() -> None:
            with contextlib.suppress(BaseException):
                ct.stop()

        threading.Thread(target=stop_quietly, name="sustainml-energy-release", daemon=True).start()

    def _close_logs(self) -> None:
        _close_loggers(self._loggers)
        self._loggers = []


def _silent_handler(cls: type) -> type:
    """Subclass of carbontracker's Simulated{CPU,GPU}Handler whose init() logs instead of printing."""

    class Silent(cls):  # type: ignore[misc, valid-type]
        def init(self) -> None:
            log.debug("carbontracker simulated handler active: %s", self.devices())

    Silent.__name__ = Silent.__qualname__ = cls.__name__
    return Silent


def _file_of(logger: logging.Logger) -> Optional[str]:
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def _close_loggers(loggers: list[logging.Logger]) -> None:
    """Close carbontracker's file handlers (it never does); a NullHandler keeps late records off stderr."""
    for lg in loggers:
        old = list(lg.handlers)
        lg.addHandler(logging.NullHandler())
        for handler in old:
            with contextlib.suppress(Exception):
                lg.removeHandler(handler)
                handler.close()
