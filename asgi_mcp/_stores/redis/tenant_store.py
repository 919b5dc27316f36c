"""`TenantStore` on Redis: tokens as keyed digests, records and credentials as hashes, changes on pub/sub.

Keys (all under one hash tag, `{<prefix>}`, so a cluster keeps them in one slot and every script may
touch any of them): `tenants` (tenant id -> record JSON), `credentials` (digest hex -> credential
JSON), `tokens:<tenant id>` (the tenant's digests), `version` (bumped by every write). Each write is
one script that checks, writes, bumps the version and PUBLISHes the change with that version, so the
feed's order is the version order. Records are stored as the JSON text Python wrote; the scripts only
splice texts together (the new generation is the one number they compute), never re-encode them.

A token is stored as HMAC-SHA256 under a secret the workers share: a copy of Redis (a backup, a
replica, `MONITOR`) reveals no token, and without the secret no token, however short, can be guessed
from its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, cast

import anyio
import coredis
import coredis.exceptions

from ..._core.errors import ConfigurationError, StoreUnavailable, TenantConflict
from ..._ports.fanout import Fanout
from ..._ports.tenant_store import Credential, SessionPolicy, TenantChange, TenantRecord, TenantSnapshot
from .connection import DEFAULT_TIMEOUT, RedisConnection, require_prefix

__all__ = ["RedisTenantStore"]

_WHAT: Final = "tenant store"
MIN_SECRET_BYTES: Final = 32

# Every script: KEYS = tenants, credentials, version, (tokens of the tenant); ARGV[1] = the change
# channel, ARGV[2] = the tokens-key prefix. It answers {"ok", change JSON}, {"none"} or {"conflict", why}.
_ANNOUNCE: Final = """
local function announce(kind, record, credentials, policy, drain)
  local version = redis.call('INCR', KEYS[3])
  local change = '{"version":' .. version .. ',"kind":"' .. kind .. '","record":' .. record
    .. ',"credentials":[' .. credentials .. '],"policy":"' .. policy .. '","drain_timeout":' .. drain .. '}'
  redis.call('PUBLISH', ARGV[1], change)
  return {'ok', change}
end
"""
# ARGV: 3 tenant id, 4 record, 5 digest, 6 credential
_ADD: Final = (
    _ANNOUNCE
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return {'conflict', 'tenant id is already in use'} end
if redis.call('HEXISTS', KEYS[2], ARGV[5]) == 1 then return {'conflict', 'token is already registered'} end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
redis.call('SADD', ARGV[2] .. ARGV[3], ARGV[5])
return announce('added', ARGV[4], ARGV[6], 'close', '0.0')
"""
)
# ARGV: 3 tenant id, 4 the record's JSON up to its generation (the last field), 5 policy, 6 drain timeout
_REPLACE: Final = (
    _ANNOUNCE
    + """
local old = redis.call('HGET', KEYS[1], ARGV[3])
if not old then return {'none'} end
local record = ARGV[4] .. string.format('%d', cjson.decode(old)['generation'] + 1) .. '}'
redis.call('HSET', KEYS[1], ARGV[3], record)
return announce('updated', record, '', ARGV[5], ARGV[6])
"""
)
# ARGV: 3 tenant id, 4 policy, 5 drain timeout
_REMOVE: Final = (
    _ANNOUNCE
    + """
local record = redis.call('HGET', KEYS[1], ARGV[3])
if not record then return {'none'} end
local digests = redis.call('SMEMBERS', ARGV[2] .. ARGV[3])
table.sort(digests)
local credentials = {}
for _, digest in ipairs(digests) do
  table.insert(credentials, redis.call('HGET', KEYS[2], digest))
  redis.call('HDEL', KEYS[2], digest)
end
redis.call('DEL', ARGV[2] .. ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[3])
return announce('removed', record, table.concat(credentials, ','), ARGV[4], ARGV[5])
"""
)
# ARGV: 3 tenant id, 4 digest, 5 credential
_SET_CREDENTIAL: Final = (
    _ANNOUNCE
    + """
local record = redis.call('HGET', KEYS[1], ARGV[3])
if not record then return {'none'} end
local held = redis.call('HGET', KEYS[2], ARGV[4])
if held and cjson.decode(held)['tenant_id'] ~= ARGV[3] then
  return {'conflict', 'token is already registered to another tenant'}
end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('SADD', ARGV[2] .. ARGV[3], ARGV[4])
return announce('credential_set', record, ARGV[5], 'close', '0.0')
"""
)
# ARGV: 3 digest
_REMOVE_CREDENTIAL: Final = (
    _ANNOUNCE
    + """
local held = redis.call('HGET', KEYS[2], ARGV[3])
if not held then return {'none'} end
local tenant_id = cjson.decode(held)['tenant_id']
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('SREM', ARGV[2] .. tenant_id, ARGV[3])
return announce('credential_removed', redis.call('HGET', KEYS[1], tenant_id), held, 'close', '0.0')
"""
)
_SNAPSHOT: Final = """
return {redis.call('GET', KEYS[3]) or '0', redis.call('HVALS', KEYS[1]), redis.call('HVALS', KEYS[2])}
"""


