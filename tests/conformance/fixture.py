"""Conformance "everything" fixture for the official MCP conformance suite.

`build_server()` returns a fresh `MCPServer` exposing every tool, resource,
resource template, prompt and completion that the server scenarios of
`@modelcontextprotocol/conformance` 0.1.16 and 0.2.0-alpha.12 look up by name,
for both protocol eras:

* legacy (handshake/session, <= 2025-11-25): logging, progress, sampling and
  elicitation travel as server-to-client messages on the request's SSE stream;
* modern (2026-07-28): the same asks travel inside `InputRequiredResult`
  (multi-round-trip requests), change notifications go to
  `subscriptions/listen` streams, list results carry cache hints.

The fixture is transport-neutral (it never touches HTTP) so the same server can
sit behind the SDK's own transport (`serve_sdk.py`) or behind `asgi_mcp`, and it
only sleeps with `anyio.sleep` so it runs on asyncio and on Trio.
"""

import base64
import json
from collections.abc import Mapping
from typing import Annotated, Any, Final, get_args

import anyio
import mcp_types as types
from mcp.server import CacheHint, MCPServer, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.mcpserver import Context, Message, UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.methods import CacheableMethod
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

__all__ = ["SERVER_NAME", "build_server"]

SERVER_NAME: Final = "mcp-conformance-test-server"
SERVER_VERSION: Final = "1.0.0"

# 1x1 red PNG and a minimal WAV, the payloads the scenarios' expectations were written against.
TEST_IMAGE_BASE64: Final = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
TEST_AUDIO_BASE64: Final = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

WATCHED_RESOURCE_URI: Final = "test://watched-resource"

# Must reach tools/list verbatim: json-schema-2020-12 checks $schema, $defs, additionalProperties and
# (SEP-2106, failing on 2026-07-28) $anchor, allOf/anyOf and if/then/else.
JSON_SCHEMA_2020_12: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

# Lists mutate at run time (test_trigger_*_change), so they are never fresh; the resources are static.
_LIST_HINT: Final = CacheHint(ttl_ms=0, scope="private")
_STATIC_HINT: Final = CacheHint(ttl_ms=60_000, scope="public")
CACHE_HINTS: Final[Mapping[CacheableMethod, CacheHint]] = {
    "tools/list": _LIST_HINT,
    "prompts/list": _LIST_HINT,
    "server/discover": _LIST_HINT,
    "resources/list": _STATIC_HINT,
    "resources/templates/list": _STATIC_HINT,
    "resources/read": _STATIC_HINT,
}

_LOG_LEVELS: Final[tuple[types.LoggingLevel, ...]] = get_args(types.LoggingLevel)

# Which client capability each server-to-client request needs (legacy and modern alike).
_CAPABILITY_FOR_METHOD: Final[Mapping[str, str]] = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}

InputRequest = types.CreateMessageRequest | types.ListRootsRequest | types.ElicitRequest
InputResponse = (
    types.CreateMessageResult | types.CreateMessageResultWithTools | types.ListRootsResult | types.ElicitResult
)


# --------------------------------------------------------------------------------------------------
# Era-neutral helpers
# --------------------------------------------------------------------------------------------------


def _is_modern(ctx: Context) -> bool:
    return ctx.request_context.protocol_version in MODERN_PROTOCOL_VERSIONS


async def _log(ctx: Context, level: types.LoggingLevel, message: str) -> None:
    """Send `notifications/message` on this request's stream.

    Legacy era: always (filtering is `logging/setLevel`'s job, which we only acknowledge).
    Modern era: only when the request opted in with `_meta["io.modelcontextprotocol/logLevel"]`
    at or below `level` (server-stateless checks that nothing is sent otherwise).
    Built on `send_notification` rather than the SDK's deprecated logging helpers, which would
    raise under `-W error` (pytest's `filterwarnings = error`).
    """
    rc = ctx.request_context
    if rc.protocol_version in MODERN_PROTOCOL_VERSIONS:
        requested = (rc.meta or {}).get(types.LOG_LEVEL_META_KEY)
        if requested not in _LOG_LEVELS or _LOG_LEVELS.index(level) < _LOG_LEVELS.index(requested):
            return
    notification = types.LoggingMessageNotification(
        params=types.LoggingMessageNotificationParams(level=level, data=message, logger="conformance-fixture")
    )
    await rc.session.send_notification(notification, related_request_id=rc.request_id)


