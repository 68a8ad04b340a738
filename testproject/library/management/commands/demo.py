"""Migrate, seed and serve the demo page: what ``python3 dev.py demo`` runs."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


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
        self.stdout.write(f"Demo page: http://127.0.0.1:{port}/ (Ctrl-C to stop)")
        # No reloader: one process, so Ctrl-C and the pool have a single owner.
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
