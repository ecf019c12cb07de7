"""Clients that misbehave against the whole server (issue 12): real sockets against the
release binary, each case asserting that the gateway stays up, that the clients that
behave lose nothing, and that the misbehaving one meets the documented status or close
code. Before the connection core was rebuilt, the first cases aborted the process
("Simultaneous accesses ... Fatal access conflict detected")."""
import base64
import json
import os
import resource
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ADMIN_KEY, PUBLISH_KEY, start_gateway, stop_gateway

CONFIG = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
  - name: stats
    plugin: timer
    every: 300ms
    topic: metrics
    type: metrics
    emit: stats
endpoints:
  - path: /ws
    encoders: [json]
    topics: ["*"]
    subscribe: [news]
  - path: /strict
    encoders: [json]
    topics: ["*"]
    subscribe: [news]
    send_queue: {max_messages: 64, max_bytes: 256KiB, policy: disconnect}
  - path: /norate
    encoders: [json]
    topics: ["*"]
    max_message_rate: 0
  - path: /small
    encoders: [json]
    max_message_size: 1KiB
  - path: /big
    encoders: [json]
    max_message_size: 4MiB
"""


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RawClient:
    """A WebSocket client on a plain socket, so a test controls exactly when it reads."""

    def __init__(self, address, path, rcvbuf=None, source="127.0.0.1", extra_headers="", trailing=b""):
        host, port = address.split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (path, address, key, extra_headers)
        ).encode() + trailing)
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = head.split(b"\r\n")[0].decode()
        assert " 101 " in self.status, head

    @staticmethod
    def frame(opcode, payload, fin=True):
        mask = os.urandom(4)
        header = bytes([(0x80 if fin else 0) | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return header + mask + masked

    def send_text(self, text):
        self.sock.sendall(self.frame(1, text.encode()))

    def read_frame(self, timeout=10):
        """(opcode, payload) of the next frame, or None once the socket is closed."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buffer) >= 2:
                opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
                offset = 2
                if length == 126 and len(self.buffer) >= 4:
                    length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif length == 127 and len(self.buffer) >= 10:
                    length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if length < 126 or offset > 2:
                    if len(self.buffer) >= offset + length:
                        payload = self.buffer[offset:offset + length]
                        self.buffer = self.buffer[offset + length:]
                        return opcode, payload
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, socket.timeout):
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def read_until_close(self, timeout=20):
        """The close code the server sent (None if the socket ended without one)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            frame = self.read_frame(timeout=max(0.1, deadline - time.time()))
            if frame is None:
                return None
            if frame[0] == 8:
                return struct.unpack("!H", frame[1][:2])[0] if len(frame[1]) >= 2 else 1005
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Reader(threading.Thread):
    """Reads events of one type and records their sequence numbers until it has `expected`."""

    def __init__(self, client, event_type, expected):
        super().__init__(daemon=True)
        self.client, self.event_type, self.expected = client, event_type, expected
        self.numbers = []

    def run(self):
        while len(self.numbers) < self.expected:
            frame = self.client.read_frame(timeout=30)
            if frame is None:
                return
            if frame[0] == 1:
                message = json.loads(frame[1])
                if message.get("type") == self.event_type:
                    self.numbers.append(message["data"]["n"])


def publish(gateway, events):
    request = urllib.request.Request(
        "http://%s/api/publish" % gateway.address, data=json.dumps(events).encode(),
        headers={"X-API-Key": PUBLISH_KEY, "Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def get(gateway, path, admin=False):
    headers = {"X-Admin-Key": ADMIN_KEY} if admin else {}
    request = urllib.request.Request("http://%s%s" % (gateway.address, path), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def raw_http(address, data, read_timeout=5, source="127.0.0.1"):
    """Sends raw bytes; returns everything the server answered before closing."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return answer, True
                answer += chunk
        except socket.timeout:
            return answer, False


@pytest.fixture(scope="module")
def hostile_gateway():
    running = start_gateway(CONFIG, name="hostile")
    yield running
    assert running.process.poll() is None, running.log.read_text()[-4000:]
    stop_gateway(running)


