"""The per-app objects the routes share: built, started and stopped by the lifespan (app/main.py),
and kept on ``app.state``. ``build`` wires them; importing this module starts nothing."""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from app import __version__, admission, drain, metrics
from app.admission import HandshakeRate
from app.auth import Authenticator
from app.broker import Broker, create_broker, redis_client
from app.budgets import CallerRates
from app.cluster_query import ClusterQuery
from app.config import Settings
from app.hub import Hub
from app.instances import Instances
from app.permissions import Hooks, Permissions
from app.presence import MemoryPresence, Presence
from app.presence_redis import RedisPresence
from app.protocols.emulation import Emulation
from app.proxy import Backend
from app.proxy_calls import Proxies
from app.sweeper import Sweeper
from app.user_slots import create_slots
from app.users import Users


@dataclass(slots=True)
class Services:
    settings: Settings
    broker: Broker
    hub: Hub
    presence: Presence
    permissions: Permissions
    users: Users
    instances: Instances
    handshakes: HandshakeRate
    auth: Authenticator
    proxies: Proxies
    queries: ClusterQuery
    emulation: Emulation
    # POST /command's per-caller buckets (app/streams/commands.py).
    command_rates: CallerRates | None = None
    draining: bool = field(default=False)
    started: float = field(default_factory=time.monotonic)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        broker = create_broker(
            settings.broker_url,
            max_connections=settings.redis_max_connections,
            name=settings.instance_id,
            history=settings.history,
            idempotency_ttl=settings.idempotency_ttl,
        )
        hub = Hub(broker, settings.namespaces)
        ttl = settings.presence_ttl
        client = redis_client(broker)
        auth = Authenticator.from_settings(settings)
        proxies = Proxies(settings, Backend(settings))
        users = Users(hub, create_slots(broker, ttl), settings.user_connection_limit, ttl)
        instances = Instances(settings.instance_id, client, ttl)
        built = cls(
            settings=settings,
            broker=broker,
            hub=hub,
            presence=RedisPresence(client, ttl) if client is not None else MemoryPresence(),
            permissions=Permissions(settings, Hooks(settings.hook_object, settings.hook_timeout), auth, proxies),
            users=users,
            instances=instances,
            handshakes=HandshakeRate(settings.max_handshakes_per_second, admission.workers()),
            auth=auth,
            proxies=proxies,
            queries=ClusterQuery(hub, users, instances, client, settings.instance_id),
            emulation=Emulation(hub, settings.instance_id, clustered=client is not None),
            command_rates=CallerRates(settings.rate_limit_per_second, settings.rate_limit_burst),
        )
        instances.stats = built.instance_stats
        return built

    def instance_stats(self) -> dict[str, Any]:
        """What ``info`` lists for this instance."""
        memory = redis_client(self.broker) is None
        return {
            "connections": len(self.hub.connections),
            "channels": len(self.hub.local_channels()),
            "uptime": round(time.monotonic() - self.started, 1),
            "draining": self.draining,
            "redis": "memory" if memory else "up" if self.broker.healthy() else "down",
        }

    async def start(self) -> None:
        metrics.BUILD_INFO.labels(__version__, platform.python_version()).set(1)
        await self.auth.start()  # JWKS fetches begin; a provider that is down delays nothing
        await self.broker.start(self.hub.dispatch, self.hub.channels, self.hub.on_reconnect)
        await self.users.start()
        await self.queries.start()
        await self.emulation.start()
        await self.presence.start()
        client = redis_client(self.broker)
        sweeper = Sweeper(self.presence, self.hub, client, self.settings.instance_id)
        sampler = metrics.Sampler(ready=self.ready, broker_up=self.broker.healthy)
        for name, work in (("sweeper", sweeper.run()), ("instances", self.instances.run()), ("sampler", sampler.run())):
            self._tasks.append(asyncio.create_task(work, name=f"switchboard-{name}"))

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """A task of this app's, cancelled and awaited by ``close``."""
        self._tasks.append(asyncio.create_task(work, name=f"switchboard-{name}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Waited for, not just cancelled: the sampler's last flush hands over the final second.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.presence.close()
        await self.queries.close()
        await self.emulation.close()
        await self.users.close()
        await self.hub.close()
        await self.broker.close()
        await self.auth.close()
        await self.proxies.backend.close()

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
