"""The SSE transport with clients nobody here wrote: Python httpx streaming, and headless
Chromium's EventSource behind a proxy that drops the connection, resuming with
Last-Event-ID while the publisher keeps going."""
import json
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import httpx
import pytest

from conftest import start_gateway, stop_gateway
from test_chromium import browser_page, find_chromium
from test_hostile_clients import publish

CONFIG = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /events
    transports: [websocket, sse]
    encoders: [json]
    topics: ["feed:*", "open"]
    heartbeat: {interval: 1s, timeout: 5s}
    history: {size: 1000, ttl: 5m, topics: ["feed:*"]}
  - path: /private
    transports: [sse]
    encoders: [json]
    topics: ["*"]
    filters:
      - plugin: api_key
        query: api_key
        keys: [{name: sse-client, key: "sse-client-key-0123456789"}]
"""


@pytest.fixture(scope="module")
def sse_gateway():
    running = start_gateway(CONFIG, name="sse")
    yield running
    assert running.process.poll() is None, running.log.read_text()[-4000:]
    stop_gateway(running)


def read_events(response, until, timeout=20):
    """Parses an SSE stream into dicts {event, id, data} until `until(events)` is true."""
    events, fields = [], {}
    deadline = time.time() + timeout
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                events.append(fields)
                if until(events):
                    return events
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if time.time() > deadline:
            break
    return events


def items(events):
    return [e for e in events if e.get("event") is None]


def test_httpx_stream_resumes_every_topic_with_last_event_id(sse_gateway):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    gateway = sse_gateway
    url = "http://%s/events?topic=feed:x&topic=feed:y" % gateway.address
    headers = {"Accept": "text/event-stream"}
    total = 300
    published = threading.Event()

    def publisher():
        for start in range(0, total, 10):
            publish(gateway, [{"topic": rng.choice(["feed:x", "feed:y"]), "type": "item", "data": {"n": start + i}} for i in range(10)])
            time.sleep(0.01)
        published.set()

    seen = []
    with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
        with client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            thread = threading.Thread(target=publisher, daemon=True)
            thread.start()
            events = read_events(response, lambda e: len(items(e)) >= 50)
        subscribed = [e for e in events if e.get("event") == "subscribed"]
        assert [e["data"]["data"] for e in subscribed] == ["feed:x", "feed:y"]
        seen += items(events)
        last_id = seen[-1]["id"]
        time.sleep(0.2)  # events keep arriving while the client is away
        with client.stream("GET", url, headers=dict(headers, **{"Last-Event-ID": last_id})) as response:
            events = read_events(response, lambda e: len(seen) + len(items(e)) >= total, timeout=30)
        thread.join(timeout=30)
    resumed = [e for e in events if e.get("event") == "subscribed"]
    assert all(e["data"]["recovered"] is True for e in resumed), resumed
    seen += items(events)
    assert sorted(e["data"]["data"]["n"] for e in seen) == list(range(total)), "loss or duplicates"
    for topic in ("feed:x", "feed:y"):
        offsets = [e["data"]["position"]["offset"] for e in seen if e["data"]["topic"] == topic]
        assert offsets == list(range(1, len(offsets) + 1)), (topic, offsets[:20])


def test_a_resume_cut_short_in_a_large_replay_loses_nothing(sse_gateway):
    """Two topics resume at once, the first with 2 MB to replay; the client drops in the
    middle of it. Its last id must not claim the second topic's events, which it never
    got: the next resume delivers both topics completely."""
    gateway = sse_gateway
    suffix = str(random.randrange(1 << 30))
    big, small = "feed:big" + suffix, "feed:small" + suffix
    for start in range(0, 100, 20):
        publish(gateway, [{"topic": big, "type": "b", "data": {"pad": "z" * 20000}} for _ in range(20)])
        publish(gateway, [{"topic": small, "type": "s", "data": {}} for _ in range(20)])
    url = "http://%s/events?topic=%s&topic=%s" % (gateway.address, big, small)
    with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
        with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            epoch = read_events(response, lambda e: len(e) >= 1)[0]["data"]["position"]["epoch"]
        start = {"Accept": "text/event-stream", "Last-Event-ID": "%s:0,0" % epoch}
        with client.stream("GET", url, headers=start) as response:
            first = items(read_events(response, lambda e: len(items(e)) >= 30))
        with client.stream("GET", url, headers=dict(start, **{"Last-Event-ID": first[-1]["id"]})) as response:
            rest = items(read_events(response, lambda e: len(first) + len(items(e)) >= 200))
    for topic in (big, small):
        offsets = [e["data"]["position"]["offset"] for e in first + rest if e["data"]["topic"] == topic]
        assert offsets == list(range(1, 101)), (topic, offsets[:10], len(offsets))


def test_sse_refusals_and_filters(sse_gateway):
    base = "http://%s" % sse_gateway.address
    sse = {"Accept": "text/event-stream"}
    with httpx.Client(timeout=5.0) as client:
        assert client.get(base + "/events", headers=sse).json()["error"]["code"] == "no_topics"
        forbidden = client.get(base + "/events?topic=secret", headers=sse)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        assert client.get(base + "/events?topic=bad%20topic", headers=sse).status_code == 400
        assert client.get(base + "/private?topic=t", headers=sse).status_code == 401
        # Without Accept: text/event-stream, an SSE-only path says what it wants.
        assert client.get(base + "/private?topic=t").status_code == 406
        # The same filters as WebSocket: the API key by header or query.
        with client.stream("GET", base + "/private?topic=open&api_key=sse-client-key-0123456789", headers=dict(sse, Origin="http://example.test")) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "http://example.test"
            publish(sse_gateway, [{"topic": "open", "type": "note", "data": {"n": 1}}])
            events = read_events(response, lambda e: len(items(e)) >= 1)
        assert items(events)[0]["data"]["type"] == "note" and "id" not in items(events)[0]


class DroppingProxy:
    """A TCP proxy on loopback whose connections the test can cut: a network drop."""

    def __init__(self, target):
        self.target = target
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.sockets = []
        self.connections = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            host, port = self.target.split(":")
            upstream = socket.create_connection((host, int(port)))
            self.sockets += [client, upstream]
            self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(source, target):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        for each in (source, target):
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self):
        for each in self.sockets:
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sockets = []


PAGE = """<!doctype html><html><body><script>
const offsets = [];
const source = new EventSource('SSEURL');
source.onmessage = (event) => {
  offsets.push(JSON.parse(event.data).position.offset);
  if (offsets.length >= TOTAL) {
    source.close();
    fetch('/result', {method: 'POST', body: JSON.stringify({offsets: offsets, lastEventId: event.lastEventId})});
  }
};
setInterval(() => fetch('/progress', {method: 'POST', body: String(offsets.length)}), 200);
</script></body></html>"""


def test_chromium_event_source_reconnects_and_resumes(sse_gateway):
    chromium = find_chromium()
    assert chromium, "chromium is not installed (apt-get install chromium)"
    gateway = sse_gateway
    proxy = DroppingProxy(gateway.address)
    total = 60
    page = PAGE.replace("SSEURL", "http://127.0.0.1:%d/events?topic=feed:browser" % proxy.port).replace("TOTAL", str(total))
    result, progress = {}, [0]
    done = threading.Event()

    def on_post(path, body):
        if path == "/result":
            result.update(json.loads(body))
            done.set()
        else:
            progress[0] = int(body or b"0")

    with browser_page(chromium, page, on_post):
        deadline = time.time() + 30
        while proxy.connections == 0 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        publish(gateway, [{"topic": "feed:browser", "type": "b", "data": {"n": n}} for n in range(20)])
        while progress[0] < 20 and time.time() < deadline:
            time.sleep(0.05)
        assert progress[0] >= 20, "the page did not receive the first events"
        proxy.drop()  # the network drops; EventSource retries after the server's retry: hint
        publish(gateway, [{"topic": "feed:browser", "type": "b", "data": {"n": n}} for n in range(20, 40)])
        while proxy.connections < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert proxy.connections >= 2, "EventSource did not reconnect"
        time.sleep(0.5)
        publish(gateway, [{"topic": "feed:browser", "type": "b", "data": {"n": n}} for n in range(40, total)])
        assert done.wait(30), "the page did not report back (%d events)" % progress[0]
    assert result["offsets"] == list(range(1, total + 1)), result
    assert result["lastEventId"].endswith(":%d" % total)


@pytest.fixture
def redis_server():
    """A real redis-server on a free loopback port, killed afterwards."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    directory = tempfile.mkdtemp()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield "redis://127.0.0.1:%d" % port
    process.kill()
    process.wait()
    shutil.rmtree(directory, ignore_errors=True)


