"""Where the time of a run goes, by function: ``python -m bench --profile C:W``.

The worker runs under py-spy (a sampling profiler outside the process, so
the code measured is unchanged). Only samples of the request threads count,
and only when running, not waiting on the server. Each sample is charged to
its innermost frame in selecto_pool, psycopg, psycopg_pool, Django or the
bench (standard-library frames go to their caller): that is the "own" time a
change to that function can save. Sampling is biased towards system calls
(``os.getpid()``, ``poll()``): read small shares as upper bounds, and
``python -m bench --ab`` for the CPU cost of a checkout.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from .runner import Plan, Runner
from .workloads import WORKLOADS

#: Rates above ~250 Hz start to slow the profiled process down.
RATE = 250
_OWNED = re.compile(r"\((?:.*/)?(selecto_pool|psycopg_pool|psycopg|django|bench)/")
_REQUEST = "request (bench/cycles.py"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: python3 dev.py bench installs it")
    return found


def profile(
    runner: Runner, config: str, workload: str, seconds: float, output: Path
) -> str:
    """Profile one run; returns the summary (the raw stacks go to ``output``)."""
    plan = Plan([config], [workload], reps=1, warmup=1.0, duration=seconds)
    wrapper = [py_spy(), "record", "-r", str(RATE), "-f", "raw", "-o", str(output)]
    if WORKLOADS[workload].threads > 1:
        # Threads waiting for the GIL look busy to py-spy: keep only the
        # samples of the thread holding it, i.e. Python's CPU time.
        wrapper.append("--gil")
    record = runner.run_one(plan, 0, workload, config, wrapper=(*wrapper, "--"))
    if "error" in record:
        raise SystemExit(f"profiled run failed: {record['error']}")
    return summarise(output.read_text(), f"{config} / {workload}")


def _function(frame: str) -> str:
    """``f (path/to/module.py:12)`` without the line number and site-packages."""
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(.*?/(site-packages|selecto-bench-code-\w+)/", "(", frame)


def summarise(raw: str, title: str, top: int = 15) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if _REQUEST not in stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_function(frame) for frame in stack.split(";")]
        for frame in set(frames):
            if "selecto_pool/" in frame:
                inclusive[frame] += samples
        charged = next((f for f in reversed(frames) if _OWNED.search(f)), frames[-1])
        own[charged] += samples
    if not total:
        return f"{title}: no samples of the request threads"
    packages: Counter[str] = Counter()
    for frame, samples in own.items():
        match = _OWNED.search(frame)
        packages[match.group(1) if match else "other"] += samples
    shares = ", ".join(f"{name} {n / total:.1%}" for name, n in packages.most_common())
    lines = [
        f"{title}: {total} samples of request threads at {RATE} Hz",
        f"  own time by package: {shares}",
        "  selecto_pool functions, inclusive (own):",
    ]
    for frame, samples in inclusive.most_common(top):
        lines.append(f"    {samples / total:6.1%} ({own[frame] / total:5.1%})  {frame}")
    lines.append("  all functions by own time:")
    for frame, samples in own.most_common(top):
        lines.append(f"    {samples / total:6.1%}  {frame}")
    return "\n".join(lines)
