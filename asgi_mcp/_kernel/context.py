"""What both eras' request contexts share on top of the SDK's `DispatchContext`: the peer's
cancellation, made on first use, the observer that sees every settled request, and the request's
progress token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import anyio

__all__: list[str] = []


class RequestObserver(Protocol):
    def __call__(self, method: str, params: Mapping[str, Any] | None, started: float, outcome: dict[str, Any]) -> None:
        """Called once per settled request with its final wire message (result or error)."""


@dataclass(eq=False, slots=True)
class PeerCancellation:
    """The `cancel_requested` event of a `DispatchContext`, made on first use: almost no request is
    ever cancelled or asked about it, and an `anyio.Event` per request is measurable."""

    _cancel_requested: anyio.Event | None = field(default=None, kw_only=True)
    cancelled_by_peer: bool = field(default=False, kw_only=True)

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel_requested is None:
            self._cancel_requested = anyio.Event()
            if self.cancelled_by_peer:
                self._cancel_requested.set()
        return self._cancel_requested

    def mark_cancelled(self) -> None:
        self.cancelled_by_peer = True
        if self._cancel_requested is not None:
            self._cancel_requested.set()


def progress_params(token: str | int, progress: float, total: float | None, message: str | None) -> dict[str, Any]:
    """The params of a `notifications/progress` for `token` (both eras' request contexts send it)."""
    params: dict[str, Any] = {"progressToken": token, "progress": progress}
    if total is not None:
        params["total"] = total
    if message is not None:
        params["message"] = message
    return params


def progress_token(params: dict[str, Any] | None) -> str | int | None:
    """`params._meta.progressToken` when it is a string or an integer, as the SDK's
    `progress_token_from_params` reads it (whose mapping pattern costs four times as much) from a
    decoded JSON body, where every object is a `dict`."""
    meta = params.get("_meta") if params is not None else None
    if not isinstance(meta, dict):
        return None
    token = cast("dict[str, Any]", meta).get("progressToken")
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None
