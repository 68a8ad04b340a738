"""``manage.py poolstats``: the pools of every running process, in one table."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from ..._ops import report
from ..._ops.commands import (
    MYSQL_NOTE,
    add_common_arguments,
    ask,
    local_only,
    pooled_aliases,
    rejected_note,
)
from ..._ops.rates import Rates
from ..._process import direct, registry

_LONGEST_WATCH = 86_400.0


class Command(BaseCommand):
    help = (
        "Show the connection pools of every running process (asked over "
        "LISTEN/NOTIFY), one row per process and alias, with totals."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)
        parser.add_argument(
            "--watch",
            type=float,
            metavar="SECONDS",
            help="Print again every SECONDS until interrupted, with the time "
            "and per-second rates of checkouts, timeouts and errors.",
        )
        parser.add_argument(
            "--wide",
            action="store_true",
            help="Every column (overflow, median wait, reconnects, the "
            "statement cache, age), not only those fitting 100 columns.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        watch = options["watch"]
        if watch is not None and not (0 < watch <= _LONGEST_WATCH):  # NaN too
            raise CommandError("--watch takes a number of seconds > 0, at most 86400")
        table = report.Table(wide=options["wide"], rates=watch is not None)
        rates = Rates() if watch is not None else None
        if not options["local"]:
            for alias in pooled_aliases(options["database"]):
                if local_only(alias):
                    self.stderr.write(MYSQL_NOTE.format(alias=alias))
        try:
            while True:
                rows, rejected = self._collect(options)
                if rates is not None:
                    rates.add(rows, time.monotonic())
                answered = self._print(rows, rejected, table, options)
                if watch is None:
                    if not answered:
                        raise CommandError(_nobody_answered(rows, rejected, options))
                    return
                self.stdout.flush()
                time.sleep(watch)
        except KeyboardInterrupt:
            return  # the way to end --watch

    def _collect(self, options: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """One row per process and alias, and per direct pool (unless
        ``--database`` picks an alias); how many replies were rejected."""
        rows, rejected = [], 0
        with_direct = options["database"] is None
        host, pid = socket.gethostname(), os.getpid()
        for alias in pooled_aliases(options["database"]):
            if options["local"]:
                pool = registry.get(alias)
                if pool is not None:
                    rows.append(report.row(host, pid, alias, pool.stats().as_dict()))
                continue
            gathered = ask(alias, "stats", options["timeout"])
            rejected += gathered.rejected
            for answer in gathered.answers:
                rows.append(
                    report.row(answer["host"], answer["pid"], alias, answer["stats"])
                )
                if with_direct:
                    rows += _direct_rows(answer)
                    if answer.get("direct_omitted"):
                        self.stderr.write(
                            f"pid {answer['pid']} on {answer['host']} has "
                            f"{answer['direct_omitted']} more direct pool(s) than "
                            "one reply can list (--local there shows them all)."
                        )
            for silent in gathered.silent:
                rows.append(report.silent_row(silent["host"], silent["pid"], alias))
        if options["local"] and with_direct:
            rows += _direct_rows(
                {
                    "host": host,
                    "pid": pid,
                    "direct": [
                        {"name": name, "stats": stats.as_dict()}
                        for name, stats in direct.stats()
                    ],
                }
            )
        return _once(rows), rejected

    def _print(
        self,
        rows: list[dict[str, Any]],
        rejected: int,
        table: report.Table,
        options: dict[str, Any],
    ) -> bool:
        """Print one round; whether any process answered."""
        totals = report.totals(rows)
        now = datetime.now().astimezone()
        if rejected:
            self.stderr.write(rejected_note(rejected))
        if options["json"]:
            output = {
                "time": now.isoformat(timespec="seconds"),
                "processes": rows,
                "totals": totals,
                "rejected_replies": rejected,
            }
            self.stdout.write(json.dumps(output))
            return bool(totals["processes"])
        watching = options["watch"] is not None
        if not rows:
            if watching:
                self.stdout.write(f"{now:%H:%M:%S}  no process answered")
            return False
        first = table.widths is None
        lines = table.render(rows, totals)
        if first:
            self.stdout.write(table.header())
        if watching:
            self.stdout.write(f"{now:%H:%M:%S}")
        self.stdout.write("\n".join(lines))
        return bool(totals["processes"])


def _direct_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the direct pools a process listed in its ``answer``."""
    return [
        report.row(
            answer["host"],
            answer["pid"],
            f"{direct.ROW_PREFIX}{entry['name']}",
            entry["stats"],
            kind=report.DIRECT,
        )
        for entry in answer.get("direct", ())
    ]


def _once(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each direct pool's row once, though several replies listed it."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for data in rows:
        key = (data["host"], data["pid"], data["alias"])
        if data["kind"] == report.DIRECT and key in seen:
            continue
        seen.add(key)
        kept.append(data)
    return kept


def _nobody_answered(
    rows: list[dict[str, Any]], rejected: int, options: dict[str, Any]
) -> str:
    """Why no process may have answered, and what to look at."""
    aliases = pooled_aliases(options["database"])
    if options["local"]:
        return (
            "No pool in this process for "
            f"{', '.join(map(repr, aliases)) or 'any alias'}: a pool opens at "
            "the alias's first query (--local shows only this process)."
        )
    asked = "; ".join(_where(alias) for alias in aliases) or "no pooled alias"
    lines = [f"No process answered ({asked})."]
    if rows:
        lines.append(
            f"{len(rows)} process(es) should have answered within --timeout "
            f"({options['timeout']:g} s) but did not: busy, stopped, or using "
            "another SECRET_KEY? Try a longer --timeout."
        )
    else:
        lines.append(
            "No process has a control connection there. A process shows once "
            "its pool has opened (at the alias's first query). Does it run "
            "with pooling off (OPTIONS['pool'] = False) or control off, with "
            "another ENGINE than selecto_pool.backend, or against another "
            "database, host or role than the one above?"
        )
    if rejected:
        lines.append(
            f"{rejected} reply(ies) could not be verified: those processes may "
            "use another SECRET_KEY."
        )
    return "\n".join(lines)


def _where(alias: str) -> str:
    """The alias's database, as settings name it (never the password)."""
    settings_dict = connections[alias].settings_dict
    host = settings_dict.get("HOST") or "local socket"
    port = settings_dict.get("PORT")
    return (
        f"alias {alias!r}: database {settings_dict.get('NAME')!r} on "
        f"{host}{f':{port}' if port else ''}"
    )