def test_client_that_stops_reading_beside_a_reader(hostile_gateway):
    """The exact reproduction: one client subscribes and stops reading, ~2,700 events of
    1 KB; the reader next to it gets every one, in order, and the gateway stays up."""
    gateway = hostile_gateway
    silent = RawClient(gateway.address, "/ws", rcvbuf=4096)
    slow = RawClient(gateway.address, "/ws", rcvbuf=4096)
    reader_client = RawClient(gateway.address, "/ws")
    # 2,700 is the reproduction; the rest is enough to pass what the kernel's socket
    # buffers and the default send queue (1,024 frames) hold, so drop_oldest must act.
    count = 9000
    reader = Reader(reader_client, "stall", count)
    reader.start()
    slow_stop = threading.Event()

    def read_slowly():
        while not slow_stop.is_set():
            try:
                slow.sock.settimeout(1)
                slow.sock.recv(2048)
            except OSError:
                pass
            time.sleep(0.05)
    threading.Thread(target=read_slowly, daemon=True).start()
    before = rss_kib(gateway.process.pid)
    padding = "x" * 1000
    for start in range(0, count, 100):
        publish(gateway, [{"topic": "news", "type": "stall", "data": {"n": n, "pad": padding}} for n in range(start, start + 100)])
    reader.join(timeout=60)
    slow_stop.set()
    assert gateway.process.poll() is None, gateway.log.read_text()[-4000:]
    assert reader.numbers == list(range(count))
    status, stats = get(gateway, "/stats")
    assert status == 200
    assert stats["dropped"] > 0  # drop_oldest applied to the silent client
    assert stats["connections"]["per_endpoint"]["/ws"]["refusals"]["slow_consumer_drops"] >= 1
    # Memory stays within the send queue's bounds (4 MiB per slow client by default).
    assert rss_kib(gateway.process.pid) - before < 64 * 1024
    for client in (silent, slow, reader_client):
        client.close()


def test_disconnect_policy_closes_a_slow_client_with_1008(hostile_gateway):
    gateway = hostile_gateway
    silent = RawClient(gateway.address, "/strict", rcvbuf=4096)
    reader_client = RawClient(gateway.address, "/strict")
    count = 3000  # 9 MB: more than the kernel's socket buffers hold for the silent client
    reader = Reader(reader_client, "strict", count)
    reader.start()
    padding = "y" * 3000
    for start in range(0, count, 100):
        publish(gateway, [{"topic": "news", "type": "strict", "data": {"n": n, "pad": padding}} for n in range(start, start + 100)])
    reader.join(timeout=60)
    assert reader.numbers == list(range(count))
    assert silent.read_until_close() == 1008
    assert get(gateway, "/stats")[1]["connections"]["per_endpoint"]["/strict"]["refusals"]["slow_consumer_disconnect"] >= 1
    silent.close()
    reader_client.close()


def test_batch_of_large_events_and_one_of_70_kb(hostile_gateway):
    gateway = hostile_gateway
    client = RawClient(gateway.address, "/ws")
    reader = Reader(client, "large", 11)
    reader.start()
    publish(gateway, [{"topic": "news", "type": "large", "data": {"n": n, "pad": "z" * 20000}} for n in range(10)])
    publish(gateway, [{"topic": "news", "type": "large", "data": {"n": 10, "pad": "z" * 70000}}])
    reader.join(timeout=30)
    assert reader.numbers == list(range(11))
    client.close()


def test_browser_sized_handshake_then_large_and_bursty_client_messages(hostile_gateway):
    """The handshake is read 128 bytes per wakeup (so an idle connection keeps a 128-byte
    receive buffer, Docs/PERFORMANCE.md); after it the buffer grows with the traffic. A
    6 KB upgrade request with a frame in the same write as its head, a 300 KB client
    message and a burst of 300 pings in one write all get their answers, in order."""
    gateway = hostile_gateway
    headers = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0\r\nOrigin: http://127.0.0.1\r\nCookie: %s\r\n" % ("c" * 6000)
    early = RawClient.frame(1, json.dumps({"type": "ping"}).encode())
    client = RawClient(gateway.address, "/big", extra_headers=headers, trailing=early)
    frame = client.read_frame(timeout=5)
    assert frame is not None and json.loads(frame[1])["type"] == "pong", frame
    client.send_text(json.dumps({"type": "ping", "pad": "p" * 300000}))
    frame = client.read_frame(timeout=10)
    assert frame is not None and json.loads(frame[1])["type"] == "pong", frame
    client.close()
    # /norate: no frame rate limit, so all 300 pings count; the subscribe after them is
    # answered after all 300 pongs.
    burst = RawClient(gateway.address, "/norate", extra_headers=headers)
    frames = [RawClient.frame(1, json.dumps({"type": "ping"}).encode()) for _ in range(300)]
    burst.sock.sendall(b"".join(frames) + RawClient.frame(1, json.dumps({"type": "subscribe", "topic": "news"}).encode()))
    answers = []
    while len(answers) < 301:
        frame = burst.read_frame(timeout=10)
        assert frame is not None, "closed after %d answers" % len(answers)
        answers.append(json.loads(frame[1])["type"])
    assert answers == ["pong"] * 300 + ["subscribed"], answers[-3:]
    burst.close()
    # A publisher's request head also arrives in small reads; its body does not.
    publish(gateway, [{"topic": "news", "type": "after", "data": {"pad": "q" * 60000}}])