def _require_capabilities(ctx: Context, methods: list[str]) -> None:
    """Raise MissingRequiredClientCapability (-32021) unless the client declared what `methods` need."""
    declared = ctx.client_capabilities
    needed = {_CAPABILITY_FOR_METHOD[method] for method in methods}
    missing = sorted(name for name in needed if declared is None or getattr(declared, name) is None)
    if missing:
        data = types.MissingRequiredClientCapabilityErrorData(
            required_capabilities=types.ClientCapabilities.model_validate({name: {} for name in missing})
        )
        raise MCPError(
            code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
            message=f"Client did not declare required capabilities: {', '.join(missing)}",
            data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
        )


async def _send_in_band(ctx: Context, request: InputRequest) -> InputResponse:
    """Legacy era: send `request` to the client on this request's SSE stream and await the answer."""
    rc = ctx.request_context
    metadata = ServerMessageMetadata(related_request_id=rc.request_id)
    if isinstance(request, types.ElicitRequest):
        return await rc.session.send_request(request, types.ElicitResult, metadata=metadata)
    if isinstance(request, types.CreateMessageRequest):
        return await rc.session.send_request(request, types.CreateMessageResult, metadata=metadata)
    return await rc.session.send_request(request, types.ListRootsResult, metadata=metadata)


async def _ask(
    ctx: Context, requests: Mapping[str, InputRequest], *, request_state: str | None = None
) -> dict[str, InputResponse] | types.InputRequiredResult:
    """Collect the client's answers to `requests`, keyed like `requests`.

    Legacy era: each request goes out in-band and the answers come back at once.
    Modern era (SEP-2322 MRTR): answers come from the retry's `inputResponses`; while any key is
    missing (first round, or a retry with wrong keys) the caller must return the
    `InputRequiredResult` we hand back, which re-requests everything (extra keys are ignored).
    `request_state` is plaintext: MCPServer's RequestStateBoundary seals it on the way out and
    rejects a tampered echo with -32602 before the tool runs.
    """
    _require_capabilities(ctx, [request.method for request in requests.values()])
    if not _is_modern(ctx):
        return {key: await _send_in_band(ctx, request) for key, request in requests.items()}
    responses = ctx.input_responses or {}
    if all(key in responses for key in requests):
        return {key: responses[key] for key in requests}
    return types.InputRequiredResult(input_requests=dict(requests), request_state=request_state)


def _elicit(message: str, properties: dict[str, Any], required: list[str]) -> types.ElicitRequest:
    schema = {"type": "object", "properties": properties, "required": required}
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(prompt: str, max_tokens: int) -> types.CreateMessageRequest:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(messages=[message], max_tokens=max_tokens)
    )


def _list_roots() -> types.ListRootsRequest:
    return types.ListRootsRequest()


def _elicited(response: InputResponse, field: str) -> str:
    """A field of an accepted elicitation, or a marker naming the action the user took instead."""
    if not isinstance(response, types.ElicitResult):
        return "<not an elicitation result>"
    if response.action != "accept" or response.content is None:
        return f"<{response.action}>"
    return str(response.content.get(field, f"<no {field}>"))


def _sampled(response: InputResponse) -> str:
    if isinstance(response, types.CreateMessageResult) and isinstance(response.content, types.TextContent):
        return response.content.text
    return "<no text>"


def _roots(response: InputResponse) -> str:
    if not isinstance(response, types.ListRootsResult):
        return "<not a roots result>"
    return ", ".join(str(root.uri) for root in response.roots) or "<no roots>"


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


# --------------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------------


def test_simple_text() -> types.CallToolResult:
    """Tests simple text content response"""
    return _text("This is a simple text response for testing.")


def test_image_content() -> types.CallToolResult:
    """Tests image content response"""
    return types.CallToolResult(
        content=[types.ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")]
    )


def test_audio_content() -> types.CallToolResult:
    """Tests audio content response"""
    return types.CallToolResult(
        content=[types.AudioContent(type="audio", data=TEST_AUDIO_BASE64, mime_type="audio/wav")]
    )


def test_embedded_resource() -> types.CallToolResult:
    """Tests embedded resource content response"""
    resource = types.TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=resource)])


