"""Energy meter: backend none, and carbontracker on a node without RAPL, GPU or network (this machine)."""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sustainml_exp.energy import EnergyConfig, EnergyReport, make_energy_meter
from sustainml_exp.energy import meter as meter_mod

SOURCE_RE = re.compile(
    r"^(rapl|nvml|apple_powermetrics|simulated_tdp:[0-9.]+W(\(ct_table(_mean)?\))?|unavailable:\S+)$"
)
REAL_SOURCES = {"rapl", "nvml", "apple_powermetrics"}
WALL_LIMIT_S = 30.0  # generous: a hang (network, NVML, sudo prompt) would blow far past it


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def run_cycle(cfg: EnergyConfig, log_dir: Path, device: str = "cpu", epochs: int = 2, epoch_s: float = 0.6):
    t0 = time.perf_counter()
    meter = make_energy_meter(cfg, log_dir, device)
    meter.start()
    measured_s = 0.0
    for _ in range(epochs):
        meter.epoch_start()
        e0 = time.perf_counter()
        busy(epoch_s)
        meter.epoch_end()
        measured_s += time.perf_counter() - e0
    report = meter.stop()
    return report, time.perf_counter() - t0, measured_s


def check_report(report: EnergyReport, cfg: EnergyConfig) -> None:
    assert isinstance(report, EnergyReport)
    assert report.energy_backend == "carbontracker"
    for source in (report.cpu_power_source, report.gpu_power_source):
        assert SOURCE_RE.match(source), source
    sources = {report.cpu_power_source, report.gpu_power_source}
    if math.isnan(report.energy_kwh):
        assert math.isnan(report.co2_g)
        assert any(s.startswith("unavailable:") for s in sources), "NaN energy must say why"
    else:
        assert math.isfinite(report.energy_kwh) and report.energy_kwh > 0, "never a silent 0"
        assert any(not s.startswith("unavailable:") for s in sources), "a figure needs a source"
        assert report.co2_g == pytest.approx(report.energy_kwh * cfg.carbon_intensity_g_per_kwh, rel=1e-12)


def test_backend_none_reports_nan(tmp_path):
    meter = make_energy_meter(EnergyConfig(backend="none"), tmp_path, "cpu")
    meter.start()
    meter.epoch_start()
    meter.epoch_end()
    report = meter.stop()
    assert report.energy_backend == "none"
    assert math.isnan(report.energy_kwh) and math.isnan(report.co2_g)
    assert report.cpu_power_source == report.gpu_power_source == "none"
    assert not any(tmp_path.iterdir())


def test_unknown_backend_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="energy.backend"):
        make_energy_meter(EnergyConfig(backend="codecarbon"), tmp_path, "cpu")


def test_import_does_not_load_carbontracker():
    code = "import sys, sustainml_exp.energy; assert 'carbontracker' not in sys.modules, 'heavy import'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_carbontracker_on_this_machine(tmp_path, capfd):
    cfg = EnergyConfig()
    report, wall, _ = run_cycle(cfg, tmp_path / "energy")
    assert wall < WALL_LIMIT_S
    check_report(report, cfg)
    assert report.gpu_power_source == "unavailable:no-gpu"  # device=cpu
    if report.cpu_power_source in REAL_SOURCES:
        assert report.energy_kwh != 0
    if not meter_mod.probe_rapl()[0] and sys.platform != "darwin":
        assert report.cpu_power_source.startswith(("simulated_tdp:", "unavailable:"))
    # carbontracker's chatter stays in its log_dir, not on the console.
    out, err = capfd.readouterr()
    assert "CarbonTracker" not in out + err and "Using simulated" not in out + err
    logs = sorted(p.name for p in (tmp_path / "energy").iterdir())
    assert any(name.endswith("_carbontracker_output.log") for name in logs), logs
    # The constructor-scoped patches are gone again.
    from carbontracker import loggerutil
    from carbontracker.components import component
    from carbontracker.emissions.intensity.intensity import IntensityService

    assert IntensityService._fetch_geo_location.__name__ == "_fetch_geo_location"
    assert loggerutil.Logger._setup.__name__ == "_setup"
    assert component.SimulatedCPUHandler.__module__ == "carbontracker.components.cpu.sim_cpu"


def test_simulated_tdp_energy_is_tdp_times_util_times_time(tmp_path):
    if meter_mod.probe_rapl()[0] or sys.platform == "darwin":
        pytest.skip("real CPU counters here; the simulated mode is not used")
    from carbontracker.constants import PUE_2023

    cfg = EnergyConfig(cpu_tdp_w=65.0, carbon_intensity_g_per_kwh=100.0)
    report, _, measured_s = run_cycle(cfg, tmp_path, epochs=2, epoch_s=0.8)
    assert report.cpu_power_source == "simulated_tdp:65W"
    expected = 65.0 * meter_mod.SIM_CPU_UTIL * measured_s * PUE_2023 / 3.6e6  # carbontracker's total includes PUE
    assert report.energy_kwh == pytest.approx(expected, rel=0.15)
    assert report.co2_g == pytest.approx(report.energy_kwh * 100.0)


def test_cuda_device_without_nvml_measures_cpu_only(tmp_path):
    if meter_mod._probe_nvml()[0]:
        pytest.skip("NVML works here")
    cfg = EnergyConfig()
    report, wall, _ = run_cycle(cfg, tmp_path, device="cuda", epochs=1)
    assert wall < WALL_LIMIT_S
    check_report(report, cfg)
    assert re.match(r"unavailable:(no-)?nvml", report.gpu_power_source), report.gpu_power_source


