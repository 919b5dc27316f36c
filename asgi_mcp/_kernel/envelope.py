"""The SDK `Connection` of a 2026-07-28 request, built from its `_meta` envelope at a fraction of the cost.

`Connection.from_envelope` validates the envelope's client info and capabilities with pydantic and
makes an `anyio.Event` on every request: about 50 000 instructions, more than the transport's
whole validation ladder, for values a tool call almost never reads (`ctx.session.client_params`,
`client_capabilities`, `Context.client_capabilities`). `EnvelopeConnection` is a `Connection` whose
two envelope facts are worked out by `from_envelope` itself the first time either is read or set,
so whoever reads them gets exactly the SDK's values, each request its own objects (pydantic
models are mutable: sharing them between requests could leak one handler's change into another's),
and nobody who does not read them pays. The `initialized` event is born set; a set event cannot be
unset (anyio's has no `clear`), so one per app (`ReadyEvent`) serves every modern connection.
"""

from __future__ import annotations

import inspect
from contextlib import AsyncExitStack
from typing import Any

import anyio
from mcp.server.connection import Connection
from mcp_types import ClientCapabilities, InitializeRequestParams

__all__: list[str] = []

# `from_envelope`'s default outbound, the SDK's no-back-channel sentinel (`has_standalone_channel` compares
# against it), read off the signature rather than imported by its private name.
_NO_CHANNEL: Any = inspect.signature(Connection.from_envelope).parameters["outbound"].default


class ReadyEvent:
    """One set `anyio.Event` per app, made on first use (inside the app's event loop)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def get(self) -> anyio.Event:
        event = self._event
        if event is None:
            event = self._event = anyio.Event()
            event.set()
        return event


class EnvelopeConnection(Connection):
    """`Connection.from_envelope(protocol_version, client_info, client_capabilities)`, lazily.

    Everything `Connection.__init__` sets is set here (but `initialized` is the app's shared, set
    event); `client_params` and `client_capabilities` come from `from_envelope` on first access.
    """

    def __init__(self, protocol_version: str, client_info: Any, client_capabilities: Any, ready: anyio.Event) -> None:
        # Connection.__init__ is not called: it would make the event this class exists to spare.
        self.outbound = _NO_CHANNEL
        self.protocol_version = protocol_version
        self.session_id = None
        self.initialized = ready
        self.state = {}
        self.exit_stack = AsyncExitStack()
        self._envelope: tuple[Any, Any] | None = (client_info, client_capabilities)
        self._params: InitializeRequestParams | None = None
        self._capabilities: ClientCapabilities | None = None

    def _resolve(self) -> None:
        envelope = self._envelope
        if envelope is not None:
            self._envelope = None
            built = Connection.from_envelope(self.protocol_version, *envelope)
            self._params, self._capabilities = built.client_params, built.client_capabilities

    @property
    def client_params(self) -> InitializeRequestParams | None:
        self._resolve()
        return self._params

    @client_params.setter
    def client_params(self, value: InitializeRequestParams | None) -> None:
        # As `Connection`'s setter: recording client params records their capabilities too.
        self._resolve()
        self._params = value
        if value is not None:
            self._capabilities = value.capabilities

    @property
    def client_capabilities(self) -> ClientCapabilities | None:
        self._resolve()
        return self._capabilities

    @client_capabilities.setter
    def client_capabilities(self, value: ClientCapabilities | None) -> None:  # pyright: ignore[reportIncompatibleVariableOverride]
        self._resolve()
        self._capabilities = value

    @property
    def initialize_accepted(self) -> bool:
        # `Connection`'s test with its operands swapped (the same answer: both are plain reads), so
        # the kernel's gate, read on every request, does not validate the envelope.
        return self.initialized.is_set() or self.client_params is not None
