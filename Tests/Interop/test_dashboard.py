"""The dashboard page and /client.js in headless Chromium, driven through the DevTools
protocol: the page served by the gateway connects, subscribes through its own controls,
shows published events (JSON and MessagePack), reconnects by itself when the gateway
restarts on the same port, and Switchboard.Client resumes with `since` without a gap."""
import contextlib
import json
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from websockets.sync.client import connect

from conftest import start_gateway, stop_gateway
from test_chromium import find_chromium

WAIT = 20  # seconds: the bound of every wait in this file
JWT_SECRET = "dashboard-test-secret-0123456789abcdef"

CONFIG = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /ws
    encoders: [json, msgpack]
    topics: ["*"]
  - path: /h
    encoders: [msgpack, json]
    topics: ["*"]
    history: {size: 100, ttl: 5m}
  - path: /z
    encoders: [json]
    topics: ["*"]
    compression: {mode: shared, min_size: 0}
  - path: /jwt
    encoders: [json]
    topics: ["*"]
    filters:
      - plugin: jwt
        leeway: 0s
        keys: [{algorithm: HS256, secret: "%s"}]
        token_from: [query]
""" % JWT_SECRET

# Values that take every kind of MessagePack encoding the server picks for JSON.
DATA = {
    "id": 7, "item": "book \u00fc \u20ac \U0001F600", "price": 12.5, "qty": -3, "neg": -40000,
    "big": 2 ** 40, "tags": ["a", None, True, False], "nested": {"k": [1, {"z": 0.25}]},
    "long": "x" * 300, "html": "<b>not markup</b>",
}


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary):
        self.profile = tempfile.mkdtemp()
        self.exceptions = []
        self.next_id = 0
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--user-data-dir=" + self.profile, "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.socket = None
        self.stack = contextlib.ExitStack()
        try:
            port_file = pathlib.Path(self.profile) / "DevToolsActivePort"
            deadline = time.monotonic() + WAIT
            while not (port_file.exists() and port_file.read_text().strip()):
                assert time.monotonic() < deadline, "Chromium wrote no DevToolsActivePort"
                assert self.process.poll() is None, "Chromium exited"
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            page = None
            while page is None:
                with urllib.request.urlopen("http://127.0.0.1:%d/json" % port, timeout=5) as response:
                    page = next((t for t in json.load(response) if t.get("type") == "page"), None)
                assert page or time.monotonic() < deadline, "Chromium shows no page target"
                time.sleep(0.05 if page is None else 0)
            self.socket = self.stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=WAIT))
            self.call("Runtime.enable")
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def call(self, method, **params):
        self.next_id += 1
        ident = self.next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no answer to %s within %d s" % (method, WAIT)
            message = json.loads(self.socket.recv(timeout=remaining))
            if message.get("id") == ident:
                assert "error" not in message, "%s: %s" % (method, message["error"])
                return message["result"]
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.exceptions.append(details.get("exception", {}).get("description") or details.get("text"))

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError("%s threw %s" % (expression, details.get("exception", {}).get("description") or details.get("text")))
        return result["result"].get("value")

    def wait_for(self, expression, timeout=WAIT):
        """Polls `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        page = self.evaluate("JSON.stringify({state: window.dashboard && dashboard.state(), states: window.dashboard && dashboard.states.slice(-8), log: window.dashboard && dashboard.log.slice(0, 5)})")
        raise AssertionError("waited %s s for %s (last value %r); page: %s" % (timeout, expression, value, page))

    def navigate(self, url):
        """Opens `url` and waits until the dashboard has loaded /endpoints.json."""
        self.evaluate("window.__stale = true")
        self.call("Page.navigate", url=url)
        self.wait_for("!window.__stale && document.readyState === 'complete' && !!window.dashboard")
        self.evaluate("dashboard.ready.then(() => true)")

    def close(self):
        try:
            self.stack.close()
        except Exception:
            pass
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if not binary:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    browser = Chromium(binary)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def gateway():
    running = start_gateway(CONFIG, name="dashboard")
    try:
        yield running
    finally:
        stop_gateway(running)


@pytest.fixture
def page(chromium):
    """The browser, with no uncaught page exception left behind by the test."""
    chromium.exceptions.clear()
    yield chromium
    assert chromium.exceptions == [], chromium.exceptions
    chromium.evaluate("window.dashboard && dashboard.client && dashboard.client.close(); true")


def http_get(address, path):
    try:
        with urllib.request.urlopen("http://%s%s" % (address, path), timeout=5) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def js(value):
    return json.dumps(value)


def choose(page, element, value):
    """Sets a control of the dashboard as a user would (value, then a change event)."""
    page.wait_for("Array.from(document.getElementById(%s).options).some(o => o.value === %s)" % (js(element), js(value)))
    page.evaluate("""(() => { const e = document.getElementById(%s); e.value = %s;
        e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()""" % (js(element), js(value)))


def connect_dashboard(page, gateway, endpoint, encoder):
    page.navigate("http://%s/" % gateway.address)
    choose(page, "endpoint", endpoint)
    choose(page, "encoder", encoder)
    page.evaluate("document.getElementById('connect').click(); true")
    page.wait_for("dashboard.state() === 'open' && document.getElementById('state').textContent === 'open'")
    assert page.evaluate("document.getElementById('protocol').textContent") == "switchboard." + encoder


def subscribe_in_ui(page, topic):
    page.evaluate("""(() => { document.getElementById('topic').value = %s;
        document.getElementById('subscribe').click(); return true; })()""" % js(topic))
    page.wait_for("Array.from(document.querySelectorAll('#subscriptions li.active')).some(li => li.dataset.topic === %s)" % js(topic))


def log_entries(page, topic):
    """The #log entries of `topic`, oldest first, as {type, data}."""
    return page.evaluate("""Array.from(document.querySelectorAll('#log .entry')).filter(e => e.dataset.topic === %s)
        .reverse().map(e => ({type: e.dataset.type, data: JSON.parse(e.querySelector('pre').textContent)}))""" % js(topic))


def counter(page, topic):
    return page.evaluate("""(() => { const row = Array.from(document.querySelectorAll('#counters tr')).find(r => r.dataset.topic === %s);
        return row ? row.querySelector('.count').textContent : null; })()""" % js(topic))


@pytest.mark.parametrize("encoder", ["json", "msgpack"])
def test_dashboard_shows_a_published_event(page, gateway, encoder):
    connect_dashboard(page, gateway, "/ws", encoder)
    subscribe_in_ui(page, "orders")
    data = dict(DATA, encoder=encoder)
    gateway.publish(json.dumps({"topic": "orders", "type": "order_created", "data": data}))
    page.wait_for("document.querySelectorAll('#log .entry[data-topic=\"orders\"]').length >= 1")
    assert log_entries(page, "orders") == [{"type": "order_created", "data": data}]
    assert page.evaluate("dashboard.log[0].data") == data  # decoded, not only printed
    page.wait_for("!!document.querySelector('#counters tr[data-topic=\"orders\"] .count')")
    assert counter(page, "orders") == "1"
    # Markup in the data stays text.
    assert page.evaluate("document.querySelector('#log b')") is None
    # The live stats (polled every 2 s) count the event and this connection, and list the
    # webhook source.
    events_in = gateway.stats()["events_in"]
    page.wait_for("""(() => { const stat = name => Number((document.querySelector('#stats tr[data-stat="' + name + '"] td') || {}).textContent);
        return stat('events_in') >= %d && stat('connections') >= 1; })()""" % events_in, timeout=WAIT)
    assert "connected" in page.evaluate("document.querySelector('#stats tr[data-source=\"publish\"]').textContent")


def test_dashboard_shows_the_negotiated_compression(page, gateway):
    connect_dashboard(page, gateway, "/z", "json")
    assert "shared" in page.evaluate("document.getElementById('compression').textContent")
    assert "permessage-deflate" in page.evaluate("document.getElementById('extensions').textContent")
    connect_dashboard(page, gateway, "/ws", "json")
    assert "permessage-deflate" not in page.evaluate("document.getElementById('extensions').textContent")


def test_dashboard_reconnects_by_itself_when_the_gateway_restarts(page):
    first = start_gateway(CONFIG, name="restart-1")
    second = None
    try:
        connect_dashboard(page, first, "/ws", "json")
        subscribe_in_ui(page, "orders")
        first.publish(json.dumps({"topic": "orders", "type": "before", "data": {"n": 1}}))
        page.wait_for("dashboard.log.some(e => e.type === 'before')")

        stop_gateway(first)
        page.wait_for("dashboard.states.some(s => s.state === 'reconnecting')")
        port = int(first.address.split(":")[1])
        deadline = time.monotonic() + WAIT
        while second is None:
            try:
                second = start_gateway(CONFIG, name="restart-2", port=port)
            except AssertionError:  # the port still held a moment: try again
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

        # Back to open and resubscribed without any help from the page.
        page.wait_for("dashboard.state() === 'open' && dashboard.client.subscription('orders').active", timeout=2 * WAIT)
        states = page.evaluate("dashboard.states")
        drop = next(s for s in states if s["state"] == "reconnecting" and s.get("code") is not None)
        assert drop["code"] == 1001, states
        # The drain's close names a delay (its jitter chosen by the server); the client waits
        # exactly that instead of its own backoff.
        hint = re.search(r"reconnect_after_ms=(\d+)", drop.get("reason") or "")
        assert hint, states
        assert drop["delay"] == int(hint.group(1)), states
        assert page.evaluate("document.getElementById('state').textContent") == "open"

        second.publish(json.dumps({"topic": "orders", "type": "after", "data": {"n": 2}}))
        page.wait_for("dashboard.log.some(e => e.type === 'after')")
        assert log_entries(page, "orders") == [{"type": "before", "data": {"n": 1}}, {"type": "after", "data": {"n": 2}}]
        assert counter(page, "orders") == "2"
    finally:
        page.evaluate("window.dashboard && dashboard.client && dashboard.client.close(); true")
        if first.process.poll() is None:
            stop_gateway(first)
        if second is not None:
            stop_gateway(second)


def new_client(page, endpoint, options):
    """Creates window.__c, a Switchboard.Client recording its events, replies and errors.
    `options` is a dict, or JavaScript text for options holding a function."""
    page.evaluate("""(() => {
        const c = new Switchboard.Client(%s, %s);
        window.__c = {client: c, events: [], frames: [], subscribed: [], errors: [], refreshed: []};
        c.on('refreshed', r => __c.refreshed.push(r));
        c.on('event', e => __c.events.push(e));
        c.on('message', m => { if (typeof m.topic === 'string' && m.position) __c.frames.push(m.position.offset); });
        c.on('subscribed', s => __c.subscribed.push({topic: s.topic, position: s.position, recovered: s.recovered, replayed: s.replayed, resumed: s.resumed}));
        c.on('error', e => __c.errors.push({code: e.code, message: e.message}));
        return true; })()""" % (js(endpoint), options if isinstance(options, str) else js(options)))


def test_client_receives_msgpack_events_decoded(page, gateway):
    page.navigate("http://%s/" % gateway.address)
    new_client(page, "/ws", {"format": "msgpack", "topics": ["c:plain"]})
    page.wait_for("__c.subscribed.length === 1 && __c.client.state === 'open'")
    assert page.evaluate("__c.client.protocol") == "switchboard.msgpack"
    before = time.time()
    gateway.publish(json.dumps({"topic": "c:plain", "type": "tick", "id": "evt-1", "data": DATA}))
    page.wait_for("__c.events.length === 1")
    event = page.evaluate("__c.events[0]")
    assert (event["type"], event["topic"], event["id"], event["data"]) == ("tick", "c:plain", "evt-1", DATA)
    assert abs(event["timestamp"] - before) < 60
    # The envelope's key order (every topic keeps history here: /h keeps all of them).
    assert list(event) == [k for k in ["type", "topic", "id", "position", "timestamp", "data"] if k in event]

    # A garbage frame is an error event, not a dead client.
    page.evaluate("__c.client._onFrame(new Uint8Array([0xdc, 0xff, 0xff, 0x01]).buffer); __c.client._onFrame(new Uint8Array([0xc1]).buffer); true")
    assert [e["code"] for e in page.evaluate("__c.errors")] == ["client_decode", "client_decode"]
    gateway.publish(json.dumps({"topic": "c:plain", "type": "tick", "data": {"n": 2}}))
    page.wait_for("__c.events.length === 2")
    assert page.evaluate("__c.events[1].data") == {"n": 2}
    assert page.evaluate("__c.client.ping().then(ms => ms >= 0)") is True

    # The codec itself: the server's smallest encodings both ways, 64-bit as BigInt when unsafe.
    assert page.evaluate("""(() => { const m = Switchboard.msgpack;
        const bytes = m.encode({type: 'subscribe', data: 'ticks'});
        return Array.from(bytes); })()""") == list(bytes.fromhex("82a474797065a9737562736372696265a464617461a57469636b73"))
    assert page.evaluate("Switchboard.msgpack.decode(new Uint8Array([0xcf,0xff,0xff,0xff,0xff,0xff,0xff,0xff,0xff])).toString()") == str(2 ** 64 - 1)
    page.evaluate("__c.client.close(); true")


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_client_resumes_with_since_without_a_gap(page, gateway, fmt):
    topic = "feed:resume-" + fmt
    page.navigate("http://%s/" % gateway.address)
    new_client(page, "/h", {"format": fmt, "topics": [topic]})
    page.wait_for("__c.subscribed.length === 1")

    def publish(numbers):
        gateway.publish(json.dumps([{"topic": topic, "type": "item", "data": {"n": n}} for n in numbers]))

    publish([1, 2, 3])
    page.wait_for("__c.events.length === 3")

    # Away while 4 and 5 are published: connect() resumes from the last position.
    page.evaluate("__c.client.close(); true")
    page.wait_for("__c.client.state === 'closed'")
    publish([4, 5])
    page.evaluate("__c.client.connect(); true")
    page.wait_for("__c.events.length === 5 && __c.subscribed.length === 2")
    resumed = page.evaluate("__c.subscribed[1]")
    assert (resumed["resumed"], resumed["recovered"], resumed["replayed"]) == (True, True, 2), resumed

    # The socket dropped under the client: it reconnects by itself while 6 and 7 arrive.
    page.evaluate("__c.client._ws.close(); true")
    publish([6, 7])
    page.wait_for("__c.events.length >= 7 && __c.subscribed.length === 3 && __c.client.state === 'open'")
    assert page.evaluate("__c.subscribed[2]")["resumed"] is True
    assert page.evaluate("__c.subscribed[2]")["recovered"] is True
    publish([8])
    page.wait_for("__c.events.length >= 8")
    time.sleep(0.3)  # a duplicate would arrive right behind

    events = page.evaluate("__c.events")
    assert [e["data"]["n"] for e in events] == [1, 2, 3, 4, 5, 6, 7, 8]
    offsets = [e["position"]["offset"] for e in events]
    assert offsets == list(range(offsets[0], offsets[0] + 8)), offsets
    assert len({e["position"]["epoch"] for e in events}) == 1
    # What the server sent, before the client's own duplicate guard: no duplicate either.
    assert page.evaluate("__c.frames") == offsets
    assert page.evaluate("__c.client.subscription(%s).position.offset" % js(topic)) == offsets[-1]
    assert page.evaluate("__c.errors") == []
    page.evaluate("__c.client.close(); true")


def test_client_refreshes_a_token_function_and_stops_on_an_expired_string(page, gateway):
    import jwt

    def token(exp):
        return jwt.encode({"sub": "dashboard-test", "exp": exp}, JWT_SECRET, algorithm="HS256")

    page.navigate("http://%s/" % gateway.address)
    first_exp, second_exp = int(time.time()) + 3, int(time.time()) + 120
    page.evaluate("window.__tokens = %s; true" % js([token(first_exp), token(second_exp)]))
    new_client(page, "/jwt", "{topics: ['j'], token: () => Promise.resolve(__tokens.shift())}")
    page.wait_for("__c.subscribed.length === 1")
    # Refreshed from the first token's exp (80 % of its life), before the server's deadline.
    page.wait_for("__c.refreshed.length === 1", timeout=10)
    assert page.evaluate("__c.refreshed[0].expires_at") == second_exp
    time.sleep(max(0, first_exp + 1.5 - time.time()))
    assert page.evaluate("__c.client.state") == "open"
    gateway.publish(json.dumps({"topic": "j", "type": "after_refresh", "data": {}}))
    page.wait_for("__c.events.length === 1")
    page.evaluate("__c.client.close(); true")

    # A fixed string cannot be renewed: closed with 1008 at its exp, and no reconnect.
    new_client(page, "/jwt", {"topics": ["j"], "token": token(int(time.time()) + 2)})
    page.wait_for("__c.subscribed.length === 1")
    page.wait_for("__c.client.state === 'closed'", timeout=10)
    close = page.evaluate("__c.client.lastClose")
    assert close["code"] == 1008 and "token" in close["reason"], close
    time.sleep(1.5)
    assert page.evaluate("__c.client.state") == "closed"
    assert page.evaluate("__c.subscribed.length") == 1


def test_routes_are_served_and_can_be_turned_off():
    running = start_gateway(CONFIG, name="routes")
    try:
        status, content_type, body = http_get(running.address, "/client.js")
        assert status == 200 and "javascript" in content_type, (status, content_type)
        assert b"Switchboard" in body and b"class Client" in body
        status, content_type, body = http_get(running.address, "/")
        assert status == 200 and "text/html" in content_type, (status, content_type)
        assert b"/client.js" in body
        status, content_type, body = http_get(running.address, "/endpoints.json")
        assert status == 200 and "json" in content_type, (status, content_type)
        endpoints = {e["path"]: e for e in json.loads(body)["endpoints"]}
        assert sorted(endpoints) == ["/h", "/jwt", "/ws", "/z"]
        assert endpoints["/jwt"]["filters"] == ["jwt"]
        ws = endpoints["/ws"]
        assert (ws["transports"], ws["encoders"], ws["compression"], ws["topics"], ws["history"]) == (
            ["websocket"], ["json", "msgpack"], "off", ["*"], None)
        assert endpoints["/h"]["encoders"] == ["msgpack", "json"]
        assert endpoints["/h"]["history"] == {"size": 100, "ttl_seconds": 300}
        assert endpoints["/z"]["compression"] == "shared"
    finally:
        stop_gateway(running)

    moved = start_gateway(CONFIG + "dashboard: {path: /dash}\n", name="moved")
    try:
        status, content_type, _ = http_get(moved.address, "/dash")
        assert status == 200 and "text/html" in content_type
        assert http_get(moved.address, "/client.js")[0] == 200
    finally:
        stop_gateway(moved)

    off = start_gateway(CONFIG + "dashboard: {enabled: false}\n", name="off")
    try:
        for path in ["/", "/client.js", "/endpoints.json"]:
            assert http_get(off.address, path)[0] == 404, path
        assert http_get(off.address, "/stats")[0] == 200
    finally:
        stop_gateway(off)