def test_frame_limit_is_the_endpoints_own_before_any_payload(hostile_gateway):
    """A frame header announcing more than the endpoint's max_message_size is refused with
    1009 at once, before its payload: the connection's frame parser has the endpoint's limit
    (1 KiB), not the largest of all endpoints (4 MiB here), so nothing waits for or buffers
    2 MiB."""
    gateway = hostile_gateway
    small = RawClient(gateway.address, "/small")
    small.sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 2 << 20) + os.urandom(4) + b"x" * 100)
    started = time.time()
    assert small.read_until_close(timeout=5) == 1009
    assert time.time() - started < 3
    small.close()
    # The same header on the endpoint that allows 4 MiB is waited for (no close), and a
    # 1,100-byte message, past /small's limit, is fine there.
    big = RawClient(gateway.address, "/big")
    big.send_text(json.dumps({"type": "ping", "pad": "p" * 1100}))
    frame = big.read_frame(timeout=5)
    assert frame is not None and frame[0] == 1 and json.loads(frame[1])["type"] == "pong", frame
    big.close()
    status, stats = get(gateway, "/stats")
    assert stats["connections"]["per_endpoint"]["/small"]["refusals"]["message_too_big"] >= 1


def test_ping_burst_and_subscribe_flood_without_credentials(hostile_gateway):
    """3,000 pings in one burst and 10,000 subscribes on one connection: the endpoint's
    message rate (100/s, burst 200) closes them with 1008; the gateway stays up."""
    gateway = hostile_gateway
    pings = RawClient(gateway.address, "/ws")
    pings.sock.sendall(b"".join(RawClient.frame(1, b'{"type":"ping"}') for _ in range(3000)))
    assert pings.read_until_close() == 1008
    subscribes = RawClient(gateway.address, "/ws")
    burst = b"".join(RawClient.frame(1, json.dumps({"type": "subscribe", "data": "t%d" % i}).encode()) for i in range(10000))
    try:
        subscribes.sock.sendall(burst)
    except OSError:
        pass  # the server may close before it has read everything
    assert subscribes.read_until_close() == 1008
    # Three connections with 127 long topics each: replies and the stats events stay sane.
    clients = []
    for _ in range(3):
        client = RawClient(gateway.address, "/ws")
        for index in range(127):
            client.send_text(json.dumps({"type": "subscribe", "data": "topic-%03d-%s" % (index, "q" * 235)}))
        clients.append(client)
    for client in clients:
        replies = 0
        while replies < 127:
            frame = client.read_frame()
            assert frame is not None
            if frame[0] == 1 and json.loads(frame[1]).get("type") == "subscribed":
                replies += 1
    assert gateway.process.poll() is None
    status, stats = get(gateway, "/stats")
    assert stats["connections"]["per_endpoint"]["/ws"]["refusals"]["message_rate"] >= 2
    for client in clients + [pings, subscribes]:
        client.close()


def test_control_frame_flood_from_a_client_that_never_reads(hostile_gateway):
    """Pongs go through the bounded queue and reading stops while the socket is full, so
    a ping flood (rate limit off) cannot grow the gateway's memory; it returns after."""
    gateway = hostile_gateway
    pid = gateway.process.pid
    before = rss_kib(pid)
    flood = RawClient(gateway.address, "/norate", rcvbuf=4096)
    flood.sock.setblocking(False)
    frame = RawClient.frame(9, b"0123456789" * 12)
    chunk = frame * 500
    sent = 0
    deadline = time.time() + 8
    while time.time() < deadline and sent < 200_000:
        try:
            flood.sock.send(chunk)
            sent += 500
        except BlockingIOError:
            time.sleep(0.01)  # the gateway stopped reading us: that is the point
    peak = rss_kib(pid)
    assert gateway.process.poll() is None
    assert peak - before < 48 * 1024, (before, peak, sent)
    assert sent < 200_000, "the gateway kept reading a client that never reads"
    flood.close()


