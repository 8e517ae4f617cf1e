"""OpenTelemetry traces (docs/observability.md, "Traces"): off unless ``SWITCHBOARD_TRACING=true``.

Once on, the SDK is configured the standard way, by the ``OTEL_*`` variables it reads itself:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``), ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``.
``OTEL_TRACES_EXPORTER`` picks ``otlp`` (OTLP over HTTP/protobuf, the default), ``console`` or
``none`` (then tracing stays off); ``check_environment`` refuses anything else at start-up.

Off costs nothing: the SDK is not even imported, ``ON`` is a module-level flag the hot paths read
before they build anything, and ``span`` hands back one shared no-op context manager. Call sites
never import opentelemetry themselves, so they need no second code path.

A publication carries its trace context to every instance that delivers it as one field of the
internal envelope (``app/protocol.py``): the W3C ``traceparent`` of its ``publish`` span, only when
that span is sampled. Each instance with local members then records one ``deliver`` span, a child
of that publish, around its fan-out: once per message per process, never per socket.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, Tracer

ON = False
"""True while a tracer provider is installed; read by the hot paths before anything is built."""

EXPORTERS = ("otlp", "console", "none")
STOP_TIMEOUT = 2.0  # seconds a shutdown waits for the last spans to be exported
_NOOP: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def check_environment(environ: Mapping[str, str] | None = None) -> str:
    """The exporter ``OTEL_TRACES_EXPORTER`` names; raises ValueError with one line if unusable."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter not in EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: this build supports {', '.join(EXPORTERS)}")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", ""))
    if exporter == "otlp" and protocol.strip() not in ("", "http/protobuf"):
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only http/protobuf is installed")
    return exporter


def start(instance_id: str, version: str, processor: SpanProcessor | None = None) -> bool:
    """Install a tracer provider for this process (per worker: after gunicorn's fork).

    ``processor`` replaces the exporter the environment names (tests pass an in-memory one).
    Returns False when ``OTEL_TRACES_EXPORTER=none`` leaves tracing off.
    """
    global ON, _tracer, _provider
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if processor is None:
        exporter = check_environment()
        if exporter == "none":
            return False
        if exporter == "console":
            processor = BatchSpanProcessor(ConsoleSpanExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processor = BatchSpanProcessor(OTLPSpanExporter())
    ours = {"service.name": "switchboard", "service.version": version, "service.instance.id": instance_id}
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our defaults.
    resource = Resource.create(ours).merge(OTELResourceDetector().detect())
    # The sampler: OTEL_TRACES_SAMPLER, as the SDK reads it. Shut down by ``stop``, with a bound,
    # not by the SDK's own exit hook, which would wait for a dead collector.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("switchboard", version)
    ON = True
    return True


def stop(timeout: float = STOP_TIMEOUT) -> None:
    """Uninstall, and flush what is queued for at most ``timeout`` seconds (blocking: run it off
    the event loop). An exporter whose collector is down retries with backoff for up to its own
    10 s; a shutdown must not wait for that, so what is not out by then is dropped."""
    global ON, _tracer, _provider
    provider, ON, _tracer, _provider = _provider, False, None, None
    if provider is not None:
        # A daemon thread: the process may exit while it still waits on a dead collector.
        flushing = threading.Thread(target=provider.shutdown, name="switchboard-tracing-stop", daemon=True)
        flushing.start()
        flushing.join(timeout)


def _kind(name: str) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


def span(
    name: str,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
    headers: Iterable[tuple[bytes, bytes]] | None = None,
    start_ns: int | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around a block, current inside it (children nest): ``with span(...) as s``.

    ``s`` is None when tracing is off. ``headers`` (ASGI's, raw) may carry a caller's
    ``traceparent``: the span then joins the caller's trace. ``start_ns`` (``time.time_ns()``)
    backdates a span that is only worth recording once some of its work is done. An exception
    leaving the block is recorded on the span and sets its status to error.
    """
    if _tracer is None:
        return _NOOP
    parent = _from_headers(headers) if headers is not None else None
    return _tracer.start_as_current_span(
        name, context=parent, kind=_kind(kind), attributes=attributes, start_time=start_ns
    )


def traceparent(current: Span | None) -> bytes | None:
    """The W3C ``traceparent`` of a sampled span (what the envelope carries), else None: an
    unsampled publish sends nothing, so its receivers record nothing."""
    if current is None:
        return None
    ctx = current.get_span_context()
    if not ctx.trace_flags.sampled:
        return None
    return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)


def inject(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` to an outgoing request's headers (proxies)."""
    if _tracer is not None:
        from opentelemetry.propagate import inject as _inject

        _inject(headers)


def start_deliver(parent: bytes, channel: str) -> Span | None:
    """The ``deliver`` span of a traced publication (ended by the caller), or None if off or the
    ``traceparent`` is not valid: a malformed trace field never stops a delivery."""
    if _tracer is None:
        return None
    context = _extract(parent.decode("latin-1"))
    if context is None:
        return None
    return _tracer.start_span(
        "deliver",
        context=context,
        kind=_kind("consumer"),
        attributes={"messaging.system": "switchboard", "messaging.destination.name": channel},
    )


def set_error(current: Span) -> None:
    """Mark a span failed without an exception leaving it (a 5xx answer, a relay left to retry)."""
    from opentelemetry.trace import StatusCode

    current.set_status(StatusCode.ERROR)


def _from_headers(headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
    for name, value in headers:
        if name == b"traceparent":
            return _extract(value.decode("latin-1"))
    return None


def _extract(value: str) -> Context | None:
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": value})
    return context if get_current_span(context).get_span_context().is_valid else None


async def traced_http(app: ASGIApp, name: str, scope: Scope, receive: Receive, send: Send) -> None:
    """A ``server`` span around one HTTP request (the server API's), with its response status.

    A caller's ``traceparent`` header makes it part of the caller's trace.
    """
    status = [0]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        await send(message)

    attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
    with span(name, "server", attributes, scope["headers"]) as current:
        await app(scope, receive, sending)
        if current is not None:
            current.set_attribute("http.response.status_code", status[0])
            if status[0] >= 500:
                set_error(current)
