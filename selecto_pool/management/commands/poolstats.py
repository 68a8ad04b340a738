"""``manage.py poolstats``: the pools of every running process, in one table."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._ops import report
from ..._ops.commands import (
    MYSQL_NOTE,
    add_common_arguments,
    ask,
    local_only,
    pooled_aliases,
    rejected_note,
)
from ..._process import registry


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
            help="Print again every SECONDS until interrupted.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["watch"] is not None and options["watch"] <= 0:
            raise CommandError("--watch takes a number of seconds > 0")
        if not options["local"]:
            for alias in pooled_aliases(options["database"]):
                if local_only(alias):
                    self.stderr.write(MYSQL_NOTE.format(alias=alias))
        try:
            while True:
                rows, rejected = self._collect(options)
                self._print(rows, rejected, as_json=options["json"])
                if options["watch"] is None:
                    return
                self.stdout.flush()
                time.sleep(options["watch"])
        except KeyboardInterrupt:
            return  # the way to end --watch

    def _collect(self, options: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """One row per process and alias; how many replies were rejected."""
        rows, rejected = [], 0
        for alias in pooled_aliases(options["database"]):
            if options["local"]:
                pool = registry.get(alias)
                if pool is not None:
                    stats = pool.stats().as_dict()
                    rows.append(
                        report.row(socket.gethostname(), os.getpid(), alias, stats)
                    )
                continue
            gathered = ask(alias, "stats", options["timeout"])
            rejected += gathered.rejected
            for answer in gathered.answers:
                rows.append(
                    report.row(answer["host"], answer["pid"], alias, answer["stats"])
                )
            for silent in gathered.silent:
                rows.append(report.silent_row(silent["host"], silent["pid"], alias))
        return rows, rejected

    def _print(self, rows: list[dict[str, Any]], rejected: int, as_json: bool) -> None:
        totals = report.totals(rows)
        if rejected:
            self.stderr.write(rejected_note(rejected))
        if as_json:
            output = {"processes": rows, "totals": totals, "rejected_replies": rejected}
            self.stdout.write(json.dumps(output))
        elif not rows:
            self.stdout.write("No process with a selecto_pool pool answered.")
        else:
            self.stdout.write(report.table(rows, totals))
