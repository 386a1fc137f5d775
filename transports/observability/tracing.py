"""W3C Trace Context through the broker, and OpenTelemetry spans when asked for.

Propagation (always on): a ``traceparent`` (and its ``tracestate``) is a
message header like any other, so one a publisher puts in a message's
headers reaches every consumer, over REST, WebSocket and GraphQL. REST
publishes also take it from the HTTP request's own ``traceparent`` header
(`trace_headers`, `with_trace`), as an instrumented HTTP client sends it; a
header in the message itself wins. A malformed ``traceparent`` is ignored,
as W3C Trace Context (section 4.3) asks.

Spans (``BROKER_OTEL=true``, needs ``pip install 'wsbroker[otel]'``): a
`Tracing` makes spans ``publish <queue>`` (producer), ``deliver <queue>``
(consumer) and ``ack <queue>`` / ``nack <queue>`` for each message that
carries a ``traceparent``, each a child of that context (the trace the
publisher started goes on through the broker), and exports them with the
OTLP exporter (configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables), or with the SDK tracer provider the process already installed.
When spans are off, ``BrokerContext.tracing`` is ``None`` and each hook on
the hot path is one ``is not None`` test per batch.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from broker_core.messages import PublishRequest
    from broker_core.settings import Settings

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "Tracing",
    "trace_headers",
    "tracing_from_settings",
    "valid_traceparent",
    "with_trace",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_MAX_TRACESTATE = 512
"""W3C Trace Context section 3.3.1.5: vendors must propagate at least 512 characters."""
_REMEMBERED = 100_000
"""Delivered traced messages whose context waits for their settle (oldest forgotten first)."""


def valid_traceparent(value: str) -> bool:
    """Whether ``value`` is a ``traceparent`` to honour (W3C Trace Context section 3.2)."""
    match = _TRACEPARENT.match(value)
    return match is not None and match[1] != "ff" and match[2] != "0" * 32 and match[3] != "0" * 16


def trace_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The trace context of an ASGI request's raw headers, as message headers; ``None`` if none.

    Read from the scope's list, not through a headers object: it runs on
    every REST publish, traced or not.
    """
    parent = state = None
    for name, value in raw:
        if name == b"traceparent":
            parent = value.decode("latin-1").strip()
        elif name == b"tracestate":
            state = value.decode("latin-1").strip()
    if parent is None or not valid_traceparent(parent):
        return None
    context = {TRACEPARENT: parent}
    if state and len(state) <= _MAX_TRACESTATE:
        context[TRACESTATE] = state
    return context


def with_trace(messages: list[PublishRequest], context: dict[str, str]) -> list[PublishRequest]:
    """``messages``, each given ``context`` unless it carries a ``traceparent`` of its own."""
    traced = []
    for message in messages:
        headers = message.headers
        if headers is None or TRACEPARENT not in headers:
            message = msgspec.structs.replace(message, headers={**(headers or {}), **context})
        traced.append(message)
    return traced


class Tracing:
    """Spans of traced messages through the broker (see the module).

    Args:
        provider: an OpenTelemetry SDK ``TracerProvider``.
    """

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._provider = provider
        self._tracer = provider.get_tracer("wsbroker")
        self._propagator = TraceContextTextMapPropagator()
        self._delivered: OrderedDict[int, tuple[Any, str]] = OrderedDict()

    def _span(
        self, name: str, kind: str, headers: Mapping[str, str], attributes: dict[str, Any]
    ) -> Any:
        parent = self._propagator.extract(carrier=dict(headers))
        return self._tracer.start_span(
            name,
            context=parent,
            kind=getattr(self._trace.SpanKind, kind),
            attributes={"messaging.system": "wsbroker", **attributes},
        )

    def published(
        self,
        queue: str,
        messages: Sequence[Any],
        ids: Sequence[int | None],
        started_ns: int,
        transport: str,
    ) -> None:
        """Record ``publish`` spans, from ``started_ns`` to now, of the traced ``messages``.

        ``messages`` have ``headers`` (requests or WebSocket frames); ``ids``
        are the stored messages' ids, ``None`` for one refused.
        """
        for message, id in zip(messages, ids, strict=False):
            headers = message.headers
            if id is None:
                continue
            if headers is None or TRACEPARENT not in headers:
                continue
            span = self._tracer.start_span(
                f"publish {queue}",
                context=self._propagator.extract(carrier=dict(headers)),
                kind=self._trace.SpanKind.PRODUCER,
                start_time=started_ns,
                attributes={
                    "messaging.system": "wsbroker",
                    "messaging.operation.name": "publish",
                    "messaging.destination.name": queue,
                    "messaging.message.id": str(id),
                    "network.protocol.name": transport,
                },
            )
            span.end()

    def delivered(
        self, queue: str, deliveries: Iterable[tuple[int, Any, int]], transport: str
    ) -> None:
        """Record ``deliver`` spans of the traced deliveries, ``(id, headers, attempt)`` each.

        Their contexts are remembered for the spans of their settles.
        """
        remembered = self._delivered
        for id, headers, attempt in deliveries:
            if headers is None or TRACEPARENT not in headers:
                continue
            span = self._span(
                f"deliver {queue}",
                "CONSUMER",
                headers,
                {
                    "messaging.operation.name": "deliver",
                    "messaging.destination.name": queue,
                    "messaging.message.id": str(id),
                    "messaging.message.delivery_attempt": attempt,
                    "network.protocol.name": transport,
                },
            )
            span.end()
            remembered[id] = (headers, queue)
            if len(remembered) > _REMEMBERED:
                remembered.popitem(last=False)

    def settled(self, ids: Iterable[int], operation: str) -> None:
        """Record ``ack`` or ``nack`` spans of the settled traced messages among ``ids``."""
        remembered = self._delivered
        for id in ids:
            found = remembered.pop(id, None)
            if found is None:
                continue
            headers, queue = found
            self._span(
                f"{operation} {queue}",
                "INTERNAL",
                headers,
                {
                    "messaging.operation.name": operation,
                    "messaging.destination.name": queue,
                    "messaging.message.id": str(id),
                },
            ).end()

    def shutdown(self) -> None:
        """Export what is buffered (at the broker's stop)."""
        flush = getattr(self._provider, "force_flush", None)
        if flush is not None:
            flush()


def tracing_from_settings(settings: Settings) -> Tracing | None:
    """The broker's `Tracing` when ``settings.otel``, else ``None`` (spans off).

    Uses the SDK tracer provider already installed in the process (an
    embedding application's, or a test's), else installs one exporting over
    OTLP/HTTP.

    Raises:
        StartError: ``otel`` is on but the ``otel`` extra is not installed
            (``broker serve`` prints it in one line).
    """
    if not settings.otel:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        from ..startup import StartError

        raise StartError("BROKER_OTEL needs the otel extra: pip install 'wsbroker[otel]'") from exc
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    return Tracing(provider)