class RedisTenantStore:
    """A `TenantStore` every worker sharing the Redis reads (needs `asgi-mcp[redis]`).

    Args:
        redis: a URL or a `coredis.Redis` with `decode_responses=True`.
        secret: the HMAC key tokens are digested with: at least 32 random bytes, the same on every worker,
            never in Redis. Changing it orphans every stored token.
        prefix: the first part of every key.
        max_buffered: changes a `changes()` subscriber may fall behind before it is cut.
        timeout: seconds a call may take before it fails as `StoreUnavailable` (503).
    """

    def __init__(
        self,
        redis: str | coredis.Redis[str],
        *,
        secret: bytes,
        prefix: str = "asgi_mcp",
        max_buffered: int = 1024,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"the tenant store secret must have at least {MIN_SECRET_BYTES} bytes")
        require_prefix("RedisTenantStore", prefix)
        if max_buffered < 1:
            raise ConfigurationError("max_buffered must be positive")
        self._secret = secret
        self._max_buffered = max_buffered
        self.connection = RedisConnection(redis, timeout=timeout)
        base = f"{{{prefix}}}:tn:"
        self._keys = [base + "tenants", base + "credentials", base + "version"]
        self._channel = base + "changes"
        self._tokens_prefix = base + "tokens:"
        client = self.connection.client
        self._add = client.register_script(_ADD)
        self._replace = client.register_script(_REPLACE)
        self._remove = client.register_script(_REMOVE)
        self._set_credential = client.register_script(_SET_CREDENTIAL)
        self._remove_credential = client.register_script(_REMOVE_CREDENTIAL)
        self._snapshot = client.register_script(_SNAPSHOT)

    async def __aenter__(self) -> RedisTenantStore:
        await self.connection.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.connection.__aexit__(*exc_info)

    def digest(self, token: str) -> bytes:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).digest()

    # -- writes: one script each -----------------------------------------------------------------

    async def _write(self, script: Any, *args: str) -> TenantChange | None:
        with self.connection.guard(_WHAT):
            answer = cast(
                "list[str | bytes]", await script.execute(self._keys, [self._channel, self._tokens_prefix, *args])
            )
        status = _text(answer[0])
        if status == "conflict":
            raise TenantConflict(_text(answer[1]))
        return _change(_text(answer[1])) if status == "ok" else None

    async def add(self, record: TenantRecord, credential: Credential) -> TenantChange:
        if credential.tenant_id != record.tenant_id:
            raise TenantConflict("the credential names another tenant")
        text, token = record.to_json(), credential.to_json()  # first: what cannot be stored changes nothing
        change = await self._write(self._add, record.tenant_id, text, credential.digest.hex(), token)
        assert change is not None
        return change

    async def replace(
        self, record: TenantRecord, *, policy: SessionPolicy, drain_timeout: float
    ) -> TenantChange | None:
        text = record.to_json()
        # to_json writes the generation last: the script appends the stored one plus one.
        head = text[: text.rindex('"generation":') + len('"generation":')]
        return await self._write(self._replace, record.tenant_id, head, policy, repr(float(drain_timeout)))

    async def remove(self, tenant_id: str, *, policy: SessionPolicy, drain_timeout: float) -> TenantChange | None:
        return await self._write(self._remove, tenant_id, policy, repr(float(drain_timeout)))

    async def set_credential(self, credential: Credential) -> TenantChange | None:
        token = credential.to_json()
        return await self._write(self._set_credential, credential.tenant_id, credential.digest.hex(), token)

    async def remove_credential(self, digest: bytes) -> TenantChange | None:
        return await self._write(self._remove_credential, digest.hex())

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, tenant_id: str) -> TenantRecord | None:
        with self.connection.guard(_WHAT):
            text = await self.connection.client.hget(self._keys[0], tenant_id)
        return TenantRecord.from_json(text) if text is not None else None

    async def credential(self, digest: bytes) -> Credential | None:
        with self.connection.guard(_WHAT):
            text = await self.connection.client.hget(self._keys[1], digest.hex())
        return Credential.from_json(text) if text is not None else None

    async def snapshot(self) -> TenantSnapshot:
        with self.connection.guard(_WHAT):
            answer = cast("list[Any]", await self._snapshot.execute(self._keys, []))
        version, records, credentials = answer
        return TenantSnapshot(
            int(_text(version)),
            tuple(TenantRecord.from_json(text) for text in records),
            tuple(Credential.from_json(text) for text in credentials),
        )

    async def version(self) -> int:
        with self.connection.guard(_WHAT):
            version = await self.connection.client.get(self._keys[2])
        return int(version) if version is not None else 0

    @asynccontextmanager
    async def changes(self) -> AsyncGenerator[AsyncIterator[TenantChange], None]:
        """Every write published once this is entered (SUBSCRIBE acknowledged), in version order; a
        subscriber more than `max_buffered` behind is cut. A gap (Redis restarted, the connection
        dropped) shows as a jump in versions: the subscriber resynchronises from a snapshot."""
        fanout = Fanout[TenantChange](self._max_buffered)
        async with AsyncExitStack() as stack:
            try:
                # Not under the connection's timeout scope: the pub/sub's task group outlives this call.
                # Its SUBSCRIBE acknowledgement has its own bound (coredis: 1 s).
                # Cancelled as it closes: coredis's subscriber retries without end in a task of its
                # own, which closing it alone does not stop while Redis is down (`RedisMessageBus`).
                closing = stack.enter_context(anyio.CancelScope())
                pubsub = await stack.enter_async_context(self.connection.client.pubsub(channels=[self._channel]))
                stack.callback(closing.cancel)
            except (coredis.exceptions.ConnectionError, TimeoutError, OSError):
                raise StoreUnavailable(_WHAT) from None
            feed = await stack.enter_async_context(fanout.subscribe(None))
            pump = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(pump.cancel_scope.cancel)  # first on exit
            pump.start_soon(self._pump, pubsub, fanout)
            yield feed

    async def _pump(self, pubsub: Any, fanout: Fanout[TenantChange]) -> None:
        # coredis buffers pub/sub messages without bound: drained at once into the bounded feed.
        while fanout.subscribers(None):
            message = await pubsub.get_message(ignore_subscribe_messages=True)
            if message is not None and message["type"] == "message":
                fanout.deliver(None, _change(_text(message["data"])))

    def __repr__(self) -> str:
        return f"RedisTenantStore({self._channel[: -len(':tn:changes')]!r})"


def _change(text: str) -> TenantChange:
    fields = cast("dict[str, Any]", json.loads(text))
    return TenantChange(
        version=int(fields["version"]),
        kind=fields["kind"],
        record=TenantRecord(**fields["record"]),
        credentials=tuple(
            Credential(digest=bytes.fromhex(c["digest"]), tenant_id=c["tenant_id"], not_after=c["not_after"])
            for c in fields["credentials"]
        ),
        policy=fields["policy"],
        drain_timeout=float(fields["drain_timeout"]),
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
