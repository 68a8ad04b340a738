"""Migrate, seed and serve the demo page: what ``python3 dev.py demo`` runs."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from testproject import runstate

ROOT = Path(__file__).resolve().parents[4]


class Command(BaseCommand):
    help = "Migrate, seed the demo data and serve the demo page on 127.0.0.1."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port: int, **options):
        verbosity = options["verbosity"]
        try:
            call_command("migrate", interactive=False, verbosity=verbosity)
            call_command("seed_demo", verbosity=verbosity)
        except KeyboardInterrupt:
            raise CommandError("interrupted", returncode=130) from None
        self.stdout.write(banner(port))
        # No reloader: one process, so Ctrl-C and the pool have a single owner.
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)


def banner(port: int) -> str:
    """Where the demo is, and how a second shell reaches its database."""
    base = f"http://127.0.0.1:{port}"
    # Another shell's settings find this database only if it is the demo's own.
    found = runstate.running_database_url(runstate.demo_data_dir(ROOT))
    reach = (
        "finds this demo's database"
        if found is not None and found == os.environ.get("DATABASE_URL")
        else "needs the same DATABASE_URL"
    )
    return (
        f"Demo page: {base}/  health: {base}/health/db  (Ctrl-C to stop)\n"
        f"In another shell here, .venv/bin/python manage.py poolstats "
        f"(also clearcache, check) {reach}."
    )
