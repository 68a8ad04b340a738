"""What ``GenericPool`` needs to know about one kind of connection."""

from __future__ import annotations

from typing import Literal, Protocol, TypeVar

C = TypeVar("C")

#: What bringing a returned connection back to a clean state took; a
#: "broken" connection was closed, and the pool replaces it.
ResetOutcome = Literal["clean", "rolled back", "broken"]


class Driver(Protocol[C]):
    def connect(self) -> C:
        """A new connection, configured and in autocommit; raises on failure."""
        ...

    def is_alive(self, conn: C) -> bool:
        """Whether an idle connection can be handed out, without a round trip."""
        ...

    def reset(self, conn: C) -> ResetOutcome:
        """No transaction, autocommit on; never raises."""
        ...

    def close(self, conn: C) -> None:
        """Close, never raising."""
        ...