def test_no_network_is_touched_and_nothing_hangs(tmp_path, monkeypatch):
    calls: list[str] = []

    def refuse(name):
        def _refuse(*args, **kwargs):
            calls.append(name)
            raise OSError(f"network disabled in test ({name})")

        return _refuse

    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    import geocoder

    monkeypatch.setattr(geocoder, "ip", refuse("geocoder.ip"))
    cfg = EnergyConfig(timeout_s=10.0)
    report, wall, _ = run_cycle(cfg, tmp_path, epochs=1)
    assert wall < WALL_LIMIT_S
    check_report(report, cfg)
    assert calls == []


@pytest.mark.parametrize(
    "target, exc",
    [
        ("CarbonTracker.__init__", RuntimeError),
        ("CarbonTracker.epoch_start", RuntimeError),
        ("CarbonTracker.epoch_end", SystemExit),  # what carbontracker raises itself without ignore_errors
        ("CarbonTracker.stop", RuntimeError),
        ("CarbonTrackerThread._collect_measurements", RuntimeError),  # error inside its monitor thread
    ],
)
def test_carbontracker_failures_are_swallowed(tmp_path, monkeypatch, target, exc):
    from carbontracker import tracker

    cls_name, attr = target.split(".")

    def broken(*args, **kwargs):
        raise exc("injected meter failure")

    monkeypatch.setattr(getattr(tracker, cls_name), attr, broken)
    cfg = EnergyConfig(timeout_s=5.0)
    report, wall, _ = run_cycle(cfg, tmp_path, epochs=1, epoch_s=1.2)
    assert wall < WALL_LIMIT_S
    check_report(report, cfg)
    assert math.isnan(report.energy_kwh)
    assert report.cpu_power_source.startswith("unavailable:")


@pytest.mark.parametrize("target", ["CarbonTracker.__init__", "CarbonTracker.epoch_end"])
def test_hanging_carbontracker_is_cut_off(tmp_path, monkeypatch, target):
    from carbontracker import tracker

    cls_name, attr = target.split(".")
    released = threading.Event()

    def hang(*args, **kwargs):
        released.wait(10.0)

    monkeypatch.setattr(getattr(tracker, cls_name), attr, hang)
    cfg = EnergyConfig(timeout_s=0.3)
    meter = make_energy_meter(cfg, tmp_path, "cpu")
    try:
        t0 = time.perf_counter()
        meter.start()
        meter.epoch_start()
        meter.epoch_end()
        report = meter.stop()
        # Bounded by timeout_s per blocking call (plus the uncached TDP lookup a first start may need).
        assert time.perf_counter() - t0 < 1.5 + 2 * cfg.timeout_s
        assert math.isnan(report.energy_kwh)
        assert report.cpu_power_source.startswith("unavailable:timeout(")
    finally:
        # A constructor left hanging holds the process-wide patch lock; free it so the next meter can start.
        released.set()
        assert meter_mod._PATCH_LOCK.acquire(timeout=10.0)
        meter_mod._PATCH_LOCK.release()


def test_stop_without_start_and_twice(tmp_path):
    meter = make_energy_meter(EnergyConfig(), tmp_path, "cpu")
    report = meter.stop()
    assert math.isnan(report.energy_kwh) and report.cpu_power_source == "unavailable:not-started"
    assert meter.stop() is report


def test_open_epoch_is_closed_by_stop_and_short_epochs_are_never_zero(tmp_path):
    cfg = EnergyConfig()
    meter = make_energy_meter(cfg, tmp_path, "cpu")
    meter.start()
    meter.epoch_start()  # no work at all, and no epoch_end: stop() must close it
    report = meter.stop()
    check_report(report, cfg)
    assert report.energy_kwh != 0


def test_energy_line_fallback_regex():
    text = (
        "2026-01-01 00:00:00 - CarbonTracker: \nActual consumption:\n\tTime:\t0:00:03\n"
        "\tEnergy:\t0.000079015394529 kWh\n\tCO2eq:\t0.035 g\n2026-01-01 00:00:00 - CarbonTracker: Finished"
    )
    match = meter_mod._ENERGY_LINE.search(text)
    assert match and float(match.group(1)) == pytest.approx(7.9015394529e-05)


def _fake_rapl(root: Path, energy: str = "123456") -> Path:
    for domain, name in [("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"), ("intel-rapl:0:1", "dram")]:
        (root / domain).mkdir(parents=True)
        (root / domain / "name").write_text(name + "\n")
        (root / domain / "energy_uj").write_text(energy + "\n")
    return root


def test_probe_rapl(tmp_path, monkeypatch):
    assert meter_mod.probe_rapl(str(tmp_path / "missing")) == (False, "no-rapl")
    (tmp_path / "empty").mkdir()
    assert meter_mod.probe_rapl(str(tmp_path / "empty")) == (False, "no-rapl-domains")
    rapl = _fake_rapl(tmp_path / "rapl")
    assert meter_mod.probe_rapl(str(rapl)) == (True, "rapl")
    real_open = open

    def no_permission(path, *args, **kwargs):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(meter_mod, "open", no_permission, raising=False)
    assert meter_mod.probe_rapl(str(rapl)) == (False, "rapl-permission")


def test_unreadable_rapl_falls_back_to_simulated_not_to_silent_zero(tmp_path, monkeypatch):
    # carbontracker would pick IntelCPU here (its available() only lists the folder) and record 0 W.
    from carbontracker.components.cpu import intel

    monkeypatch.setattr(intel.IntelCPU, "available", lambda self: True)
    monkeypatch.setattr(meter_mod, "probe_rapl", lambda: (False, "rapl-permission"))
    cfg = EnergyConfig(cpu_tdp_w=40.0)
    report, _, _ = run_cycle(cfg, tmp_path, epochs=1)
    check_report(report, cfg)
    assert report.cpu_power_source == "simulated_tdp:40W"
    assert report.energy_kwh > 0
