"""``python -m bench [--quick]``: run the benchmark, print and save the results.

``--ab`` (client CPU side by side in one process) and ``--profile`` (py-spy)
measure instead of benchmarking; ``--asgi`` compares the sync and async
direct APIs under uvicorn (``bench.asgi``). ``--mysql`` compares the MySQL
configurations on a private MariaDB instead.

``python3 dev.py bench`` installs what this needs (the ``bench`` extra) first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from . import chart, report, server, versions
from .configs import ALL_CONFIGS, CONFIGS, MYSQL_CONFIGS
from .runner import ROOT, Plan, Runner, schedule, with_snapshot
from .workloads import WORKLOADS

RESULTS = ROOT / "bench" / "results"
DOCS_CHART = ROOT / "docs" / "benchmarks.png"
FULL = {"reps": 5, "warmup": 0.75, "duration": 2.5}
QUICK = {"reps": 2, "warmup": 0.2, "duration": 0.8}


def _names(choices: dict[str, Any]) -> Any:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)} (choose from {', '.join(choices)})"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="2 short repetitions (~3 min)"
    )
    parser.add_argument("--reps", type=int, help=f"default {FULL['reps']}")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds per run")
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument(
        "--configs",
        type=_names(ALL_CONFIGS),
        help=f"a,b,... (default: {', '.join(CONFIGS)}; with --mysql, "
        f"{', '.join(MYSQL_CONFIGS)})",
    )
    parser.add_argument(
        "--mysql",
        action="store_true",
        help="the MySQL configurations, on a private MariaDB (Debian's mariadb-server)",
    )
    parser.add_argument(
        "--workloads", type=_names(WORKLOADS), default=list(WORKLOADS), help="x,y,..."
    )
    parser.add_argument(
        "--chart",
        type=Path,
        help=f"where the PNG goes (default: {DOCS_CHART.relative_to(ROOT)} for a "
        "full run of everything, else next to the JSON)",
    )
    parser.add_argument(
        "--ab",
        action="store_true",
        help="instead of benchmarking, compare client CPU per checkout (through "
        "Django, and the pool's own) and per request, with the configurations as "
        "aliases of one process (bench.ab)",
    )
    parser.add_argument(
        "--asgi",
        action="store_true",
        help="instead of benchmarking, serve an ASGI app with uvicorn and compare "
        "the sync direct API, sync_to_async, the async API and psycopg_pool's "
        "AsyncConnectionPool under 50 clients (bench.asgi; --reps, --warmup, "
        "--duration apply: default 3 x (1 + 5) s per endpoint)",
    )
    parser.add_argument(
        "--asgi-query-ms",
        type=int,
        default=10,
        help="--asgi: the query's pg_sleep, in ms (default 10)",
    )
    parser.add_argument(
        "--profile",
        metavar="CONFIG:WORKLOAD",
        action="append",
        help="instead of benchmarking, profile runs with py-spy (repeatable)",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    family = MYSQL_CONFIGS if args.mysql else CONFIGS
    configs = args.configs or list(family)
    if any(name not in family for name in configs):
        parser.error(
            "--configs: mysql-* configurations go with --mysql, others without"
        )
    if args.mysql and (args.ab or args.profile or args.asgi):
        parser.error(
            "--ab, --profile and --asgi measure the PostgreSQL configurations only"
        )
    plan = Plan(
        configs=configs,
        workloads=args.workloads,
        reps=args.reps or defaults["reps"],
        warmup=args.warmup if args.warmup is not None else defaults["warmup"],
        duration=args.duration or defaults["duration"],
    )
    benchmarking = not (args.ab or args.profile or args.asgi)
    if benchmarking and next(schedule(plan), None) is None:
        only = {name: ALL_CONFIGS[name].only for name in plan.configs}
        parser.error(
            "nothing to run: "
            + "; ".join(
                f"{name} runs only in {', '.join(w)}" for name, w in only.items() if w
            )
        )
    # A SIGTERM must stop the PostgreSQL we started too, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    code_dir, digest = with_snapshot()
    try:
        provision = (
            server.provision_mysql()
            if args.mysql
            else server.provision(os.environ.get("DATABASE_URL"))
        )
        with provision as target:
            if args.asgi:
                return _asgi(target.url, args, stamp)
            runner = Runner(target, code_dir)
            print("creating the benchmark tables and data...", flush=True)
            runner.setup()
            if args.ab:
                return _ab(runner, plan.configs)
            if args.profile:
                return _profile(runner, args.profile, plan, stamp)
            if args.mysql:
                version = server.mysql_server_version(target.admin_url)
                meta = versions.collect(ROOT, version, digest, server="mariadb")
            else:
                version = server.server_version(target.url)
                meta = versions.collect(ROOT, version, digest)
            print(_intro(plan, target.local, meta), flush=True)
            started = time.monotonic()
            records = runner.run(plan, progress=lambda line: print(line, flush=True))
            elapsed = time.monotonic() - started
    finally:
        shutil.rmtree(code_dir, ignore_errors=True)
    summary = report.summarise(records, plan.reps)
    # The targets and the chart are about the PostgreSQL configurations.
    checks = [] if args.mysql else report.targets(summary)
    print(report.table(summary, runner.excluded))
    if checks:
        print(report.targets_table(checks))
    name = f"{stamp}{'-mysql' if args.mysql else ''}{'-quick' if args.quick else ''}"
    output = RESULTS / f"{name}.json"
    document = {
        "plan": plan.__dict__,
        "quick": args.quick,
        "local_server": target.local,
        "elapsed_s": round(elapsed, 1),
        "environment": meta,
        "excluded": runner.excluded,
        "summary": summary,
        "targets": checks,
        "runs": records,
    }
    output.write_text(json.dumps(document, indent=1, default=str) + "\n")
    if args.mysql:
        print(f"\n{elapsed / 60:.1f} min; results: {_shown(output)}")
        return 0
    complete = plan.configs == list(CONFIGS) and plan.workloads == list(WORKLOADS)
    chart_path = args.chart or (
        DOCS_CHART if complete and not args.quick else RESULTS / f"{name}.png"
    )
    subtitle = (
        f"{meta['cpus']} cores shared by client and server; selecto_pool "
        f"{meta['selecto_pool_commit']}; {plan.reps} repetitions of "
        f"{plan.duration:g} s"
    )
    chart.draw(summary, chart_path, subtitle)
    print(
        f"\n{elapsed / 60:.1f} min; results: {_shown(output)}, chart: "
        f"{_shown(chart_path)}"
    )
    return 0


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _intro(plan: Plan, local: bool, meta: dict[str, Any]) -> str:
    runs = plan.reps * len(plan.configs) * len(plan.workloads)
    kind = "MariaDB" if "mariadb" in meta else "PostgreSQL"
    where = f"a private {kind}" if local else "DATABASE_URL's server"
    version = meta.get("mariadb") or meta.get("postgresql")
    return (
        f"{runs} runs of {plan.warmup:g} + {plan.duration:g} s on {where} "
        f"({kind} {version}, {meta['cpus']} cores, "
        f"selecto_pool {meta['selecto_pool_commit']}"
        f"{' + uncommitted changes' if meta['selecto_pool_uncommitted'] else ''})"
    )


def _asgi(url: str, args: argparse.Namespace, stamp: str) -> int:
    from . import asgi

    reps, warmup = args.reps or 3, 1.0 if args.warmup is None else args.warmup
    duration = args.duration or 5.0
    print(
        f"uvicorn, {asgi.CLIENTS} clients, {reps} x ({warmup:g} + {duration:g}) s "
        f"per endpoint, query pg_sleep({args.asgi_query_ms} ms) on 5 connections; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    runs = asgi.run(url, ROOT, reps, warmup, duration, args.asgi_query_ms)
    rows = asgi.summary(runs)
    print(asgi.table(rows, duration))
    output = RESULTS / f"{stamp}-asgi.json"
    document = {
        "reps": reps,
        "warmup": warmup,
        "duration": duration,
        "query_ms": args.asgi_query_ms,
        "load_average_after": os.getloadavg(),
        "summary": rows,
        "runs": runs,
    }
    output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"results: {_shown(output)}")
    return 0


def _ab(runner: Runner, configs: list[str]) -> int:
    from . import ab

    if configs == list(CONFIGS):
        configs = ["native", "native-prep", "selecto", "selecto-nocache"]
    print(ab.table(runner.ab(configs)))
    return 0


def _profile(runner: Runner, wanted: list[str], plan: Plan, stamp: str) -> int:
    from .profile import profile

    for item in wanted:
        config, _, workload = item.partition(":")
        if config not in CONFIGS or workload not in WORKLOADS:
            raise SystemExit(f"--profile {item}: expected CONFIG:WORKLOAD")
        output = RESULTS / f"profile-{stamp}-{config}-{workload}.txt"
        print(profile(runner, config, workload, max(plan.duration, 5.0), output))
        print(f"  raw stacks: {_shown(output)}\n", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
