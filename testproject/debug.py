"""Keep the database password off Django's debug pages."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Also hide DATABASE_URL (``postgres://user:PASSWORD@host/db``) and DSNs."""

    hidden_settings = re.compile(
        f"{SafeExceptionReporterFilter.hidden_settings.pattern}|DATABASE_URL|DSN",
        flags=re.I,
    )
