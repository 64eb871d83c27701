"""Compile every Triton kernel configuration the project launches for real GPUs, without a GPU, and report its cost.

Usage::

    python scripts/kernel_report.py [--arch 90,80] [--subset] [--check-targets] [--markdown]

Each scenario below is one call of the kernels' host API with the shapes training launches (ogbn-arxiv and Flickr
layers of the gnn_blockquant configs). Nothing runs: a stand-in driver reports the chosen GPU target, and Triton's own
launch path binds the arguments, specialises them exactly as on a real launch and hands the specialisation to a
hook that records it instead of compiling. Every distinct configuration is then compiled with ``triton.compile``'s
full pipeline for sm_90 (H100) and sm_80 (A100) (Triton's bundled ptxas), and its cubin is read back with the
bundled ``cuobjdump`` (registers, local memory) and ``nvdisasm`` (SASS). A kernel that no longer compiles for a
real GPU raises here, which the CPU interpreter cannot catch; CI runs this script.

Per launched kernel it prints:

* regs: registers per thread; spills: local-memory stores + loads in the SASS (STL/LDL; 0 = no spills);
* SASS: static instruction count (NOPs excluded);
* instr/elem: SASS instructions executed per element of the op, estimated from the static code: every instruction
  once per thread, loop bodies times their trip count, times threads per program, times programs, divided by the
  elements the op processes (for the projection: per projected output value; the fast path's cuBLAS matmul, where
  it takes one, is not a Triton kernel and not counted);
* bytes/elem: bytes the op must move per element (one read of its input, one write of its output and metadata);
* ceiling: the instruction-issue bound as a fraction of the H100 copy roof, min(1, issue rate / instr/elem *
  bytes/elem / copy bandwidth), with the constants below. Integer and logic instructions issue to pipes of half
  the FP32 width on Hopper, so integer-heavy code can sit below this bound: it is a ceiling, not a prediction.

``--check-targets`` exits 1 when an sm_90 kernel misses the targets of issue 14 (quantize+pack <= 30
instructions per element, <= 40 with VM levels; unpack+dequantize <= 20; <= 96 registers; no spills).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

# H100 SXM5 (NVIDIA H100 Tensor Core GPU datasheet; Hopper architecture whitepaper).
H100_SMS = 132  # streaming multiprocessors
H100_CLOCK_HZ = 1.98e9  # maximum boost clock
ISSUE_LANES_PER_CLOCK = 4 * 32  # 4 warp schedulers per SM, each issues one warp instruction (32 lanes) per clock
H100_COPY_BYTES_PER_S = 3.35e12  # HBM3 peak bandwidth; a measured device copy reaches about 90 % of it
ISSUE_RATE = H100_SMS * H100_CLOCK_HZ * ISSUE_LANES_PER_CLOCK  # thread-instructions per second

TARGETS = {"quantize": 30.0, "quantize_vm": 40.0, "dequantize": 20.0}  # instructions per element on sm_90
MAX_REGISTERS = 96
ARCHS = {90: "sm_90", 80: "sm_80"}


# --------------------------------------------------------------------------------------------- SASS analysis


_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*?);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


@dataclass
class SassStats:
    instructions: int  # static count, NOPs excluded
    loop_bodies: list[int]  # static instructions inside each (non-nested) loop
    spill_instructions: int  # STL + LDL

    def per_thread(self, trips: int) -> int:
        """Instructions a thread executes when every loop runs ``trips`` times."""
        inside = sum(self.loop_bodies)
        return self.instructions - inside + trips * inside


def analyse_sass(text: str) -> SassStats:
    """Instruction count, loop bodies (backward branches) and spill instructions of an ``nvdisasm -c`` listing."""
    instructions: list[tuple[int, str, str]] = []  # (address, opcode, operands)
    labels: dict[str, int] = {}
    pending_labels: list[str] = []
    for line in text.splitlines():
        if label := _LABEL.match(line):
            pending_labels.append(label[1])
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        address = int(match[1], 16)
        for name in pending_labels:
            labels[name] = address
        pending_labels = []
        instructions.append((address, match[3], match[4]))
    counted = [(a, op, rest) for a, op, rest in instructions if op != "NOP"]
    loops = []
    for address, opcode, operands in counted:
        target = _BRANCH_TARGET.search(operands)
        if opcode.startswith("BRA") and target and labels[target[1]] < address:
            loops.append((labels[target[1]], address))
    loops.sort()
    for (_, end), (start, _) in zip(loops, loops[1:]):
        if start <= end:
            raise ValueError("nested or overlapping loops in the SASS; the per-element estimate needs one level")
    bodies = [sum(start <= a <= end for a, _, _ in counted) for start, end in loops]
    spills = sum(op.startswith(("STL", "LDL")) for _, op, _ in counted)
    # The trailing `BRA self` after EXIT never runs: it is a trap, not a loop, and not counted.
    traps = sum(op.startswith("BRA") and (t := _BRANCH_TARGET.search(rest)) and labels[t[1]] == a
                for a, op, rest in counted)
    return SassStats(len(counted) - traps, bodies, spills)


def _tool(name: str) -> str:
    from triton import knobs

    return str(Path(knobs.nvidia.ptxas.path).parent / name)


def resource_usage(cubin: bytes) -> tuple[int, int, str]:
    """(registers, local-memory bytes per thread, SASS text) of a cubin, via the cuobjdump and nvdisasm that ship
    with Triton."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True).stdout
    regs = re.search(r"REG:(\d+)", usage)
    local = re.search(r"LOCAL:(\d+)", usage)
    if regs is None or local is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage:\n{usage}")
    return int(regs[1]), int(local[1]), sass


