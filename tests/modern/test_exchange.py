"""A modern exchange's `DispatchContext` pieces made cheaply: the same values the SDK's would hold."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext

from asgi_mcp._core.asgi import HttpRequest
from asgi_mcp._core.http import Headers
from asgi_mcp._kernel.context import progress_token
from asgi_mcp._modern.exchange import ExchangeContext

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
tokens = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4) | json_values
metas = st.one_of(json_values, st.dictionaries(st.just("progressToken"), tokens, max_size=1), st.just({}))
params = st.none() | st.dictionaries(st.sampled_from(["_meta", "name"]), metas, max_size=2)


@given(params=params)
def test_the_progress_token_reads_as_the_sdk_reads_it(params: dict[str, Any] | None) -> None:
    assert progress_token(params) == progress_token_from_params(params)
    assert type(progress_token(params)) is type(progress_token_from_params(params))


def test_the_transport_context_is_made_once_with_the_requests_headers() -> None:
    headers = Headers([(b"x-probe", b"1")])
    request = HttpRequest("POST", "/mcp", headers, {})
    dctx = ExchangeContext(headers, 1, ServerMessageMetadata(request_context=request, can_send_request=False))
    transport = dctx.transport
    assert transport == TransportContext(kind="streamable-http", can_send_request=False, headers=headers)
    assert transport.headers is headers
    assert dctx.transport is transport