def test_sse_resumes_on_another_instance_through_redis(redis_server):
    """Two instances sharing Redis: an SSE client reads from A, drops, and resumes on B
    with its Last-Event-ID while events keep entering through both."""
    config = "cluster:\n  redis: %s\n" % redis_server + CONFIG
    first = start_gateway(config, name="sse-a")
    second = start_gateway(config, name="sse-b")
    try:
        for gateway in (first, second):
            deadline = time.time() + 15
            while time.time() < deadline:
                sources = httpx.get("http://%s/readyz" % gateway.address).json()["sources"]
                if any(s["name"] == "cluster-bus" and s["state"] == "connected" for s in sources):
                    break
                time.sleep(0.05)
        total = 200
        done = threading.Event()

        def publisher():
            for n in range(total):
                publish(first if n % 2 else second, [{"topic": "feed:c" if n % 3 else "feed:d", "type": "item", "data": {"n": n}}])
            done.set()

        headers = {"Accept": "text/event-stream"}
        path = "/events?topic=feed:c&topic=feed:d"
        seen = []
        with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
            with client.stream("GET", "http://%s%s" % (first.address, path), headers=headers) as response:
                threading.Thread(target=publisher, daemon=True).start()
                seen += items(read_events(response, lambda e: len(items(e)) >= 50))
            last_id = seen[-1]["id"]
            with client.stream("GET", "http://%s%s" % (second.address, path), headers=dict(headers, **{"Last-Event-ID": last_id})) as response:
                events = read_events(response, lambda e: len(seen) + len(items(e)) >= total, timeout=30)
        assert done.wait(30)
        assert all(e["data"]["recovered"] for e in events if e.get("event") == "subscribed"), events[:3]
        seen += items(events)
        assert sorted(e["data"]["data"]["n"] for e in seen) == list(range(total)), "loss or duplicates across instances"
        for topic in ("feed:c", "feed:d"):
            offsets = [e["data"]["position"]["offset"] for e in seen if e["data"]["topic"] == topic]
            assert offsets == list(range(1, len(offsets) + 1)), (topic, offsets[:20])
    finally:
        stop_gateway(first)
        stop_gateway(second)
