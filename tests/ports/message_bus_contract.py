"""The contract every `MessageBus` keeps. Subscribe with a test class that provides `store_factory`."""

from __future__ import annotations

import json

import anyio
import pytest

from asgi_mcp import BusMessage, MessageBus

from ._contract import MAX_BUFFERED, TIMEOUT, StoreFactory, next_of, read_until_cut


class MessageBusContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def store_factory(self) -> StoreFactory[MessageBus]:
        raise NotImplementedError("the implementation's test class provides store_factory")

    async def test_a_message_reaches_a_subscriber_on_another_handle(
        self, store_factory: StoreFactory[MessageBus]
    ) -> None:
        payload = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"text": "ü" * 3}})
        async with store_factory() as publisher, store_factory() as worker:
            await publisher.publish("alpha", "session/s-1", '{"before": "the subscription"}')
            async with worker.subscribe("alpha", "session/s-1") as messages:
                await publisher.publish("alpha", "session/s-1", payload)
                assert await next_of(messages) == BusMessage("alpha", "session/s-1", payload)

    async def test_one_publisher_is_read_in_order(self, store_factory: StoreFactory[MessageBus]) -> None:
        async with store_factory() as bus, bus.subscribe("alpha", "c") as messages:
            for i in range(MAX_BUFFERED):
                await bus.publish("alpha", "c", str(i))
            assert [(await next_of(messages)).payload for _ in range(MAX_BUFFERED)] == [
                str(i) for i in range(MAX_BUFFERED)
            ]

    async def test_every_subscriber_gets_every_message(self, store_factory: StoreFactory[MessageBus]) -> None:
        async with (
            store_factory() as bus,
            store_factory() as other,
            bus.subscribe("alpha", "c") as first,
            other.subscribe("alpha", "c") as second,
        ):
            await bus.publish("alpha", "c", '"one"')
            assert (await next_of(first)).payload == (await next_of(second)).payload == '"one"'

    @pytest.mark.parametrize(
        ("published", "subscribed"),
        [
            (("alpha", "c"), ("bravo", "c")),  # another tenant, same channel
            (("alpha", "c"), ("alpha", "d")),  # same tenant, another channel
            (("a:b", "c"), ("a", "b:c")),  # names that a naive key scheme would join into one
            (("a", "b:c"), ("a:b", "c")),
            (("", "c"), (None, "c")),  # the tenantless app is not a tenant called ""
            ((None, "c"), ("", "c")),
        ],
    )
    async def test_nothing_crosses_tenants_or_channels(
        self,
        store_factory: StoreFactory[MessageBus],
        published: tuple[str | None, str],
        subscribed: tuple[str | None, str],
    ) -> None:
        async with store_factory() as bus, store_factory() as worker, worker.subscribe(*subscribed) as messages:
            await bus.publish(*published, '"not yours"')
            await bus.publish(*subscribed, '"yours"')
            assert await next_of(messages) == BusMessage(*subscribed, '"yours"')

    async def test_leaving_unsubscribes(self, store_factory: StoreFactory[MessageBus]) -> None:
        async with store_factory() as bus:
            async with bus.subscribe("alpha", "c") as messages:
                await bus.publish("alpha", "c", "1")
                assert (await next_of(messages)).payload == "1"
            with anyio.fail_after(TIMEOUT):
                for _ in range(MAX_BUFFERED * 2):  # nobody listens: publishing still never waits
                    await bus.publish("alpha", "c", "2")
            async with bus.subscribe("alpha", "c") as again:
                await bus.publish("alpha", "c", "3")
                assert (await next_of(again)).payload == "3"  # nothing left over from before

    async def test_a_subscriber_that_falls_behind_is_cut(self, store_factory: StoreFactory[MessageBus]) -> None:
        async with (
            store_factory() as bus,
            store_factory() as worker,
            worker.subscribe("alpha", "c") as slow,
            bus.subscribe("alpha", "c") as keeping_up,
        ):
            with anyio.fail_after(TIMEOUT):  # the publisher never waits for a subscriber
                for i in range(MAX_BUFFERED * 4):
                    await bus.publish("alpha", "c", str(i))
                    assert (await next_of(keeping_up)).payload == str(i)
            got = [item.payload for item in await read_until_cut(slow, MAX_BUFFERED * 4)]
            assert got == [str(i) for i in range(len(got))]  # a prefix, in order
            assert len(got) < MAX_BUFFERED * 4