def test_multiple_content_types() -> types.CallToolResult:
    """Tests response with multiple content types (text, image, resource)"""
    resource = types.TextResourceContents(
        uri="test://mixed-content-resource", mime_type="application/json", text='{"test":"data","value":123}'
    )
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png"),
            types.EmbeddedResource(type="resource", resource=resource),
        ]
    )


async def test_tool_with_logging(ctx: Context) -> types.CallToolResult:
    """Tests tool that emits log messages during execution"""
    # The sleeps make the notifications arrive *during* the call, which is what the scenario checks.
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool execution completed")
    return _text("Tool with logging executed successfully")


async def test_tool_with_progress(ctx: Context) -> types.CallToolResult:
    """Tests tool that reports progress notifications"""
    # report_progress is a no-op when the request carried no progressToken.
    for step, progress in enumerate((0, 50, 100)):
        if step:
            await anyio.sleep(0.05)
        await ctx.report_progress(progress=progress, total=100, message=f"Completed step {progress} of 100")
    token = (ctx.request_context.meta or {}).get("progress_token")
    return _text(str(token) if token is not None else "no progress token")


def test_error_handling() -> types.CallToolResult:
    """Tests error response handling"""
    # A tool-level error (isError: true), not a JSON-RPC error: that is what tools-call-error expects.
    return types.CallToolResult(
        content=[types.TextContent(type="text", text="This tool intentionally returns an error for testing")],
        is_error=True,
    )


