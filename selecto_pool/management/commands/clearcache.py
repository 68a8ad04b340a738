"""``manage.py clearcache``: deallocate prepared statements in every process."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ..._ops.commands import (
    MYSQL_CLEAR_NOTE,
    add_common_arguments,
    ask,
    local_only,
    pooled_aliases,
    rejected_note,
)
from ..._process import direct, registry


class Command(BaseCommand):
    help = (
        "Clear the prepared-statement caches of the pools of every running "
        "process (idle connections at once, busy ones when returned)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        processes = connections = rejected = 0
        silent: list[dict[str, Any]] = []
        for alias in pooled_aliases(options["database"]):
            if local_only(alias):
                self.stderr.write(MYSQL_CLEAR_NOTE.format(alias=alias))
            if options["local"]:
                pool = registry.get(alias)
                if pool is not None:
                    processes, connections = (
                        processes + 1,
                        connections + pool.clear_prepared(),
                    )
                continue
            gathered = ask(alias, "clear", options["timeout"])
            processes += len(gathered.answers)
            connections += sum(
                answer["cleared"]
                + sum(entry["cleared"] for entry in answer.get("direct", ()))
                for answer in gathered.answers
            )
            silent += gathered.silent
            rejected += gathered.rejected
        if options["local"] and options["database"] is None:
            # The direct API's pools (start_pool(), astart_pool()) too.
            cleared = direct.clear_all()
            connections += sum(count for _, count in cleared)
            if cleared and not processes:
                processes = 1
        if rejected:
            self.stderr.write(rejected_note(rejected))
        if options["json"]:
            report = {
                "processes": processes,
                "connections": connections,
                "silent": silent,
                "rejected_replies": rejected,
            }
            self.stdout.write(json.dumps(report))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Cleared the prepared statements of {connections} connection(s) "
                f"in {processes} process(es)."
            )
        )
        for process in silent:
            self.stderr.write(
                f"No answer from pid {process['pid']} on {process['host']} "
                f"({process['alias']})."
            )
