"""The per-app objects the routes share, built in the lifespan and kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from app import drain, metrics
from app.broker import Broker
from app.config import Settings
from app.hub import Hub
from app.permissions import Permissions
from app.presence import Presence


@dataclass(slots=True)
class Services:
    settings: Settings
    broker: Broker
    hub: Hub
    presence: Presence
    permissions: Permissions
    draining: bool = field(default=False)

    def ready(self) -> bool:
        """What /readyz and the switchboard_ready gauge report."""
        return self.broker.healthy() and not self.draining

    def begin(self) -> None:
        """Readiness turns 503 and new handshakes are refused (drain.Drainer)."""
        self.draining = True
        metrics.READY.set(0)

    async def run(self) -> None:
        await drain.close_in_batches(self.hub, self.settings.drain_seconds)


def services(conn: HTTPConnection) -> Services:
    found: Services = conn.app.state.services
    return found
