"""Minimal JSON-RPC 2.0 classification: no pydantic model on the hot path.

The SDK's server core validates params per method; the transport only needs to know what kind of
message a body holds, to route it and to answer malformed input precisely.

JSON goes through pydantic-core's Rust codec (the SDK's own dependency), two to three times the
stdlib's speed both ways. Answers are written as pydantic's JSON mode writes them, which is what
the SDK's own transport puts on the wire; bodies are read exactly as `json.loads` reads them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic_core import from_json, to_json, to_jsonable_python

from .errors import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, ProtocolError

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.dispatch")

RequestId = str | int
Kind = Literal["request", "notification", "response", "error"]

INTERNAL_ERROR_MESSAGE: Final = "Internal error"


def dumps_bytes(value: Any) -> bytes:
    """Compact JSON, non-ASCII as UTF-8 text: the JSON of every message of both eras.

    As pydantic's JSON mode (the SDK's wire): NaN and the infinities are null (an answer never
    holds text that is not JSON), and dates, UUIDs, enums, sets, tuples and non-string keys are
    written as pydantic writes them. A value nested deeper than pydantic-core writes (254 levels)
    goes to the stdlib's encoder, which goes to about 990. Raises ValueError for what neither
    writes: objects of unknown types, cycles, lone surrogates (see `written_answer` for answers).
    """
    try:
        return to_json(value, inf_nan_mode="null")
    except ValueError:
        return _dumps_deep(value)


def dumps(value: Any) -> str:
    """`dumps_bytes` as text, for the places that frame it (SSE events, stored events)."""
    return dumps_bytes(value).decode()


# For what pydantic-core refuses, deep nesting above all: the stdlib's compact encoder, handing
# what it cannot write to pydantic's (dates, sets, ...), which raises for the rest.
_DEEP_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=to_jsonable_python
)


def _dumps_deep(value: Any) -> bytes:
    try:
        return _DEEP_ENCODER.encode(value).encode()  # encoded here, so that a lone surrogate raises
    except RecursionError:
        raise ValueError("nested too deeply to be written as JSON") from None


def written_answer(answer: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """A request's answer as it is sent, and its JSON (`dumps_bytes`). One that cannot be written
    (its result or its error's data holds what JSON cannot: an object of an unknown type, a cycle,
    ...) is logged and becomes an internal error with the request's id, so the client still gets
    its answer and its stream still ends; that error is also what is stored for replay."""
    try:
        return answer, dumps_bytes(answer)
    except ValueError:
        replacement = _unwritable(answer)
        return replacement, dumps_bytes(replacement)


def _unwritable(answer: dict[str, Any]) -> dict[str, Any]:
    request_id = answer.get("id")
    logger.exception("the answer to request %r cannot be written as JSON", request_id)
    return error_message(request_id, INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)


# What `json.loads` runs for a `str` once its wrappers are done (the C scanner where there is one): a
# body pydantic-core refuses is read again with it, to refuse it exactly as `json.loads` would, or
# to read what JSON allows and pydantic-core does not take (an escaped lone surrogate, nesting past
# its depth limit). (An instance attribute the decoder sets up, which typeshed does not declare.)
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = vars(json.JSONDecoder())["scan_once"]
# JSON's whitespace (RFC 8259 §2), all that `json.loads` skips around the value.
_JSON_WHITESPACE: Final = " \t\n\r"
_ID_TYPES: Final = (str, int)


# pydantic-core reads integers of up to 4300 digits whatever the interpreter's limit; the stdlib
# reads what `sys.set_int_max_str_digits` allows (0: no limit), which a process may have lowered.
_PYDANTIC_INT_DIGITS: Final = 4300
_int_digits_limit: Final[Callable[[], int]] = getattr(sys, "get_int_max_str_digits", lambda: 0)


def _ints_read_as_json_does() -> bool:
    limit = _int_digits_limit()
    return limit == 0 or limit >= _PYDANTIC_INT_DIGITS


def _loads_as_json_does(body: bytes) -> Any:
    """`json.loads` of the body, strictly UTF-8 (RFC 8259 §8.1: `json.loads` would sniff UTF-16
    and UTF-32 from raw bytes); raises ValueError, RecursionError or StopIteration."""
    text = body.decode("utf-8").strip(_JSON_WHITESPACE)
    decoded, end = _scan_once(text, 0)
    if end != len(text):
        raise ValueError("Extra data")
    return decoded


@dataclass(slots=True)
class Message:
    """One classified JSON-RPC message. `raw` is the decoded object, kept for relaying. Not frozen (a
    frozen dataclass pays a call per field to be built, on every request): nothing assigns to it."""

    kind: Kind
    raw: dict[str, Any]
    id: RequestId | None = None
    method: str | None = None
    params: dict[str, Any] | None = None


def parse_body(body: bytes) -> Message:
    """Decode and classify a POST body holding exactly one JSON-RPC message.

    Raises:
        ProtocolError: 400 with -32700 for bytes that are not JSON (or not UTF-8), 400 with -32600
            for JSON that is not one well-formed message (batches included: they left the protocol
            in 2025-06-18, and the session era's clients do not send them).
    """
    try:
        if _ints_read_as_json_does():
            try:
                decoded = from_json(body)
            except ValueError:
                decoded = _loads_as_json_does(body)
        else:
            decoded = _loads_as_json_does(body)
    except (ValueError, RecursionError, StopIteration):
        # ValueError covers invalid UTF-8, a byte order mark and huge integer literals too;
        # StopIteration: no JSON value starts here (an empty body, a byte order mark, ...).
        raise ProtocolError(400, "Parse error", code=PARSE_ERROR, reason="body is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(body) is not None and _has_lone_surrogate(decoded):
        # `"\ud800"` is valid JSON but no Unicode text: nothing holding it can be sent back as UTF-8.
        raise ProtocolError(400, "Parse error", code=PARSE_ERROR, reason="body holds an unpaired UTF-16 surrogate")
    if type(decoded) is not dict:  # the decoder makes exact dicts and lists
        if type(decoded) is list:
            raise ProtocolError(400, "Batch requests are not supported", reason="JSON-RPC batch")
        raise ProtocolError(400, "Invalid Request: expected a JSON-RPC object", reason="body is not a JSON object")
    return classify(decoded)  # pyright: ignore[reportUnknownArgumentType]


_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(decoded: Any) -> bool:
    """Whether a decoded body holds a string with an unpaired surrogate (escaped pairs decode to one
    character and are fine); checked only when the body has a surrogate escape at all."""
    try:
        json.dumps(decoded, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return True
    return False


def classify(obj: dict[str, Any]) -> Message:
    """Classify a decoded object; raise 400 -32600 for anything that is not valid JSON-RPC 2.0."""
    if obj.get("jsonrpc") != "2.0":
        raise _invalid(obj, 'Invalid Request: "jsonrpc" must be "2.0"')
    msg_id = obj.get("id")
    has_id = msg_id is not None or "id" in obj
    # A null id is legal only on an error response whose request id could not be read. (`_valid_id`,
    # inline: this runs per request.)
    valid_id = isinstance(msg_id, _ID_TYPES) and not isinstance(msg_id, bool)
    if has_id and not valid_id and not (msg_id is None and "error" in obj):
        raise _invalid(obj, "Invalid Request: id must be a string or an integer")
    method = obj.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise _invalid(obj, "Invalid Request: method must be a non-empty string")
        params: dict[str, Any] | None = obj.get("params")
        if params is not None and not isinstance(params, dict):  # pyright: ignore[reportUnnecessaryIsInstance]
            # MCP params are always objects; positional params do not exist in the protocol.
            raise _invalid(obj, "Invalid Request: params must be an object")
        if has_id:
            return Message("request", obj, msg_id, method, params)
        return Message("notification", obj, None, method, params)
    if not has_id:
        raise _invalid(obj, "Invalid Request: neither a request, a notification nor a response")
    if "result" in obj and "error" not in obj:
        return Message("response", obj, msg_id)
    if "error" in obj and "result" not in obj and isinstance(obj["error"], dict):
        return Message("error", obj, msg_id)
    raise _invalid(obj, "Invalid Request: a response needs exactly one of result and error")


def _valid_id(value: Any) -> bool:
    return isinstance(value, _ID_TYPES) and not isinstance(value, bool)


def _invalid(obj: dict[str, Any], message: str) -> ProtocolError:
    msg_id = obj.get("id")
    return ProtocolError(400, message, code=INVALID_REQUEST, request_id=msg_id if _valid_id(msg_id) else None)


def result_message(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_message(request_id: RequestId | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}