def test_http_garbage_gets_400_and_the_socket_closes(hostile_gateway):
    address = hostile_gateway.address
    for request in [
        b"GARBAGE\r\n\r\n",
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
    ]:
        answer, closed = raw_http(address, request)
        assert answer.startswith(b"HTTP/1.1 400"), (request[:40], answer[:200])
        assert closed
    answer, closed = raw_http(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert closed
    assert get(hostile_gateway, "/stats")[1]["refusals"]["listener"]["bad_request"] >= 5


def test_stats_show_topic_names_only_with_the_admin_key(hostile_gateway):
    gateway = hostile_gateway
    client = RawClient(gateway.address, "/ws")
    client.send_text(json.dumps({"type": "subscribe", "data": "user:alice:session-42"}))
    while True:
        frame = client.read_frame()
        assert frame is not None
        message = json.loads(frame[1])
        if message["type"] == "subscribed":
            break
    status, public = get(gateway, "/stats")
    assert status == 200 and "user:alice" not in json.dumps(public)
    assert public["subscriptions"]["total"] >= 1
    status, detailed = get(gateway, "/stats", admin=True)
    assert detailed["subscribers"]["user:alice:session-42"] == 1
    # The stats event clients receive carries counts, not other clients' topics.
    client.send_text(json.dumps({"type": "subscribe", "data": "metrics"}))
    while True:
        frame = client.read_frame()
        assert frame is not None
        message = json.loads(frame[1])
        if message["type"] == "metrics":
            assert "user:alice" not in frame[1].decode()
            break
    client.close()


def test_webhook_refuses_a_bad_key_before_reading_the_body(hostile_gateway):
    host, port = hostile_gateway.address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong-key-0123456789\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


LIMITS = """
listener:
  max_connections: 20
  max_connections_per_ip: 8
  handshake_timeout: 500ms
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /ws
    encoders: [json]
    subscribe: [news]
"""


def test_listener_limits_handshake_timeout_and_recovery():
    gateway = start_gateway(LIMITS, name="limits")
    try:
        # A socket that never sends a request, and one that sends half a head, are closed.
        for partial in [b"", b"GET /ws HTTP/1.1\r\nHost: x\r\n"]:
            answer, closed = raw_http(gateway.address, partial, read_timeout=4)
            assert closed, answer
        # Per address: the 9th socket from 127.0.0.1 gets 503, 127.0.0.2 is still welcome.
        held = [RawClient(gateway.address, "/ws") for _ in range(8)]
        answer, closed = raw_http(gateway.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503") and b"max_connections_per_ip" in answer, answer
        others = [RawClient(gateway.address, "/ws", source="127.0.0.%d" % (2 + i // 6)) for i in range(12)]
        # 20 open: past max_connections only /healthz is answered (probe headroom).
        answer, _ = raw_http(gateway.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.9")
        assert answer.startswith(b"HTTP/1.1 200"), answer
        answer, _ = raw_http(gateway.address, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.9")
        assert answer.startswith(b"HTTP/1.1 503"), answer
        # The clients already connected are still served.
        reader = Reader(held[0], "limited", 1)
        reader.start()
        held.pop().close()  # publishing needs a socket from 127.0.0.1: free one
        time.sleep(0.2)
        publish(gateway, [{"topic": "news", "type": "limited", "data": {"n": 0}}])
        reader.join(timeout=10)
        assert reader.numbers == [0]
        for client in held + others:
            client.close()
        time.sleep(0.5)
        # Recovered: new connections are welcome again.
        fresh = RawClient(gateway.address, "/ws")
        fresh.close()
        status, stats = get(gateway, "/stats")
        refusals = stats["refusals"]["listener"]
        assert refusals["handshake_timeout"] >= 2 and refusals["max_connections_per_ip"] >= 1 and refusals["max_connections"] >= 1
        assert gateway.process.poll() is None
    finally:
        stop_gateway(gateway)


FD_CONFIG = """
listener:
  handshake_timeout: 60s
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /ws
    encoders: [json]
    subscribe: [news]
"""


def test_at_the_file_descriptor_limit_the_gateway_keeps_serving():
    """`ulimit -n 1024` and 1,100 silent sockets: the gateway refuses the surplus, keeps its
    clients and recovers when sockets free up (this died with SIGILL before)."""
    def limit_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    gateway = start_gateway(FD_CONFIG, name="fdlimit", preexec_fn=limit_files)
    silent = []
    try:
        client = RawClient(gateway.address, "/ws")
        host, port = gateway.address.split(":")
        for index in range(1100):
            sock = socket.socket()
            sock.bind(("127.0.0.%d" % (10 + index // 500), 0))
            sock.settimeout(5)
            try:
                sock.connect((host, int(port)))
            except OSError:
                sock.close()
                continue
            silent.append(sock)
        time.sleep(1)
        assert gateway.process.poll() is None, gateway.log.read_text()[-4000:]
        # The connected client is still served: publish needs a socket, so free a few.
        for sock in silent[:40]:
            sock.close()
        del silent[:40]
        time.sleep(0.5)
        reader = Reader(client, "fd", 1)
        reader.start()
        publish(gateway, [{"topic": "news", "type": "fd", "data": {"n": 7}}])
        reader.join(timeout=10)
        assert reader.numbers == [7]
        for sock in silent:
            sock.close()
        silent = []
        time.sleep(1)
        again = RawClient(gateway.address, "/ws")
        again.close()
        client.close()
        assert get(gateway, "/stats")[1]["refusals"]["listener"]["max_connections"] >= 1
    finally:
        for sock in silent:
            sock.close()
        stop_gateway(gateway)
