"""History, resume and conflation end to end: the release binary, real sockets, a
publisher that keeps publishing across the seam, and clients that stop reading."""
import json
import random
import threading
import time

import pytest

from conftest import start_gateway, stop_gateway
from test_hostile_clients import RawClient, get, publish, rss_kib

CONFIG = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /ws
    encoders: [json]
    topics: ["*"]
    history: {size: 500, ttl: 5m, topics: ["feed:*", "small"]}
  - path: /small
    encoders: [json]
    topics: [small]
    history: {size: 10, ttl: 5m}
  - path: /conflate
    encoders: [json]
    topics: ["*"]
    send_queue: {max_messages: 16, max_bytes: 64KiB, policy: conflate}
  - path: /strict
    encoders: [json]
    topics: ["*"]
    send_queue: {max_messages: 8, max_bytes: 32KiB, policy: disconnect}
"""


@pytest.fixture(scope="module")
def history_gateway():
    running = start_gateway(CONFIG, name="history")
    yield running
    assert running.process.poll() is None, running.log.read_text()[-4000:]
    stop_gateway(running)


def messages(client, count, kind, timeout=20):
    """The next `count` JSON messages of type `kind` (skipping others)."""
    found = []
    deadline = time.time() + timeout
    while len(found) < count and time.time() < deadline:
        frame = client.read_frame(timeout=max(0.1, deadline - time.time()))
        if frame is None:
            break
        if frame[0] == 1:
            message = json.loads(frame[1])
            if message.get("type") == kind:
                found.append(message)
    return found


def subscribe(client, topic, **options):
    client.send_text(json.dumps(dict({"type": "subscribe", "data": topic}, **options)))
    reply = messages(client, 1, "subscribed")
    assert reply, "no subscribed reply"
    return reply[0]


def test_resume_across_a_reconnect_while_the_publisher_keeps_going(history_gateway):
    """Drop a client, publish on, reconnect with `since`: exactly the missed events in
    order, then live ones, while the publisher never pauses at the seam."""
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    gateway = history_gateway
    total = 400
    stop = threading.Event()

    def publisher():
        for start in range(0, total, 10):
            publish(gateway, [{"topic": "feed:a", "type": "item", "data": {"n": start + i}} for i in range(10)])
            time.sleep(rng.uniform(0, 0.01))
        stop.set()

    first = RawClient(gateway.address, "/ws")
    reply = subscribe(first, "feed:a")
    assert reply["position"]["offset"] == 0 and reply["replayed"] == 0
    epoch = reply["position"]["epoch"]
    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    before = messages(first, 60, "item")
    assert len(before) == 60
    first.close()  # the client drops mid-stream; events keep coming
    time.sleep(0.3)
    last = before[-1]["position"]
    assert last["epoch"] == epoch
    second = RawClient(gateway.address, "/ws")
    resumed = subscribe(second, "feed:a", since=last)
    assert resumed["recovered"] is True, resumed
    after = messages(second, total - 60, "item", timeout=30)
    thread.join(timeout=30)
    offsets = [m["position"]["offset"] for m in before + after]
    assert offsets == list(range(1, total + 1)), offsets[:80]
    assert [m["data"]["n"] for m in before + after] == list(range(total))
    # A third client asks for the newest three only.
    third = RawClient(gateway.address, "/ws")
    newest = subscribe(third, "feed:a", last=3)
    assert newest["replayed"] == 3 and newest["position"]["offset"] == total
    assert [m["position"]["offset"] for m in messages(third, 3, "item")] == [total - 2, total - 1, total]
    for client in (second, third):
        client.close()


def test_a_resume_the_history_no_longer_covers_says_so(history_gateway):
    gateway = history_gateway
    publish(gateway, [{"topic": "small", "type": "s", "data": {"n": n}} for n in range(30)])
    client = RawClient(gateway.address, "/small")
    reply = subscribe(client, "small", last=1)
    epoch, newest = reply["position"]["epoch"], reply["position"]["offset"]
    assert newest == 30
    other = RawClient(gateway.address, "/small")
    # /ws keeps 500 of "small", /small 10: the kernel keeps the larger, so 1 is still covered.
    assert subscribe(other, "small", since={"epoch": epoch, "offset": 1})["recovered"] is True
    stale = RawClient(gateway.address, "/small")
    answer = subscribe(stale, "small", since={"epoch": "another-epoch", "offset": 3})
    assert answer["recovered"] is False and answer["position"]["offset"] == newest and answer["replayed"] == 0
    no_history = RawClient(gateway.address, "/conflate")
    answer = subscribe(no_history, "plain-topic", since={"epoch": epoch, "offset": 3})
    assert answer["recovered"] is False and answer["position"] is None
    bad = RawClient(gateway.address, "/ws")
    bad.send_text(json.dumps({"type": "subscribe", "data": "feed:*", "since": {"epoch": epoch, "offset": 1}}))
    error = messages(bad, 1, "error")[0]
    assert error["data"]["code"] == "bad_message"
    bad.send_text(json.dumps({"type": "subscribe", "data": "small", "since": {"epoch": 5, "offset": -1}}))
    assert messages(bad, 1, "error")[0]["data"]["code"] == "bad_message"
    for each in (client, other, stale, no_history, bad):
        each.close()


def test_conflate_keeps_the_newest_per_topic_for_a_client_that_stops_reading(history_gateway):
    """A client with a tiny receive buffer stops reading while 3 topics publish 3,000
    events of 1 KB: the gateway's memory stays bounded by the queue, and when the client
    reads again the last event of each topic is the newest one published."""
    gateway = history_gateway
    pid = gateway.process.pid
    slow = RawClient(gateway.address, "/conflate", rcvbuf=4096)
    for topic in ("m1", "m2", "m3"):
        subscribe(slow, topic)
    reader = RawClient(gateway.address, "/conflate")
    subscribe(reader, "m1")
    before = rss_kib(pid)
    pad = "p" * 3000
    # 9 MB: more than the kernel's socket buffers hold for a client that does not read.
    for batch in range(100):
        publish(gateway, [{"topic": "m%d" % (1 + i % 3), "type": "metric", "data": {"n": batch * 30 + i, "pad": pad}} for i in range(30)])
    got = messages(reader, 1000, "metric", timeout=30)
    assert [m["data"]["n"] for m in got] == [n for n in range(3000) if n % 3 == 0]
    peak = rss_kib(pid)
    assert peak - before < 32 * 1024, (before, peak)
    # Now read everything the slow client still gets: per topic, the newest comes last.
    newest = {}
    count = 0
    while True:
        frame = slow.read_frame(timeout=2)
        if frame is None:
            break
        if frame[0] == 1:
            message = json.loads(frame[1])
            if message.get("type") == "metric":
                newest[message["topic"]] = message["data"]["n"]
                count += 1
    assert newest == {"m1": 2997, "m2": 2998, "m3": 2999}, newest
    assert count < 3000, "conflation dropped nothing"
    status, stats = get(gateway, "/stats")
    assert stats["connections"]["per_endpoint"]["/conflate"]["refusals"]["slow_consumer_drops"] >= 1
    slow.close()
    reader.close()


def test_a_slow_consumer_closed_with_1008_learns_where_to_resume(history_gateway):
    gateway = history_gateway
    slow = RawClient(gateway.address, "/strict", rcvbuf=4096)
    subscribe(slow, "feed:strict")
    pad = "q" * 3000
    # 9 MB: more than the kernel's socket buffers hold for a client that does not read.
    for batch in range(30):
        publish(gateway, [{"topic": "feed:strict", "type": "big", "data": {"n": batch * 100 + i, "pad": pad}} for i in range(100)])
    # Read everything up to the close frame; its reason names the last position sent.
    reason, seen = None, []
    deadline = time.time() + 20
    while time.time() < deadline:
        frame = slow.read_frame(timeout=5)
        if frame is None:
            break
        if frame[0] == 1:
            seen.append(json.loads(frame[1]))
        elif frame[0] == 8:
            assert int.from_bytes(frame[1][:2], "big") == 1008
            reason = frame[1][2:].decode()
            break
    assert reason and reason.startswith("send queue overflow"), reason
    assert "last sent feed:strict@" in reason, reason
    last_offset = int(reason.rsplit(":", 1)[1])
    delivered = [m["position"]["offset"] for m in seen if m.get("type") == "big"]
    assert delivered and delivered[-1] <= last_offset
    slow.close()