async def test_sampling(prompt: str, ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Tests server-initiated sampling (LLM completion request)"""
    answers = await _ask(ctx, {"llm_response": _sample(prompt, 100)})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    return _text(f"LLM response: {_sampled(answers['llm_response'])}")


async def test_elicitation(message: str, ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Tests server-initiated elicitation (user input request)"""
    request = _elicit(
        message,
        {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        ["username", "email"],
    )
    answers = await _ask(ctx, {"user_info": request})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    answer = answers["user_info"]
    # Report what came back without validating it against the schema: the harness answers freely.
    content = json.dumps(answer.content if isinstance(answer, types.ElicitResult) else None)
    action = answer.action if isinstance(answer, types.ElicitResult) else "unknown"
    return _text(f"User response: action={action}, content={content}")


async def test_elicitation_sep1034_defaults(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Tests elicitation with default values for all primitive types (SEP-1034)"""
    request = _elicit(
        "Please provide user information",
        {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        },
        [],
    )
    answers = await _ask(ctx, {"user_info": request})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    answer = answers["user_info"]
    action = answer.action if isinstance(answer, types.ElicitResult) else "unknown"
    content = json.dumps(answer.content if isinstance(answer, types.ElicitResult) else None)
    return _text(f"Elicitation completed: action={action}, content={content}")


async def test_elicitation_sep1330_enums(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Tests elicitation with enum schema variations (SEP-1330)"""
    request = _elicit(
        "Please select values using different enum schema types",
        {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "minItems": 1,
                "maxItems": 3,
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
        [],
    )
    answers = await _ask(ctx, {"selection": request})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    answer = answers["selection"]
    action = answer.action if isinstance(answer, types.ElicitResult) else "unknown"
    content = json.dumps(answer.content if isinstance(answer, types.ElicitResult) else None)
    return _text(f"Elicitation completed: action={action}, content={content}")


def json_schema_2020_12_tool() -> types.CallToolResult:
    """Tool with JSON Schema 2020-12 features"""
    return _text("JSON Schema 2020-12 tool called")


async def test_reconnection(ctx: Context) -> types.CallToolResult:
    """Tests SSE polling by closing the request's stream mid-call (SEP-1699)"""
    await _log(ctx, "info", "Before disconnect")
    # Close at once: a transport must still deliver the priming event (id + retry) and the queued
    # log before ending the response (the SDK's loses them under Trio); the client then reconnects
    # with GET + Last-Event-ID after `retry` ms.
    await ctx.close_sse_stream()
    # Finish while the client is away: the result must be replayed from the event store.
    await anyio.sleep(0.2)
    await _log(ctx, "info", "After reconnect")
    return _text("Reconnection test completed")


_REGION_HEADER: Final[dict[str, Any]] = {"x-mcp-header": "Region"}


async def test_x_mcp_header(
    region: Annotated[str, Field(description="Sent as the Mcp-Param-Region header", json_schema_extra=_REGION_HEADER)],
) -> types.CallToolResult:
    """Tests SEP-2243 custom headers: `region` is mirrored into the Mcp-Param-Region header"""
    return _text(f"region={region}")


def test_missing_capability(ctx: Context) -> types.CallToolResult:
    """Requires the sampling client capability; undeclared clients get -32021 (SEP-2575)"""
    _require_capabilities(ctx, ["sampling/createMessage"])
    return _text("Sampling capability is declared")


async def test_logging_tool(ctx: Context) -> types.CallToolResult:
    """Emits a log message, which modern-era requests only receive when they set a log level"""
    await _log(ctx, "info", "test_logging_tool executed")
    return _text("Logging tool executed")


async def test_streaming_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Elicits input without an independent request on the modern response stream (SEP-2575)"""
    # Progress notifications are fine on the stream; the elicitation itself rides in the result
    # (modern era) or goes out as a related server-to-client request (legacy era).
    await ctx.report_progress(progress=50, total=100, message="Waiting for confirmation")
    answers = await _ask(ctx, {"confirm": _elicit("Confirm?", {"ok": {"type": "boolean"}}, ["ok"])})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    return _text(f"Streaming elicitation completed: ok={_elicited(answers['confirm'], 'ok')}")


def _dynamic_tool() -> types.CallToolResult:
    """Appears and disappears when test_trigger_tool_change runs"""
    return _text("dynamic tool called")


def _dynamic_prompt() -> list[Message]:
    """Appears and disappears when test_trigger_prompt_change runs"""
    return [UserMessage(content="dynamic prompt")]


async def test_trigger_tool_change(ctx: Context) -> types.CallToolResult:
    """Adds or removes a tool and notifies subscriptions/listen streams (toolsListChanged)"""
    server = ctx.mcp_server
    if any(tool.name == "test_dynamic_tool" for tool in await server.list_tools()):
        server.remove_tool("test_dynamic_tool")
    else:
        server.add_tool(_dynamic_tool, name="test_dynamic_tool")
    await ctx.notify_tools_changed()
    return _text("Tool list changed")


async def test_trigger_prompt_change(ctx: Context) -> types.CallToolResult:
    """Adds or removes a prompt and notifies subscriptions/listen streams (promptsListChanged)"""
    server = ctx.mcp_server
    if any(prompt.name == "test_dynamic_prompt" for prompt in await server.list_prompts()):
        server.remove_prompt("test_dynamic_prompt")
    else:
        server.prompt(name="test_dynamic_prompt")(_dynamic_prompt)
    await ctx.notify_prompts_changed()
    return _text("Prompt list changed")


# --- SEP-2322 multi-round-trip requests (2026-07-28); in-band requests on the legacy era -------------

_NAME_REQUEST: Final = _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])


async def test_input_required_result_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Asks for the user's name through an elicitation input request"""
    answers = await _ask(ctx, {"user_name": _NAME_REQUEST})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    return _text(f"Hello, {_elicited(answers['user_name'], 'name')}!")


async def test_input_required_result_sampling(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Asks the client's LLM a question through a sampling input request"""
    answers = await _ask(ctx, {"capital_question": _sample("What is the capital of France?", 100)})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    return _text(f"LLM said: {_sampled(answers['capital_question'])}")


async def test_input_required_result_list_roots(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Asks for the client's roots through a roots/list input request"""
    answers = await _ask(ctx, {"client_roots": _list_roots()})
    if isinstance(answers, types.InputRequiredResult):
        return answers
    return _text(f"Client roots: {_roots(answers['client_roots'])}")


_REQUEST_STATE: Final = "request-state:v1"


async def test_input_required_result_request_state(
    ctx: Context,
) -> types.CallToolResult | types.InputRequiredResult:
    """Round-trips requestState alongside the input request and checks it on the retry"""
    confirm = _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
    answers = await _ask(ctx, {"confirm": confirm}, request_state=_REQUEST_STATE)
    if isinstance(answers, types.InputRequiredResult):
        return answers
    if _is_modern(ctx) and ctx.request_state != _REQUEST_STATE:
        raise MCPError(code=types.INVALID_PARAMS, message="requestState missing or unexpected")
    return _text(f"state-ok: confirmed={_elicited(answers['confirm'], 'ok')}")


async def test_input_required_result_multiple_inputs(
    ctx: Context,
) -> types.CallToolResult | types.InputRequiredResult:
    """Asks for an elicitation, a sampling and a roots/list answer in one round"""
    requests: dict[str, InputRequest] = {
        "user_name": _NAME_REQUEST,
        "greeting": _sample("Generate a greeting", 50),
        "client_roots": _list_roots(),
    }
    answers = await _ask(ctx, requests, request_state="multiple-inputs:v1")
    if isinstance(answers, types.InputRequiredResult):
        return answers
    name = _elicited(answers["user_name"], "name")
    return _text(f"name={name}; greeting={_sampled(answers['greeting'])}; roots={_roots(answers['client_roots'])}")


async def test_input_required_result_multi_round(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
    """Asks two questions in two consecutive rounds, carrying round one's answer in requestState"""
    # Modern: round 1 (no state) and round 2 (state "round-1") both run the first block; round 2
    # then asks step2 with a new state that carries the name, which round 3 reads back.
    # Legacy: one call runs straight through, asking both questions in-band.
    state = ctx.request_state
    if state is not None and state.startswith("round-2:"):
        name = str(json.loads(state.removeprefix("round-2:"))["name"])
    else:
        step1 = _elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
        first = await _ask(ctx, {"step1": step1}, request_state="round-1")
        if isinstance(first, types.InputRequiredResult):
            return first
        name = _elicited(first["step1"], "name")
        state = "round-2:" + json.dumps({"name": name})
    step2 = _elicit("Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"])
    second = await _ask(ctx, {"step2": step2}, request_state=state)
    if isinstance(second, types.InputRequiredResult):
        return second
    return _text(f"{name}'s favorite color is {_elicited(second['step2'], 'color')}")


async def test_input_required_result_tampered_state(
    ctx: Context,
) -> types.CallToolResult | types.InputRequiredResult:
    """Issues integrity-protected requestState; a tampered echo is rejected before this runs"""
    # MCPServer's RequestStateBoundary seals the state (AES-GCM) and answers a modified echo with
    # -32602, so reaching the second round here means the state verified.
    confirm = _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
    answers = await _ask(ctx, {"confirm": confirm}, request_state="tamper-check:v1")
    if isinstance(answers, types.InputRequiredResult):
        return answers
    return _text(f"state verified: confirmed={_elicited(answers['confirm'], 'ok')}")


async def test_input_required_result_capabilities(
    ctx: Context,
) -> types.CallToolResult | types.InputRequiredResult:
    """Only asks for inputs the client declared capabilities for"""
    declared = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if declared is not None and declared.elicitation is not None:
        requests["user_name"] = _NAME_REQUEST
    if declared is not None and declared.sampling is not None:
        requests["capital_question"] = _sample("What is the capital of France?", 100)
    if not requests:
        return _text("Client declared neither elicitation nor sampling; nothing to ask")
    answers = await _ask(ctx, requests)
    if isinstance(answers, types.InputRequiredResult):
        return answers
    return _text(f"Answered {len(answers)} input request(s): {', '.join(sorted(answers))}")


# tools/list order is registration order; test_simple_text stays first because the header
# scenarios call tools[0] with empty arguments.
_TOOLS: Final = (
    test_simple_text,
    test_image_content,
    test_audio_content,
    test_embedded_resource,
    test_multiple_content_types,
    test_tool_with_logging,
    test_tool_with_progress,
    test_error_handling,
    test_sampling,
    test_elicitation,
    test_elicitation_sep1034_defaults,
    test_elicitation_sep1330_enums,
    json_schema_2020_12_tool,
    test_reconnection,
    test_x_mcp_header,
    test_missing_capability,
    test_logging_tool,
    test_streaming_elicitation,
    test_trigger_tool_change,
    test_trigger_prompt_change,
    test_input_required_result_elicitation,
    test_input_required_result_sampling,
    test_input_required_result_list_roots,
    test_input_required_result_request_state,
    test_input_required_result_multiple_inputs,
    test_input_required_result_multi_round,
    test_input_required_result_tampered_state,
    test_input_required_result_capabilities,
)


def _make_tools() -> list[Tool]:
    tools = [Tool.from_function(fn) for fn in _TOOLS]
    # MCPServer derives inputSchema from the signature; this one must be published verbatim.
    return [
        tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12}) if tool.name == "json_schema_2020_12_tool" else tool
        for tool in tools
    ]


# --------------------------------------------------------------------------------------------------
# Server assembly
# --------------------------------------------------------------------------------------------------


def build_server() -> MCPServer:
    """A fresh fixture server (tools, resources, prompts, completion, legacy subscribe/logging)."""
    server: MCPServer = MCPServer(
        SERVER_NAME,
        version=SERVER_VERSION,
        tools=_make_tools(),
        cache_hints=CACHE_HINTS,
        log_level="WARNING",
    )
    subscriptions: set[str] = set()

    # ---- resources ----
    @server.resource("test://static-text", mime_type="text/plain")
    def static_text() -> str:
        """A static text resource for testing"""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """A static binary resource (image) for testing"""
        return base64.b64decode(TEST_IMAGE_BASE64)

    @server.resource("test://template/{id}/data", mime_type="application/json")
    def template_data(id: str) -> str:
        """A resource template with parameter substitution"""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource(WATCHED_RESOURCE_URI, mime_type="text/plain")
    def watched_resource() -> str:
        """A resource that can be subscribed to for updates"""
        return "Watched resource content"

    # ---- prompts ----
    @server.prompt()
    def test_simple_prompt() -> list[Message]:
        """A simple prompt without arguments"""
        return [UserMessage(content="This is a simple prompt for testing.")]

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
        """A prompt with required arguments"""
        return [UserMessage(content=f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
        """A prompt that includes an embedded resource"""
        resource = types.TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(content=types.EmbeddedResource(type="resource", resource=resource)),
            UserMessage(content="Please process the embedded resource above."),
        ]

    @server.prompt()
    def test_prompt_with_image() -> list[Message]:
        """A prompt that includes image content"""
        return [
            UserMessage(content=types.ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")),
            UserMessage(content="Please analyze the image above."),
        ]

    @server.prompt()
    async def test_input_required_result_prompt(ctx: Context) -> list[Message] | types.InputRequiredResult:
        """A prompt that asks the client for context before rendering (SEP-2322)"""
        request = _elicit("What context should the prompt use?", {"context": {"type": "string"}}, ["context"])
        answers = await _ask(ctx, {"user_context": request})
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return [UserMessage(content=f"Use this context: {_elicited(answers['user_context'], 'context')}")]

    # ---- methods MCPServer does not wire up: completion, and the legacy-only ones ----
    # Registered on the low-level server (MCPServer keeps it private): registering them is also
    # what makes the legacy capabilities advertise `logging` and `resources.subscribe`. The SDK
    # answers them with 404/-32601 on the modern wire regardless.
    lowlevel = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]

    async def set_logging_level(
        ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        # Acknowledged only; _log sends every level on the legacy era.
        return types.EmptyResult()

    async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    async def complete(ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> types.CompleteResult:
        # Prefix-matches a few canned values (an empty list would do too). Registered here rather
        # than with MCPServer.completion(), whose decorator is untyped.
        candidates = ("paris", "park", "party", "test-value") if params.argument.name in ("arg1", "arg2") else ()
        values = [value for value in candidates if value.startswith(params.argument.value)]
        return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))

    lowlevel.add_request_handler("completion/complete", types.CompleteRequestParams, complete)
    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_logging_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)

    # ---- unknown tools: a protocol error, not a tool error ----
    # MCPServer turns an unknown name into an `isError` result; the spec (server/tools, "Error
    # Handling") wants JSON-RPC -32602 for unknown tools, so check before the handler runs.
    async def reject_unknown_tools(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.request_id is not None and isinstance(ctx.params, Mapping):
            name = ctx.params.get("name")
            if isinstance(name, str) and name not in {tool.name for tool in await server.list_tools()}:
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")
        return await call_next(ctx)

    server.middleware.append(reject_unknown_tools)
    return server
