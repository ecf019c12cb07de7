"""Python `msgpack` decodes our binary frames, and re-encoding the decoded value gives the
same bytes (our maps use the smallest encodings, in envelope order)."""
import asyncio
import json

import msgpack
from websockets.asyncio.client import connect


def test_binary_frames_match_python_msgpack_byte_for_byte(gateway):
    async def run():
        async with connect(gateway.url("/plain"), subprotocols=["switchboard.msgpack"], compression=None) as ws:
            assert ws.subprotocol == "switchboard.msgpack"
            await ws.send(msgpack.packb({"type": "subscribe", "data": "mp:1"}))
            reply = msgpack.unpackb(await ws.recv())
            assert reply["type"] == "subscribed" and reply["data"] == "mp:1"
            data = {"i": 7, "neg": -300, "big": 2**40, "f": 1.5, "s": "é" * 40, "l": [True, False, None], "m": {"k": "v"}}
            gateway.publish(json.dumps({"topic": "mp:1", "type": "t", "id": "1-0", "data": data}))
            frame = await ws.recv()
            assert isinstance(frame, bytes)
            value = msgpack.unpackb(frame)
            assert list(value.keys()) == ["type", "topic", "id", "timestamp", "data"]
            assert value["data"] == data
            assert msgpack.packb(value) == frame
    asyncio.run(run())


def test_malformed_msgpack_gets_an_error_and_the_connection_stays(gateway):
    async def run():
        async with connect(gateway.url("/plain"), subprotocols=["switchboard.msgpack"], compression=None) as ws:
            for garbage in [b"\xc1", b"\xdd\x7f\xff\xff\xff", b"\x92\x01", b"\x81\x01\x02"]:
                await ws.send(garbage)
                reply = msgpack.unpackb(await ws.recv())
                assert reply["type"] == "error" and reply["data"]["code"] == "bad_message"
            await ws.send(msgpack.packb({"type": "ping"}))
            assert msgpack.unpackb(await ws.recv())["type"] == "pong"
    asyncio.run(run())