# --------------------------------------------------------------------------------------------- capture


class _CompileOnlyDriver:
    """Stands in for the CUDA driver: reports a target, owns no device. Device ids are the arch, so each arch keeps
    its own per-device caches in every JITFunction."""

    def __init__(self, arch: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.arch = arch
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return self.arch

    def get_current_stream(self, device: int) -> int:
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")


@dataclass
class Launch:
    fn: object  # the JITFunction
    kernel: str
    programs: int
    args: dict  # bound arguments (tensors, scalars, constexprs)
    specialization: str  # Triton's serialized specialization data: the exact compile request


@dataclass
class Scenario:
    op: str  # what the call does, e.g. "quantize_pack"
    label: str  # its configuration
    role: str | None  # which target applies: quantize, quantize_vm, dequantize, or None
    elements: int  # elements the op processes (projected outputs for a projection)
    bytes_per_element: float  # bytes it must move per element
    call: Callable[[], object]
    launches: list[Launch] = field(default_factory=list)


class Capture:
    """Records the launches of host-API calls instead of running them."""

    def __init__(self) -> None:
        self.launches: list[Launch] = []
        self._bound: dict | None = None

    def __enter__(self) -> Capture:
        from triton import knobs
        from triton.runtime.jit import JITFunction

        self._original_run = JITFunction.run
        capture = self

        def run(fn, *args, grid, warmup, **kwargs):
            bound = fn.signature.bind_partial(*args, **{k: v for k, v in kwargs.items() if k in fn.arg_names})
            capture._bound = {"fn": fn, "grid": grid, "args": dict(bound.arguments)}
            return capture._original_run(fn, *args, grid=grid, warmup=warmup, **kwargs)

        def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
            bound = capture._bound
            grid = bound["grid"](bound["args"]) if callable(bound["grid"]) else bound["grid"]
            jit = fn.jit_function
            capture.launches.append(Launch(jit, jit.fn.__name__, math.prod(grid), bound["args"],
                                           compile["specialization_data"]))
            return True  # skip the compile (and so the launch)

        JITFunction.run = run
        self._previous_hook = knobs.runtime.jit_cache_hook
        knobs.runtime.jit_cache_hook = hook
        return self

    def __exit__(self, *exc) -> None:
        from triton import knobs
        from triton.runtime.jit import JITFunction

        JITFunction.run = self._original_run
        knobs.runtime.jit_cache_hook = self._previous_hook


def _kernel_modules():
    from sustainml_kernels import quant_triton, rp_triton

    usable = lambda device: True  # noqa: E731 - CPU tensors stand in for device tensors: nothing runs
    quant_triton.triton_usable = usable
    rp_triton.triton_usable = usable
    return quant_triton, rp_triton


# --------------------------------------------------------------------------------------------- scenarios


SEED = 0x0123456789ABCDEF
PROJ_SEED = 0xFEDCBA9876543210
ARXIV_ROWS, FLICKR_ROWS = 169_343, 89_250
# (name, rows, input features D, hidden width) of the gnn_blockquant experiments (conf/experiment).
DATASETS = (("arxiv", ARXIV_ROWS, 128, 128), ("flickr", FLICKR_ROWS, 500, 256))
BLOCK_ROWS = 64  # G_R of the block configs
QUANT_VARIANTS = ((2, False), (2, True), (4, False), (8, False))


def _vm_a(group_size: int) -> float:
    from sustainml_exp.compress.vm import optimal_inner_level

    return optimal_inner_level(group_size)


def _packed_bytes(bits: int, group_size: int) -> float:
    return bits / 8 + 4 / group_size  # codes + a bf16 minimum and range per group


def scenarios(subset: bool) -> Iterator[Scenario]:
    qt, rp = _kernel_modules()
    from sustainml_exp.compress.spec import CompressionSpec

    spec = CompressionSpec()
    for name, rows, in_dim, hidden in DATASETS[:1] if subset else DATASETS:
        kept = spec.projected_dim(in_dim)
        x_in = torch.empty(rows, in_dim)
        widths = [(kept, "linear input"), (hidden, "batch-norm input")]
        if spec.projected_dim(hidden) != kept:  # the hidden layers' projected linear inputs
            widths.append((spec.projected_dim(hidden), "hidden linear input"))
        for width, what in widths:
            x = torch.empty(rows, width)
            for g_r in (1, BLOCK_ROWS):
                group = g_r * width
                for bits, vm in QUANT_VARIANTS[:2] if subset else QUANT_VARIANTS:
                    vm_a = _vm_a(group) if vm else None
                    role = "quantize_vm" if vm else "quantize"
                    label = f"{name} {what} {rows}x{width} G={group} INT{bits}{' VM' if vm else ''}"
                    yield Scenario("quantize_pack", label, role, x.numel(), 4 + _packed_bytes(bits, group),
                                   lambda x=x, a=(bits, group, SEED, vm_a): qt.quantize_pack_triton(x, *a))
                    if not vm and not subset:
                        payload = torch.empty(-(-x.numel() * bits // 8), dtype=torch.uint8)
                        meta = torch.empty(-(-x.numel() // group), dtype=torch.bfloat16)
                        yield Scenario("unpack_dequantize", label, "dequantize", x.numel(),
                                       4 + _packed_bytes(bits, group),
                                       lambda p=payload, m=meta, s=x.shape, a=(bits, group):
                                       qt.unpack_dequantize_triton(p, m, m, None, s, *a))
            if subset:
                break
        for g_r in (1, BLOCK_ROWS):
            group = g_r * kept
            label = f"{name} {rows}x{in_dim} -> {kept} G={group} INT2"
            for exact in (True, False):
                yield Scenario("project_quantize_pack" + ("" if exact else " (fast)"), label, None, rows * kept,
                               4 * in_dim / kept + _packed_bytes(2, group),
                               lambda x=x_in, a=(kept, PROJ_SEED, 2, group, SEED), e=exact:
                               rp.project_quantize_pack_triton(x, *a, exact=e))
        if subset:
            return
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.empty(rows, kept, dtype=dtype)
            group = BLOCK_ROWS * kept
            yield Scenario("quantize_pack", f"{name} {rows}x{kept} {dtype} G={group} INT2", "quantize", x.numel(),
                           x.element_size() + _packed_bytes(2, group),
                           lambda x=x, a=(2, group, SEED): qt.quantize_pack_triton(x, *a))
        bn = torch.empty(rows, hidden)
        mask = torch.empty(rows, hidden, dtype=torch.bool)
        packed = torch.empty(-(-bn.numel() // 8), dtype=torch.uint8)
        n = bn.numel()
        shape = f"{name} {rows}x{hidden}"
        yield Scenario("relu_pack", shape, None, n, 8 + 1 / 8, lambda x=bn: qt.relu_pack_triton(x))
        yield Scenario("dropout_pack", shape, None, n, 8 + 1 / 8, lambda x=bn: qt.dropout_pack_triton(x, 0.5, SEED))
        yield Scenario("dropout_apply", shape, None, n, 8, lambda x=bn: qt.dropout_apply_triton(x, 0.5, SEED))
        yield Scenario("masked_scale", shape, None, n, 8 + 1 / 8,
                       lambda x=bn, p=packed: qt.masked_scale_triton(x, p, 2.0))
        yield Scenario("pack_mask", shape, None, n, 1 + 1 / 8, lambda m=mask: qt.pack_mask_triton(m))
        yield Scenario("unpack_mask", shape, None, n, 1 + 1 / 8,
                       lambda p=packed, s=mask.shape: qt.unpack_mask_triton(p, s))


# --------------------------------------------------------------------------------------------- report


def _compile(arch: int, module: str, kernel: str, specialization: str) -> tuple[int, int, SassStats, int, str]:
    """(registers, local bytes, SASS statistics, warps, SASS text) of one configuration compiled for ``arch``: the
    compile request Triton's launch path recorded, replayed through JITFunction.preload (in a worker process)."""
    import importlib

    from triton.runtime import driver

    driver.set_active(_CompileOnlyDriver(arch))
    kernel_fn = getattr(importlib.import_module(module), kernel)
    compiled = kernel_fn.preload(specialization)
    regs, local, sass_text = resource_usage(compiled.asm["cubin"])
    return regs, local, analyse_sass(sass_text), compiled.metadata.num_warps, sass_text


def _trips(launch: Launch) -> int:
    """Iterations of a kernel's loop, for kernels whose SASS keeps one (the projection loops over D, the looped
    quantize path over the column chunks of a group)."""
    args = launch.args
    if "BLOCK_K" in args:  # the tl.dot projection steps over D in BLOCK_K columns
        return -(-int(args["D"]) // int(args["BLOCK_K"]))
    for name in ("UNROLL", "ROW_UNROLL"):  # one thread per group, UNROLL values per iteration
        if args.get(name):
            return -(-int(args["group_size"]) // int(args[name]))
    if "D" in args:
        return int(args["D"])
    for name in ("n_chunks", "NUM_CHUNKS"):  # the row-tile kernels' chunks per group (NUM_CHUNKS before issue 14)
        if name in args:
            return int(args[name])
    raise ValueError(f"{launch.kernel} has a loop whose trip count this report does not know")


@dataclass
class Row:
    arch: int
    kernel: str
    scenario: Scenario
    regs: int
    spills: int
    local_bytes: int
    sass: int
    per_element: float

    @property
    def ceiling(self) -> float:
        rate = ISSUE_RATE / self.per_element * self.scenario.bytes_per_element
        return min(1.0, rate / H100_COPY_BYTES_PER_S)


def compile_all(arch: int, subset: bool, sass_dir: Path | None = None, only: str | None = None) -> list[Row]:
    from triton.runtime import driver

    driver.set_active(_CompileOnlyDriver(arch))
    cases = [case for case in scenarios(subset) if only is None or only in f"{case.op} {case.label}"]
    with Capture() as capture:
        for case in cases:
            start = len(capture.launches)
            case.call()
            case.launches = capture.launches[start:]
            if not case.launches:
                raise RuntimeError(f"{case.op} {case.label} launched no kernel")
    unique = {launch.specialization: launch for case in cases for launch in case.launches}
    with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, 8)) as pool:
        results = pool.map(_compile, [arch] * len(unique), [launch.fn.module for launch in unique.values()],
                           [launch.kernel for launch in unique.values()], list(unique))
        compiled = dict(zip(unique, results))
    if sass_dir is not None:
        for number, (launch, (_, _, _, _, sass_text)) in enumerate(zip(unique.values(), compiled.values())):
            (sass_dir / f"{ARCHS[arch]}_{number:03d}_{launch.kernel}.sass").write_text(sass_text)
    rows = []
    for case in cases:
        for launch in case.launches:
            regs, local, stats, num_warps, _ = compiled[launch.specialization]
            trips = _trips(launch) if stats.loop_bodies else 1
            per_element = stats.per_thread(trips) * 32 * num_warps * launch.programs / case.elements
            rows.append(Row(arch, launch.kernel, case, regs, stats.spill_instructions, local, stats.instructions,
                            per_element))
    return rows


def _op_totals(rows: list[Row]) -> list[tuple[Scenario, int, float, float]]:
    """(scenario, arch, instructions per element over all its kernels, ceiling) per scenario and arch."""
    totals: dict[tuple[int, int], list[Row]] = {}
    for row in rows:
        totals.setdefault((id(row.scenario), row.arch), []).append(row)
    out = []
    for group in totals.values():
        per_element = sum(r.per_element for r in group)
        ceiling = min(1.0, ISSUE_RATE / per_element * group[0].scenario.bytes_per_element / H100_COPY_BYTES_PER_S)
        out.append((group[0].scenario, group[0].arch, per_element, ceiling))
    return out


def print_table(rows: list[Row]) -> None:
    print("| arch | op | configuration | kernel | regs | spills | SASS | instr/elem | bytes/elem | ceiling |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {ARCHS[row.arch]} | {row.scenario.op} | {row.scenario.label} | {row.kernel} | {row.regs} | "
              f"{row.spills} | {row.sass} | {row.per_element:.1f} | {row.scenario.bytes_per_element:.2f} | "
              f"{100 * row.ceiling:.0f} % |")


def target_failures(rows: list[Row]) -> list[str]:
    problems = []
    for row in rows:
        if row.arch != 90:
            continue
        where = f"{row.kernel} ({row.scenario.op} {row.scenario.label})"
        if row.regs > MAX_REGISTERS:
            problems.append(f"{where}: {row.regs} registers > {MAX_REGISTERS}")
        if row.spills or row.local_bytes:
            problems.append(f"{where}: spills ({row.spills} STL/LDL, {row.local_bytes} B local)")
    for scenario, arch, per_element, _ in _op_totals(rows):
        limit = TARGETS.get(scenario.role) if arch == 90 else None
        if limit is not None and per_element > limit:
            problems.append(f"{scenario.op} {scenario.label}: {per_element:.1f} instructions/element > {limit:g}")
    return problems


def main(argv: list[str] | None = None) -> int:
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU (triton is imported only after this)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="90,80",
                        help=f"comma-separated compute capabilities ({', '.join(map(str, ARCHS))})")
    parser.add_argument("--subset", action="store_true", help="a few scenarios only (the test suite's smoke run)")
    parser.add_argument("--check-targets", action="store_true", help="exit 1 when an sm_90 kernel misses a target")
    parser.add_argument("--sass", type=Path, default=None, metavar="DIR", help="write each kernel's SASS listing here")
    parser.add_argument("--only", default=None, metavar="TEXT", help="only scenarios whose op and label contain TEXT")
    args = parser.parse_args(argv)
    try:
        archs = [int(a) for a in args.arch.split(",")]
    except ValueError:
        archs = []
    if not archs or any(a not in ARCHS for a in archs):
        print(f"error: --arch {args.arch!r}: allowed: comma-separated {', '.join(map(str, ARCHS))}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if args.sass is not None:
        args.sass.mkdir(parents=True, exist_ok=True)
    rows = [row for arch in archs for row in compile_all(arch, args.subset, args.sass, args.only)]
    print_table(rows)
    print()
    print("| arch | op | configuration | instr/elem (all kernels) | ceiling |")
    print("|---|---|---|---:|---:|")
    for scenario, arch, per_element, ceiling in _op_totals(rows):
        print(f"| {ARCHS[arch]} | {scenario.op} | {scenario.label} | {per_element:.1f} | {100 * ceiling:.0f} % |")
    print(f"\nceiling = min(1, {H100_SMS} SMs x {H100_CLOCK_HZ / 1e9:.2f} GHz x {ISSUE_LANES_PER_CLOCK} lanes/clock "
          f"/ instr/elem x bytes/elem / {H100_COPY_BYTES_PER_S / 1e12:.2f} TB/s); "
          f"{len({id(r.scenario) for r in rows})} configurations compiled in {time.perf_counter() - start:.0f} s")
    if args.check_targets:
        problems = target_failures(rows)
        for problem in problems:
            print(f"TARGET MISSED: {problem}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
