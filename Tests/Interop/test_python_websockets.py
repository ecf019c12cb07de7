"""Python `websockets` as the client: every permessage-deflate parameter combination it
can offer, against the shared and the dedicated endpoint."""
import asyncio
import itertools
import json

import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

COMBINATIONS = list(itertools.product(
    [False, True],               # server_no_context_takeover
    [False, True],               # client_no_context_takeover
    [None, 9, 12, 15],           # server_max_window_bits
    [None, True, 9, 15],         # client_max_window_bits (True = offered without a value)
))


async def exercise(gateway, path, factory, label):
    async with connect(gateway.url(path), extensions=[factory], compression=None, max_size=2**22) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert extensions.startswith("permessage-deflate"), (label, extensions)
        topic = "interop:%s" % label
        # The subscribe message is compressed by the client (large padding field).
        await ws.send(json.dumps({"type": "subscribe", "data": topic, "padding": "x" * 300}))
        reply = json.loads(await ws.recv())
        assert reply == {"type": "subscribed", "timestamp": reply["timestamp"], "data": topic}
        data = {"text": "switchboard " * 200, "label": label}
        gateway.publish(json.dumps([{"topic": topic, "type": "big", "data": data}, {"topic": topic, "type": "small", "data": 1}]))
        first = json.loads(await ws.recv())
        second = json.loads(await ws.recv())
        assert (first["type"], first["data"]) == ("big", data)
        assert (second["type"], second["data"]) == ("small", 1)


@pytest.mark.parametrize("path", ["/shared", "/dedicated"])
def test_every_deflate_offer(gateway, path):
    async def run_all():
        for snct, cnct, smwb, cmwb in COMBINATIONS:
            factory = ClientPerMessageDeflateFactory(
                server_no_context_takeover=snct,
                client_no_context_takeover=cnct,
                server_max_window_bits=smwb,
                client_max_window_bits=cmwb,
            )
            label = "%s-%d%d-%s-%s" % (path.strip("/"), snct, cnct, smwb, cmwb)
            await exercise(gateway, path, factory, label)
    asyncio.run(run_all())


def test_no_compression_when_not_offered(gateway):
    async def run():
        async with connect(gateway.url("/shared"), compression=None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv())["type"] == "pong"
    asyncio.run(run())
