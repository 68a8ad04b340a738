"""Runs every configuration x workload x repetition, each in its own process.

Runs are interleaved: each repetition runs every configuration once per
workload, in an order rotated from one repetition to the next, so that drift
(the machine warming up, another job starting) spreads over all of them
instead of biasing whichever ran last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configs import ALL_CONFIGS
from .sampler import MySQLRunSampler, RunSampler, Trace, postmaster_of
from .server import DATABASE, Target
from .workloads import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
#: What a worker imports; copied once so that edits made during a run
#: (by someone working on the pool meanwhile) don't change what is measured.
SNAPSHOT = ("selecto_pool", "testproject", "bench")


@dataclass(frozen=True)
class Plan:
    configs: list[str]
    workloads: list[str]
    reps: int
    warmup: float
    duration: float


def schedule(plan: Plan) -> Iterator[tuple[int, str, str]]:
    """(repetition, workload, configuration) in the order they run."""
    for rep in range(plan.reps):
        for workload in plan.workloads:
            shift = rep % len(plan.configs)
            for config in plan.configs[shift:] + plan.configs[:shift]:
                if ALL_CONFIGS[config].runs_in(workload):
                    yield rep, workload, config


def snapshot(destination: Path) -> str:
    """Copy the code the workers import; returns a digest of selecto_pool's."""
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.pyc")
    for name in SNAPSHOT:
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    digest = hashlib.sha256()
    for path in sorted((destination / "selecto_pool").rglob("*.py")):
        digest.update(path.relative_to(destination).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class Runner:
    """Starts the worker processes, from a snapshot of the code."""

    def __init__(self, target: Target, code_dir: Path):
        self.target = target
        self.code_dir = code_dir
        self.excluded: dict[str, str] = {}
        self.postmaster = (
            target.server_pid
            if target.vendor == "mysql"
            else postmaster_of(target.admin_url)
        )

    def setup(self) -> None:
        """Create and fill the tables (with the stock backend)."""
        stock = "mysql-nopool" if self.target.vendor == "mysql" else "nopool"
        spec = {"mode": "setup", "config": stock, "pool_size": 1}
        result, error = self._spawn(spec, "setup", timeout=300)
        if result is None:
            raise RuntimeError(f"creating the benchmark data failed: {error}")

    def ab(self, configs: list[str]) -> dict[str, Any]:
        """Client CPU per operation, ``configs`` as aliases of one worker."""
        spec = {"mode": "ab", "configs": configs, "pool_size": 4}
        result, error = self._spawn(spec, "selecto_bench:ab", timeout=1800)
        if result is None:
            raise RuntimeError(f"the side-by-side run failed: {error}")
        samples: dict[str, Any] = result["samples"]
        return samples

    def run(self, plan: Plan, progress: Callable[[str], None]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        succeeded: set[str] = set()
        runs = list(schedule(plan))
        for number, (rep, workload_name, config_name) in enumerate(runs, 1):
            if config_name in self.excluded:
                continue
            record = self.run_one(plan, rep, workload_name, config_name)
            records.append(record)
            if "error" not in record:
                succeeded.add(config_name)
            elif config_name not in succeeded:
                # Never worked: a configuration that can't run here at all.
                self.excluded[config_name] = record["error"]
            progress(_progress_line(number, len(runs), record))
        return records

    def run_one(
        self,
        plan: Plan,
        rep: int,
        workload_name: str,
        config_name: str,
        wrapper: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        workload = WORKLOADS[workload_name]
        config = ALL_CONFIGS[config_name]
        spec = {
            "mode": "run",
            "config": config_name,
            "workload": workload_name,
            "pool_size": workload.pool_size_for(config),
            # Distinct per run, so that the sampler counts this run only.
            "app_name": f"selecto_bench:{os.getpid()}:{time.monotonic_ns()}",
            "warmup": plan.warmup,
            "duration": plan.duration,
            "seed": rep + 1,
        }
        record: dict[str, Any] = {
            "rep": rep,
            "workload": workload_name,
            "config": config_name,
            "pool_size": spec["pool_size"],
            "threads": workload.threads,
            "loadavg_before": os.getloadavg()[0],
        }
        timeout = plan.warmup + plan.duration + 120
        result, error = self._spawn(spec, spec["app_name"], timeout, wrapper)
        record["loadavg_after"] = os.getloadavg()[0]
        if result is None:
            record["error"] = error
        else:
            record.update(result)
        return record

    def _spawn(
        self,
        spec: dict[str, Any],
        app_name: str,
        timeout: float,
        wrapper: tuple[str, ...] = (),
    ) -> tuple[dict[str, Any] | None, str]:
        """Run one worker; (its JSON result, "") or (None, why it failed).

        ``wrapper`` is a command line that runs the worker (a profiler).
        """
        env = {**os.environ, "DATABASE_URL": self.target.url}
        env.pop("PYTHONPATH", None)
        spec = {**spec, "app_name": app_name}
        command = [*wrapper, sys.executable, "-m", "bench.worker", json.dumps(spec)]
        proc = subprocess.Popen(
            command,
            cwd=self.code_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # selecto_pool's LISTEN connection (the `control` option)
            # is a server connection of the run too.
            names = [app_name, f"selecto_pool:ctl:{proc.pid}:default"]
            trace = Trace(proc.pid, self.postmaster)
            sampler = (
                MySQLRunSampler(self.target.admin_url, DATABASE, trace)
                if self.target.vendor == "mysql"
                else RunSampler(self.target.admin_url, names, trace)
            )
            with sampler:
                out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # The result is the last JSON line (a profiler may print after it).
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (err.strip().splitlines() or ["no output"])[-1]
            return None, f"exit {proc.returncode}: {tail[:300]}"
        result: dict[str, Any] = json.loads(lines[-1])
        result["peak_connections"] = sampler.peak
        if "window_ns" in result:
            start, end = result["window_ns"]
            result.update(trace.figures(start, end, result["requests"]))
        return result, ""


def _progress_line(number: int, total: int, record: dict[str, Any]) -> str:
    where = f"[{number}/{total}] rep {record['rep'] + 1} {record['workload']:<11}"
    if "error" in record:
        return f"{where} {record['config']:<16} FAILED {record['error']}"
    return (
        f"{where} {record['config']:<16} {record['throughput']:9.1f} req/s"
        f"  p50 {record['p50_ms']:7.3f} ms  conns {record['peak_connections']}"
    )


def with_snapshot() -> tuple[Path, str]:
    """A temporary directory holding a snapshot of the code, and its digest."""
    code_dir = Path(tempfile.mkdtemp(prefix="selecto-bench-code-"))
    return code_dir, snapshot(code_dir)
