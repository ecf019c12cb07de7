#!/usr/bin/env python3
"""Soak and chaos harness for the Switchboard gateway (standard library only).

One bounded run: starts its own redis-server and the gateway binary, drives a seeded mix
of well-behaved and hostile WebSocket clients for --duration seconds over raw asyncio
sockets, publishes sequenced events through the webhook (single events, batches, 20-70 KB
events) and Redis PUBLISH, kills redis-server (SIGKILL) and restarts it, and checks that:

- the gateway never died (polled; exit status, signal and its last log lines otherwise);
- well-behaved readers lost nothing, in order, for events published after their
  subscription was confirmed (expected / received / lost per reader);
- /readyz said not-ready while Redis was down and ready again within --ready-timeout;
- /healthz answered throughout;
- RSS (VmRSS) after the clients left is within --rss-growth-mib of the start, and its
  peak under --rss-peak-mib; the gateway's connection count and open files came back;
- the close codes clients saw are the documented ones (1002, 1007, 1009, ...).

Prints ONE JSON line on stdout (human logs on stderr). Exit status: 0 all checks passed,
1 a check failed, 2 the harness could not set up, 3 the watchdog fired, 130 interrupted.

    python3 Benchmarks/soak.py --binary .build/release/switchboard --short
    python3 Benchmarks/soak.py --binary .build/release/switchboard --duration 1800
"""
from __future__ import annotations

import argparse
import array
import asyncio
import base64
import bisect
import collections
import ctypes
import datetime
import errno
import hashlib
import json
import math
import os
import pathlib
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "Benchmarks" / "configs" / "soak.yaml"
PUBLISH_KEY = "soak-publish-key-0123456789abcdef"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SOURCE_ADDRESSES = ["127.0.0.%d" % i for i in range(2, 251)]

BEHAVIOURS = ("readers", "slow", "silent", "halfclose", "reset", "reconnect", "garbage", "idle")
# Share of --connections each behaviour gets as concurrent client slots. Deselected
# behaviours' slots are not handed to the others.
DEFAULT_MIX = {
    "readers": 0.15, "slow": 0.06, "silent": 0.06, "halfclose": 0.04,
    "reset": 0.05, "reconnect": 0.04, "garbage": 0.05, "idle": 0.55,
}
# kind: (relative weight, the outcomes that count as right, or None = anything goes).
# An outcome "X_after_..." counts as "X". The floods may also be cut off with 1008 when
# the endpoint limits the client message rate (`max_message_rate`, "message rate exceeded").
GARBAGE_KINDS = {
    "http_garbage": (1.0, ("http_400", "eof")),   # random bytes instead of an HTTP request
    "frame_garbage": (1.0, None),                 # random bytes after the upgrade
    "unmasked": (1.0, ("close:1002",)),
    "bad_opcode": (1.0, ("close:1002",)),
    "rsv_bits": (0.5, ("close:1002",)),
    "bad_close_code": (0.5, ("close:1002",)),
    "bad_utf8": (1.0, ("close:1007",)),
    "oversized_frame": (1.0, ("close:1009",)),
    "oversized_fragmented": (1.0, ("close:1009",)),
    "bad_json": (1.0, ("ok",)),                    # error replies, the connection stays open
    "ping_burst": (0.3, ("ok", "close:1008")),     # 3,000 {"type":"ping"} in one write: 3,000 pongs
    "subscribe_flood": (0.3, ("ok", "close:1008")),  # 2,000 subscribes: 128 subscribed, the rest refused
    "ping_flood": (0.3, ("ok", "close:1008")),     # 2,000 WebSocket pings in one write: 2,000 pongs
    # 3,000 {"type":"ping"} and 2,000 WebSocket pings without reading the answers for 5 s
    # (the server must not die; it may keep or drop the connection).
    "ping_burst_unread": (0.3, ("ok", "close:1008", "eof", "reset")),
}


def outcome_matches(outcome, accepted):
    return any(outcome == value or outcome.startswith(value + "_") for value in accepted)
MAX_SUBSCRIPTIONS = 128                   # the endpoints' max_subscriptions in soak.yaml
MAX_MESSAGE_SIZE = 64 * 1024              # the endpoints' max_message_size in soak.yaml

SINGLE_TOPICS = ["soak:w%d" % i for i in range(8)]
BATCH_TOPICS = ["soak:b0", "soak:b1"]
BIG_TOPIC = "soak:big"
REDIS_CHANNELS = ["soak-r0", "soak-r1"]
REDIS_TOPICS = ["redis:soak-r0", "redis:soak-r1"]
ALL_TOPICS = SINGLE_TOPICS + BATCH_TOPICS + [BIG_TOPIC] + REDIS_TOPICS
BUSY_TOPICS = SINGLE_TOPICS + BATCH_TOPICS + REDIS_TOPICS

PENDING, OK, FAILED, UNCERTAIN = 0, 1, 2, 3

T0 = time.monotonic()


def log(message):
    print("[soak %7.1fs] %s" % (time.monotonic() - T0, message), file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def covers(pattern, topic):
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(math.ceil(q * len(ordered))) - 1))
    return ordered[index]


def error_name(error):
    if isinstance(error, asyncio.TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionResetError):
        return "reset"
    if isinstance(error, BrokenPipeError):
        return "pipe"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, EOFError):
        return "eof"
    if isinstance(error, OSError) and error.errno:
        return errno.errorcode.get(error.errno, str(error.errno))
    return type(error).__name__


# ---------------------------------------------------------------------------------------
# Child processes: always killed on exit (also when this process dies: PR_SET_PDEATHSIG).


def _die_with_parent():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Children:
    def __init__(self):
        self.processes = []
        self.lock = threading.Lock()

    def spawn(self, args, log_path, env=None):
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                args, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, preexec_fn=_die_with_parent,
            )
        with self.lock:
            self.processes.append(process)
        return process

    def kill_all(self):
        with self.lock:
            processes = list(self.processes)
        for process in processes:
            if process.poll() is None:
                try:
                    process.kill()
                except OSError:
                    pass
        for process in processes:
            try:
                process.wait(timeout=5)
            except Exception:
                pass


CHILDREN = Children()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_proc_status(pid):
    """(VmRSS in KiB, open files, cpu seconds) of `pid`, None for what could not be read."""
    rss = fds = cpu = None
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
    except OSError:
        pass
    try:
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    return rss, fds, cpu


# ---------------------------------------------------------------------------------------
# Publish bookkeeping: every topic has one publisher that publishes in sequence order.


class TopicLog:
    """Per-topic publish log: status and acknowledgement time of every sequence number."""

    def __init__(self, name, source):
        self.name = name
        self.source = source
        self.status = bytearray()
        self.t_ack = array.array("d")
        self.prefix = None

    @property
    def next_seq(self):
        return len(self.status)

    def assign(self):
        self.status.append(PENDING)
        self.t_ack.append(math.inf)
        return len(self.status) - 1

    def settle(self, seq, status, at):
        self.status[seq] = status
        self.t_ack[seq] = at

    def finalize(self):
        prefix = array.array("q", [0])
        running = 0
        for value in self.status:
            if value == OK:
                running += 1
            prefix.append(running)
        self.prefix = prefix

    def ok_between(self, first, last):
        first = max(first, 0)
        last = min(last, len(self.status) - 1)
        if last < first:
            return 0
        return self.prefix[last + 1] - self.prefix[first]

    def last_acked_before(self, at):
        """The largest sequence number acknowledged before `at` (acks are in order)."""
        return bisect.bisect_left(self.t_ack, at) - 1

    def last_ok(self):
        for seq in range(len(self.status) - 1, -1, -1):
            if self.status[seq] == OK:
                return seq
        return -1


class TopicTrack:
    """What one reader session received on one topic: in-order ranges of sequence numbers."""

    __slots__ = ("s0", "ranges", "last", "late", "out_of_order", "duplicates", "received")

    def __init__(self, s0):
        self.s0 = s0
        self.ranges = []
        self.last = -1
        self.late = []
        self.out_of_order = 0
        self.duplicates = 0
        self.received = 0

    def add(self, seq):
        self.received += 1
        if seq > self.last:
            if self.ranges and seq == self.last + 1:
                self.ranges[-1][1] = seq
            else:
                self.ranges.append([seq, seq])
            self.last = seq
            return
        if seq in self.late or any(first <= seq <= last for first, last in self.ranges):
            self.duplicates += 1
        else:
            self.out_of_order += 1
            self.late.append(seq)


class ReaderSession:
    def __init__(self, index, endpoint, patterns):
        self.index = index
        self.endpoint = endpoint
        self.patterns = patterns
        self.tracks = {}
        self.t_start = now()
        self.t_cut = None          # events acknowledged before this count (None = to the end)
        self.end = None            # run_end | churn | unexpected:<why>
        self.closed = False
        self.t_end = None
        self.anomalies = collections.Counter()
        self.stats_events = 0
        self.pongs = 0
        self.pings_sent = 0


# ---------------------------------------------------------------------------------------
# WebSocket client on a raw non-blocking socket.


def mask_bytes(payload, key):
    length = len(payload)
    if not length:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(length, "little")


def client_frame(opcode, payload, rng, fin=True, rsv=0, masked=True):
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes([first, mask_bit | length])
    elif length < 65536:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return header + payload
    key = rng.randbytes(4)
    return header + key + mask_bytes(payload, key)


def text_frame(obj, rng):
    return client_frame(0x1, json.dumps(obj, separators=(",", ":")).encode(), rng)


def close_text(payload, reasons=None, behaviour=""):
    """'close:<code>' for a close frame's payload; counts '<code> <reason>' in `reasons`."""
    if len(payload) < 2:
        code = "empty"
    else:
        code = struct.unpack("!H", payload[:2])[0]
    if reasons is not None:
        reasons["%s %s %s" % (behaviour, code, payload[2:].decode("utf-8", "replace"))] += 1
    return "close:%s" % code


CLOSE_REASONS = collections.Counter()


def close_frame(code, rng, reason=b""):
    return client_frame(0x8, struct.pack("!H", code) + reason, rng)


class FrameError(Exception):
    pass


def parse_frames(buf, limit=64 * 1024 * 1024):
    """Complete frames at the front of `buf` (removed from it): (opcode, fin, rsv1, payload)."""
    frames = []
    pos = 0
    size = len(buf)
    while size - pos >= 2:
        first = buf[pos]
        second = buf[pos + 1]
        length = second & 0x7F
        p = pos + 2
        if length == 126:
            if size - p < 2:
                break
            length = (buf[p] << 8) | buf[p + 1]
            p += 2
        elif length == 127:
            if size - p < 8:
                break
            length = int.from_bytes(buf[p:p + 8], "big")
            p += 8
        if length > limit:
            raise FrameError("server frame of %d bytes" % length)
        key = None
        if second & 0x80:
            if size - p < 4:
                break
            key = bytes(buf[p:p + 4])
            p += 4
        if size - p < length:
            break
        payload = bytes(buf[p:p + length])
        if key is not None:
            payload = mask_bytes(payload, key)
            frames.append((-1, True, False, payload))  # servers must not mask: flagged
        else:
            frames.append((first & 0x0F, bool(first & 0x80), bool(first & 0x40), payload))
        pos = p + length
    if pos:
        del buf[:pos]
    return frames


class WS:
    """A client socket: raw bytes in and out, frames parsed from an internal buffer."""

    def __init__(self, h, sock, behaviour):
        self.h = h
        self.sock = sock
        self.behaviour = behaviour
        self.buf = bytearray()
        self.compressed = False
        self.no_context = True
        self.inflater = None
        self.fragments = None
        self.close_code = None

    async def send(self, data, timeout=10.0):
        await asyncio.wait_for(self.h.loop.sock_sendall(self.sock, data), timeout)

    async def recv(self, size=65536, timeout=5.0):
        """Reads into the buffer; returns the number of bytes (0 = EOF)."""
        data = await asyncio.wait_for(self.h.loop.sock_recv(self.sock, size), timeout)
        self.buf += data
        return len(data)

    def inflate(self, payload):
        if self.no_context or self.inflater is None:
            inflater = zlib.decompressobj(-15)
        else:
            inflater = self.inflater
        return inflater.decompress(payload + b"\x00\x00\xff\xff")

    def messages(self):
        """Complete messages in the buffer: (opcode, payload) with data messages reassembled
        and inflated; control frames as they come. Opcode -1 = a masked server frame."""
        out = []
        for opcode, fin, rsv1, payload in parse_frames(self.buf):
            if opcode >= 0x8 or opcode == -1:
                out.append((opcode, payload))
                continue
            if opcode in (0x1, 0x2):
                if fin:
                    out.append((opcode, self.inflate(payload) if rsv1 and self.compressed else payload))
                else:
                    self.fragments = [opcode, rsv1, [payload]]
            elif opcode == 0x0 and self.fragments is not None:
                self.fragments[2].append(payload)
                if fin:
                    first, rsv, parts = self.fragments
                    self.fragments = None
                    data = b"".join(parts)
                    out.append((first, self.inflate(data) if rsv and self.compressed else data))
            else:
                out.append((-2, payload))  # a stray continuation or reserved opcode
        return out

    def close(self):
        self.h.close_socket(self.sock)

    def reset(self):
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.h.close_socket(self.sock)


# ---------------------------------------------------------------------------------------
# Small HTTP/1.1 client (keep-alive) for the webhook and the probes.


class HTTPClient:
    def __init__(self, h, source=None):
        self.h = h
        self.source = source
        self.reader = None
        self.writer = None

    def close(self):
        if self.writer is not None:
            try:
                self.writer.transport.abort()
            except Exception:
                pass
        self.reader = self.writer = None

    async def request(self, method, path, body=b"", headers=None, timeout=10.0):
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers or {}), timeout)
        except BaseException:
            self.close()
            raise

    async def _request(self, method, path, body, headers):
        if self.writer is None:
            host, port = self.h.address
            local = (self.source, 0) if self.source else None
            self.reader, self.writer = await asyncio.open_connection(host, port, limit=1 << 20, local_addr=local)
        host, port = self.h.address
        head = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (host, port), "Content-Length: %d" % len(body)]
        head += ["%s: %s" % item for item in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise EOFError("connection closed before the response")
        parts = status_line.split(None, 2)
        status = int(parts[1])
        response_headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        if "content-length" in response_headers:
            data = await self.reader.readexactly(int(response_headers["content-length"]))
        elif response_headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await self.reader.readline()
                    break
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readline()
            data = b"".join(chunks)
        else:
            data = await self.reader.read(1 << 20)
            self.close()
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return status, data


# ---------------------------------------------------------------------------------------
# The harness.


class Harness:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.loop = None
        self.address = None
        self.tmp = None
        self.gateway = None
        self.gateway_log = None
        self.gateway_pid = None
        self.redis_process = None
        self.redis_port = None
        self.redis_up = False
        self.redis_paused = False
        self.death = None              # {"at_s", "returncode", "signal"} once the gateway died
        self.topics = {}
        for topic in SINGLE_TOPICS + BATCH_TOPICS + [BIG_TOPIC]:
            self.topics[topic] = TopicLog(topic, "webhook")
        for topic in REDIS_TOPICS:
            self.topics[topic] = TopicLog(topic, "redis")
        self.counters = collections.defaultdict(collections.Counter)
        self.garbage = collections.defaultdict(collections.Counter)
        self.garbage_notes = collections.defaultdict(list)
        self.reader_sessions = []
        self.sockets = set()
        self.max_open_sockets = 0
        self.source_index = 0
        self.pub = {
            "webhook": collections.Counter(), "redis": collections.Counter(),
        }
        self.pub_latency = {"webhook": [], "redis": []}
        self.pub_status = collections.Counter()
        self.readyz_samples = []       # (t_start, t_end, status or None, bus state)
        self.healthz_samples = []      # (t_start, elapsed, status or None)
        self.rss_samples = []          # (t, rss KiB, fds)
        self.stats_samples = []
        self.rss_peak = 0
        self.fds_peak = 0
        self.chaos = []
        self.loop_lag_max = 0.0
        self.t_clients = None
        self.t_load_end = None
        self.outage_webhook_deliveries = 0
        self.outages = []              # [t_kill, t_restart or None]
        self.harness_errors = collections.Counter()
        self.upgrade_latency = []
        self.listen_backlog = None
        self.listen_queue_max = 0
        self.listen_queue_full_samples = 0
        self.garbage_examples = collections.defaultdict(set)
        self.notes = []

    # events live in the loop
    def make_events(self):
        self.stop_publishing = asyncio.Event()
        self.stop_clients = asyncio.Event()
        self.stop_readers = asyncio.Event()
        self.dead_event = asyncio.Event()

    def t(self, at=None):
        return round((at if at is not None else now()) - T0, 3)

    # ------------------------------------------------------------------ sockets

    def next_source(self):
        self.source_index = (self.source_index + 1) % len(SOURCE_ADDRESSES)
        return SOURCE_ADDRESSES[self.source_index]

    def close_socket(self, sock):
        if sock in self.sockets:
            self.sockets.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    async def open_socket(self, behaviour, rcvbuf=None, timeout=None):
        timeout = timeout or self.args.connect_timeout
        counters = self.counters[behaviour]
        waited = 0.0
        while len(self.sockets) >= self.args.max_sockets:
            if waited > timeout:
                counters["socket_cap_wait_timeout"] += 1
                raise asyncio.TimeoutError()
            await asyncio.sleep(0.05)
            waited += 0.05
        counters["attempted"] += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.add(sock)
        self.max_open_sockets = max(self.max_open_sockets, len(self.sockets))
        try:
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.next_source(), 0))
            await asyncio.wait_for(self.loop.sock_connect(sock, self.address), timeout)
        except BaseException as error:
            self.close_socket(sock)
            if not isinstance(error, asyncio.CancelledError):
                counters["connect_error:" + error_name(error)] += 1
            raise
        counters["connected"] += 1
        return sock

    async def connect_ws(self, behaviour, path, rng, rcvbuf=None, deflate=False, timeout=None):
        """TCP connect and upgrade; None (counted) if either fails."""
        timeout = timeout or self.args.connect_timeout
        counters = self.counters[behaviour]
        started = now()
        try:
            sock = await self.open_socket(behaviour, rcvbuf=rcvbuf, timeout=timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            return None
        ws = WS(self, sock, behaviour)
        try:
            status = await self.upgrade(ws, path, rng, deflate, timeout)
        except asyncio.CancelledError:
            ws.close()
            raise
        except Exception as error:
            counters["upgrade_error:" + error_name(error)] += 1
            ws.close()
            return None
        if status != 101:
            counters["upgrade_status:%d" % status] += 1
            ws.close()
            return None
        counters["upgraded"] += 1
        counters["endpoint:" + path] += 1
        if len(self.upgrade_latency) < 200000:
            self.upgrade_latency.append(now() - started)
        if ws.compressed:
            counters["deflate_negotiated"] += 1
        return ws

    async def upgrade(self, ws, path, rng, deflate, timeout):
        key = base64.b64encode(rng.randbytes(16)).decode()
        host, port = self.address
        request = (
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, port, key)
        )
        if deflate:
            request += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        await ws.send((request + "\r\n").encode(), timeout)
        deadline = now() + timeout
        while b"\r\n\r\n" not in ws.buf:
            if len(ws.buf) > 65536:
                raise FrameError("response head too large")
            if await ws.recv(4096, timeout=max(0.01, deadline - now())) == 0:
                raise EOFError()
        head, _, rest = bytes(ws.buf).partition(b"\r\n\r\n")
        ws.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 101:
            expected = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != expected:
                self.counters[ws.behaviour]["bad_accept_header"] += 1
            extensions = headers.get("sec-websocket-extensions", "")
            if "permessage-deflate" in extensions:
                ws.compressed = True
                ws.no_context = "server_no_context_takeover" in extensions
                ws.inflater = zlib.decompressobj(-15)
        return status

    async def nap(self, seconds, event):
        try:
            await asyncio.wait_for(event.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    def note(self, message):
        if len(self.notes) < 50:
            self.notes.append("%.1fs %s" % (now() - T0, message))
        log(message)


# ---------------------------------------------------------------------------------------
# Processes: redis-server and the gateway.


async def wait_redis(h, timeout):
    deadline = now() + timeout
    while now() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", h.redis_port), 1.0)
            writer.write(b"PING\r\n")
            line = await asyncio.wait_for(reader.readline(), 1.0)
            writer.transport.abort()
            if line.startswith(b"+PONG"):
                return True
        except (OSError, asyncio.TimeoutError, EOFError):
            pass
        await asyncio.sleep(0.1)
    return False


def start_redis(h):
    redis_server = shutil.which("redis-server")
    h.redis_process = CHILDREN.spawn(
        [redis_server, "--port", str(h.redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", h.tmp, "--protected-mode", "no"],
        os.path.join(h.tmp, "redis.log"),
    )


def kill_redis(h):
    if h.redis_process and h.redis_process.poll() is None:
        h.redis_process.send_signal(signal.SIGKILL)
        try:
            h.redis_process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def gateway_log_tail(h, lines=40):
    try:
        with open(h.gateway_log, "rb") as output:
            output.seek(0, os.SEEK_END)
            size = output.tell()
            output.seek(max(0, size - 64 * 1024))
            text = output.read().decode("utf-8", "replace")
        return text.splitlines()[-lines:]
    except OSError:
        return []


def gateway_env(h):
    return dict(
        os.environ,
        SOAK_PUBLISH_KEY=PUBLISH_KEY,
        SOAK_REDIS_URL="redis://127.0.0.1:%d" % h.redis_port,
        SOAK_PORT="0",
    )


def check_config(h, config):
    result = subprocess.run(
        [h.args.binary, "check", config], env=gateway_env(h), capture_output=True, text=True, timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


async def start_gateway(h, config):
    h.gateway_log = os.path.join(h.tmp, "gateway.log")
    h.gateway = CHILDREN.spawn(
        [h.args.binary, "run", config, "--host", "127.0.0.1", "--port", "0", "--log-level", h.args.log_level],
        h.gateway_log, env=gateway_env(h),
    )
    h.gateway_pid = h.gateway.pid
    deadline = now() + h.args.start_timeout
    while now() < deadline:
        try:
            with open(h.gateway_log, "rb") as output:
                match = re.search(rb"address=(127\.0\.0\.1):(\d+)", output.read())
        except OSError:
            match = None
        if match:
            h.address = (match.group(1).decode(), int(match.group(2)))
            return True
        if h.gateway.poll() is not None:
            return False
        await asyncio.sleep(0.1)
    return False


# ---------------------------------------------------------------------------------------
# Monitors.


async def monitor_process(h):
    while True:
        code = h.gateway.poll()
        if code is not None:
            h.death = {
                "at_s": h.t(),
                "returncode": code,
                "signal": signal.Signals(-code).name if code < 0 and -code in signal.Signals._value2member_map_ else None,
            }
            h.note("GATEWAY DIED: exit status %s (%s)" % (code, h.death["signal"] or "no signal"))
            for line in gateway_log_tail(h, 8):
                log("  gateway| " + line)
            h.dead_event.set()
            h.stop_publishing.set()
            h.stop_clients.set()
            h.stop_readers.set()
            return
        await asyncio.sleep(0.2)


async def monitor_resources(h):
    last_fds = 0
    tick = 0
    while h.death is None:
        rss, fds, cpu = read_proc_status(h.gateway_pid)
        if rss is not None:
            h.rss_peak = max(h.rss_peak, rss)
        if tick % 4 == 0 and fds is not None:
            last_fds = fds
            h.fds_peak = max(h.fds_peak, fds)
        if tick % 10 == 0 and rss is not None:
            h.rss_samples.append((h.t(), round(rss / 1024, 1), last_fds, len(h.sockets)))
        tick += 1
        await asyncio.sleep(0.5)


async def monitor_healthz(h):
    client = HTTPClient(h)
    while h.death is None:
        started = now()
        try:
            status, _ = await client.request("GET", "/healthz", timeout=h.args.probe_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            status = None
            h.harness_errors["healthz:" + error_name(error)] += 1
        if h.death is None:
            h.healthz_samples.append((started, now() - started, status))
        await asyncio.sleep(max(0.0, 1.0 - (now() - started)))


async def monitor_readyz(h):
    client = HTTPClient(h)
    while h.death is None:
        started = now()
        state = None
        try:
            status, body = await client.request("GET", "/readyz", timeout=h.args.probe_timeout)
            try:
                for source in json.loads(body).get("sources", []):
                    if source.get("name") == "bus":
                        state = source.get("state")
            except (ValueError, AttributeError):
                pass
        except asyncio.CancelledError:
            raise
        except Exception as error:
            status = None
            h.harness_errors["readyz:" + error_name(error)] += 1
        if h.death is None:
            h.readyz_samples.append((started, now(), status, state))
        await asyncio.sleep(max(0.0, 0.5 - (now() - started)))


async def monitor_stats(h):
    client = HTTPClient(h)
    while h.death is None:
        started = now()
        try:
            status, body = await client.request("GET", "/stats", timeout=h.args.probe_timeout)
            if status == 200:
                stats = json.loads(body)
                h.stats_samples.append((h.t(started), stats.get("connections", {}).get("total"),
                                        stats.get("dropped"), stats.get("deliveries_out")))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            h.harness_errors["stats:" + error_name(error)] += 1
        await asyncio.sleep(max(0.0, 5.0 - (now() - started)))


def netstat_counters():
    """System-wide TcpExt counters about the accept queue (other processes count too)."""
    wanted = ("ListenOverflows", "ListenDrops")
    try:
        with open("/proc/net/netstat") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            pairs = dict(zip(names.split()[1:], values.split()[1:]))
            return {name: int(pairs[name]) for name in wanted if name in pairs}
    return {}


async def listen_queue(h):
    """(accept queue length, backlog) of the gateway's listening socket, from `ss`."""
    if not shutil.which("ss"):
        return None
    try:
        process = await asyncio.create_subprocess_exec(
            "ss", "-ltnH", "sport = :%d" % h.address[1],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        output, _ = await asyncio.wait_for(process.communicate(), 5.0)
    except (OSError, asyncio.TimeoutError):
        return None
    for line in output.decode().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "LISTEN":
            return int(fields[1]), int(fields[2])
    return None


async def monitor_listen_queue(h):
    while h.death is None:
        queue = await listen_queue(h)
        if queue:
            h.listen_backlog = queue[1]
            h.listen_queue_max = max(h.listen_queue_max, queue[0])
            if queue[0] >= queue[1]:
                h.listen_queue_full_samples += 1
        await asyncio.sleep(1.0)


async def monitor_loop_lag(h):
    while True:
        started = now()
        await asyncio.sleep(0.1)
        h.loop_lag_max = max(h.loop_lag_max, now() - started - 0.1)


async def wait_ready(h, timeout, client=None):
    """Polls /readyz until 200; returns seconds waited or None."""
    client = client or HTTPClient(h)
    started = now()
    while now() - started < timeout and h.death is None:
        try:
            status, _ = await client.request("GET", "/readyz", timeout=2.0)
            if status == 200:
                return now() - started
        except asyncio.CancelledError:
            raise
        except Exception:
            pass
        await asyncio.sleep(0.2)
    return None


# ---------------------------------------------------------------------------------------
# Publishers: one per group of topics, in order, each with a keep-alive connection.


class Payloads:
    def __init__(self, rng):
        self.text = base64.b64encode(rng.randbytes(768 * 1024)).decode()   # 1 MiB of ASCII

    def data(self, seq, size, rng):
        start = rng.randrange(0, len(self.text) - size)
        pad = self.text[start:start + size]
        return {"seq": seq, "n": size, "crc": zlib.crc32(pad.encode()), "pad": pad}


async def publish_webhook(h, client, events, logs):
    """POSTs `events` (one or a batch) and settles their sequence numbers."""
    body = json.dumps(events if len(events) > 1 else events[0], separators=(",", ":")).encode()
    started = now()
    counters = h.pub["webhook"]
    counters["requests"] += 1
    try:
        status, response = await client.request(
            "POST", "/api/publish", body,
            {"X-API-Key": PUBLISH_KEY, "Content-Type": "application/json"}, timeout=h.args.publish_timeout,
        )
    except asyncio.CancelledError:
        for (log_, seq) in logs:
            log_.settle(seq, UNCERTAIN, now())
        raise
    except Exception as error:
        counters["request_error:" + error_name(error)] += 1
        for (log_, seq) in logs:
            log_.settle(seq, UNCERTAIN, now())
        return False
    done = now()
    h.pub_latency["webhook"].append(done - started)
    accepted = None
    try:
        accepted = json.loads(response).get("accepted")
    except (ValueError, AttributeError):
        pass
    if status == 202 and accepted == len(events):
        for (log_, seq) in logs:
            log_.settle(seq, OK, done)
        counters["events_ok"] += len(events)
        return True
    counters["status:%d" % status] += 1
    if len(h.pub_status) < 20:
        h.pub_status["%d %s" % (status, response[:200].decode("utf-8", "replace"))] += 1
    for (log_, seq) in logs:
        log_.settle(seq, FAILED, done)
    return False


async def paced(h, rate, rng, step):
    """Calls `step()` about `rate` times a second until publishing stops."""
    interval = 1.0 / rate
    next_at = now() + rng.uniform(0, interval)
    while not h.stop_publishing.is_set():
        delay = next_at - now()
        if delay > 0:
            await h.nap(delay, h.stop_publishing)
            if h.stop_publishing.is_set():
                break
        await step()
        next_at = max(next_at + interval, now() - interval)


async def single_publisher(h, topics, rate, rng, payloads):
    client = HTTPClient(h, h.next_source())
    index = [0]

    async def step():
        topic = topics[index[0] % len(topics)]
        index[0] += 1
        log_ = h.topics[topic]
        seq = log_.assign()
        event = {"topic": topic, "type": "soak", "data": payloads.data(seq, rng.randint(60, 800), rng)}
        await publish_webhook(h, client, [event], [(log_, seq)])

    await paced(h, rate, rng, step)
    client.close()


async def batch_publisher(h, rate, rng, payloads):
    client = HTTPClient(h, h.next_source())

    async def step():
        count = rng.randint(2, 40)
        events, logs = [], []
        for _ in range(count):
            topic = rng.choice(BATCH_TOPICS)
            log_ = h.topics[topic]
            seq = log_.assign()
            events.append({"topic": topic, "type": "soak_batch", "data": payloads.data(seq, rng.randint(40, 400), rng)})
            logs.append((log_, seq))
        await publish_webhook(h, client, events, logs)

    await paced(h, rate, rng, step)
    client.close()


async def big_publisher(h, rate, rng, payloads):
    client = HTTPClient(h, h.next_source())
    low, high = h.args.large_kb

    async def step():
        log_ = h.topics[BIG_TOPIC]
        seq = log_.assign()
        event = {"topic": BIG_TOPIC, "type": "soak_big",
                 "data": payloads.data(seq, rng.randint(int(low * 1024), int(high * 1024)), rng)}
        await publish_webhook(h, client, [event], [(log_, seq)])

    await paced(h, rate, rng, step)
    client.close()


async def redis_publisher(h, rate, rng, payloads):
    connection = [None, None]
    index = [0]
    counters = h.pub["redis"]

    async def connect():
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", h.redis_port), 2.0)
        connection[0], connection[1] = reader, writer

    def drop():
        if connection[1] is not None:
            try:
                connection[1].transport.abort()
            except Exception:
                pass
        connection[0] = connection[1] = None

    async def step():
        channel = REDIS_CHANNELS[index[0] % len(REDIS_CHANNELS)]
        index[0] += 1
        log_ = h.topics["redis:" + channel]
        if h.redis_paused:
            counters["skipped_while_paused"] += 1
            return
        seq = log_.assign()
        counters["publishes"] += 1
        if connection[1] is None:
            try:
                await connect()
            except asyncio.CancelledError:
                log_.settle(seq, FAILED, now())
                raise
            except Exception as error:
                counters["connect_error:" + error_name(error)] += 1
                log_.settle(seq, FAILED, now())
                return
        payload = json.dumps(payloads.data(seq, rng.randint(60, 600), rng), separators=(",", ":")).encode()
        command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(channel), channel.encode(), len(payload), payload)
        started = now()
        try:
            connection[1].write(command)
            await asyncio.wait_for(connection[1].drain(), 2.0)
            line = await asyncio.wait_for(connection[0].readline(), 2.0)
        except asyncio.CancelledError:
            log_.settle(seq, UNCERTAIN, now())
            raise
        except Exception as error:
            counters["error:" + error_name(error)] += 1
            log_.settle(seq, UNCERTAIN, now())
            drop()
            return
        done = now()
        if line.startswith(b":"):
            receivers = int(line[1:].strip())
            h.pub_latency["redis"].append(done - started)
            if receivers >= 1:
                log_.settle(seq, OK, done)
                counters["events_ok"] += 1
            else:
                log_.settle(seq, FAILED, done)
                counters["no_subscriber"] += 1
        else:
            counters["bad_reply"] += 1
            log_.settle(seq, FAILED, done)
            drop()

    await paced(h, rate, rng, step)
    drop()


# ---------------------------------------------------------------------------------------
# Chaos on the backend.


async def chaos(h, rng):
    args = h.args
    if args.redis_kills <= 0:
        return
    fractions = [0.25, 0.6, 0.8][:args.redis_kills] if args.redis_kills <= 3 else \
        [(i + 1) / (args.redis_kills + 1) for i in range(args.redis_kills)]
    for fraction in fractions:
        at = h.t_clients + args.duration * fraction + rng.uniform(-1.0, 1.0)
        await h.nap(at - now(), h.stop_publishing)
        if h.stop_publishing.is_set() or h.death is not None:
            return
        record = {"killed_at_s": None, "restarted_at_s": None, "not_ready_after_s": None,
                  "ready_again_after_s": None}
        h.chaos.append(record)
        h.redis_paused = True          # no Redis publish in flight across the kill
        await asyncio.sleep(0.5)
        killed = now()
        kill_redis(h)
        h.redis_up = False
        outage = [killed, None]
        h.outages.append(outage)
        record["killed_at_s"] = h.t(killed)
        h.note("chaos: redis-server killed (SIGKILL)")
        # Publish webhook events as usual and try Redis (refused) while it is down.
        h.redis_paused = False
        await asyncio.sleep(args.redis_down)
        spawned = now()
        start_redis(h)
        if not await wait_redis(h, 10.0):
            h.note("chaos: redis-server did not come back")
            record["error"] = "redis-server did not restart"
            return
        restarted = spawned           # the gateway may reconnect before our own PING gets through
        h.redis_up = True
        outage[1] = restarted
        record["restarted_at_s"] = h.t(restarted)
        record["accepting_after_s"] = round(now() - spawned, 3)
        h.note("chaos: redis-server restarted on port %d" % h.redis_port)
        # Wait for /readyz to say ready (the readyz monitor's samples are the evidence).
        deadline = restarted + args.ready_timeout
        while now() < deadline and h.death is None:
            ready = [s for s in h.readyz_samples if s[0] >= restarted and s[2] == 200]
            if ready:
                break
            await asyncio.sleep(0.2)
        samples_down = [s for s in h.readyz_samples if killed <= s[0] and s[2] == 503]
        if samples_down:
            record["not_ready_after_s"] = round(samples_down[0][1] - killed, 3)
        ready = [s for s in h.readyz_samples if s[0] >= restarted and s[2] == 200]
        if ready:
            record["ready_again_after_s"] = round(ready[0][1] - restarted, 3)
            h.note("chaos: ready again %.1fs after the restart" % record["ready_again_after_s"])
        else:
            h.note("chaos: NOT ready %ds after the restart" % args.ready_timeout)


# ---------------------------------------------------------------------------------------
# Client behaviours.


def choose_reader_patterns(rng):
    count = rng.randint(2, 4)
    patterns = rng.sample(ALL_TOPICS, count)
    if rng.random() < 0.15:
        patterns.append("soak:w*")
    if rng.random() < 0.2:
        patterns.append("stats")
    return patterns


async def reader_slot(h, index, rng):
    """Long-lived readers; a share of them churn (unsubscribe, close, reconnect)."""
    churn = rng.random() < 0.3
    while not h.stop_readers.is_set() and h.death is None:
        ended = await reader_session(h, index, rng, churn)
        if h.stop_readers.is_set() or h.death is not None or h.stop_clients.is_set() and not ended:
            break
        await h.nap(rng.uniform(0.2, 1.5) if ended else 1.0, h.stop_readers)
        if h.stop_clients.is_set():
            break   # no new reader sessions during the drain


async def reader_session(h, index, rng, churn):
    endpoint = "/ws-deflate" if rng.random() < 0.3 else "/ws"
    ws = await h.connect_ws("readers", endpoint, rng, deflate=endpoint == "/ws-deflate")
    if ws is None:
        return False
    counters = h.counters["readers"]
    patterns = choose_reader_patterns(rng)
    session = ReaderSession(index, endpoint, patterns)
    h.reader_sessions.append(session)
    active = set()
    pending = set(patterns)
    unsubscribing = set()
    deadline = now() + rng.uniform(15, 45) if churn else math.inf
    last_data = now()
    next_ping = now() + rng.uniform(5, 15)
    try:
        await ws.send(b"".join(text_frame({"type": "subscribe", "data": p}, rng) for p in patterns))
        while True:
            if h.stop_readers.is_set() or h.death is not None:
                session.end = "run_end" if h.death is None else "unexpected:gateway_died"
                break
            if now() >= deadline and not unsubscribing:
                session.t_cut = now() - h.args.seam
                unsubscribing = set(active)
                await ws.send(b"".join(text_frame({"type": "unsubscribe", "data": p}, rng) for p in active))
                deadline = now() + 5.0
            elif unsubscribing and (not active or now() >= deadline):
                if active:
                    session.anomalies["unsubscribe_unanswered"] += 1
                session.end = "churn"
                break
            if now() >= next_ping:
                await ws.send(text_frame({"type": "ping"}, rng))
                session.pings_sent += 1
                next_ping = now() + rng.uniform(5, 15)
            try:
                received = await ws.recv(65536, timeout=1.0)
            except asyncio.TimeoutError:
                if now() - last_data > h.args.reader_stall:
                    session.anomalies["stalled_%ds" % h.args.reader_stall] += 1
                    last_data = now()
                continue
            if received == 0:
                session.end = "unexpected:eof"
                break
            last_data = now()
            replies = []
            for opcode, payload in ws.messages():
                if opcode == 0x1:
                    handle_reader_text(h, session, payload, active, pending, unsubscribing)
                elif opcode == 0x9:
                    replies.append(client_frame(0xA, payload, rng))
                elif opcode == 0x8:
                    code = close_text(payload, CLOSE_REASONS, "readers").split(":")[1]
                    ws.close_code = code
                    session.end = "unexpected:close_%s" % code
                    counters["server_close:%s" % code] += 1
                    break
                elif opcode == 0xA:
                    pass
                else:
                    session.anomalies["unexpected_opcode_%d" % opcode] += 1
            if session.end:
                break
            if replies:
                await ws.send(b"".join(replies))
        if session.end in ("run_end", "churn"):
            await close_handshake(h, ws, rng, counters)
    except asyncio.CancelledError:
        session.end = session.end or "cancelled"
        raise
    except Exception as error:
        session.end = session.end or "unexpected:" + error_name(error)
        counters["error:" + error_name(error)] += 1
    finally:
        if session.end and session.end.startswith("unexpected"):
            session.t_cut = now() - h.args.seam if session.t_cut is None else session.t_cut
            if h.death is None:
                counters["unexpected_end:" + session.end.split(":", 1)[1]] += 1
        session.closed = True
        session.t_end = now()
        ws.close()
    return session.end in ("churn", "run_end")


def handle_reader_text(h, session, payload, active, pending, unsubscribing):
    try:
        message = json.loads(payload)
    except ValueError:
        session.anomalies["bad_json_from_server"] += 1
        return
    topic = message.get("topic")
    if topic is not None:
        if topic == "stats":
            session.stats_events += 1
            return
        log_ = h.topics.get(topic)
        if log_ is None:
            session.anomalies["unknown_topic"] += 1
            return
        track = session.tracks.get(topic)
        if track is None:
            session.anomalies["event_before_subscribed"] += 1
            return
        if not any(covers(p, topic) for p in active) and not any(covers(p, topic) for p in unsubscribing):
            session.anomalies["event_after_unsubscribed"] += 1
        data = message.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
            session.anomalies["malformed_event"] += 1
            return
        pad = data.get("pad", "")
        if len(pad) != data.get("n") or zlib.crc32(pad.encode()) != data.get("crc"):
            session.anomalies["corrupt_payload"] += 1
        if h.outages and h.outages[-1][1] is None and log_.source == "webhook":
            h.outage_webhook_deliveries += 1
        track.add(data["seq"])
        return
    kind = message.get("type")
    if kind == "subscribed":
        pattern = message.get("data")
        if pattern in pending:
            pending.discard(pattern)
            active.add(pattern)
            for name, log_ in h.topics.items():
                if covers(pattern, name) and name not in session.tracks:
                    session.tracks[name] = TopicTrack(log_.next_seq)
        else:
            session.anomalies["unexpected_subscribed"] += 1
    elif kind == "unsubscribed":
        active.discard(message.get("data"))
    elif kind == "pong":
        session.pongs += 1
    elif kind == "error":
        session.anomalies["error:%s" % (message.get("data") or {}).get("code")] += 1
    else:
        session.anomalies["unexpected_type"] += 1


async def close_handshake(h, ws, rng, counters, code=1000):
    """Sends a close frame and waits (bounded) for the server's; counts what it answered."""
    try:
        await ws.send(close_frame(code, rng), timeout=3.0)
        deadline = now() + 3.0
        while now() < deadline:
            if await ws.recv(65536, timeout=max(0.01, deadline - now())) == 0:
                counters["close_answer:eof"] += 1
                return
            for opcode, payload in ws.messages():
                if opcode == 0x8:
                    answer = close_text(payload, CLOSE_REASONS, ws.behaviour + " answer").split(":")[1]
                    counters["close_answer:%s" % answer] += 1
                    return
        counters["close_answer:timeout"] += 1
    except asyncio.CancelledError:
        raise
    except Exception as error:
        counters["close_answer:" + error_name(error)] += 1


async def drain_for_close(ws, seconds, size=65536):
    """Reads fast for up to `seconds`: 'close:<code>', 'eof', 'open' (quiet) or an error."""
    deadline = now() + seconds
    try:
        while now() < deadline:
            try:
                if await ws.recv(size, timeout=min(1.0, max(0.01, deadline - now()))) == 0:
                    return "eof"
            except asyncio.TimeoutError:
                return "open"
            try:
                for opcode, payload in ws.messages():
                    if opcode == 0x8:
                        return close_text(payload, CLOSE_REASONS, ws.behaviour)
            except (zlib.error, FrameError):
                return "bad_frame"
        return "open"
    except asyncio.CancelledError:
        raise
    except Exception as error:
        return error_name(error)


async def slow_slot(h, index, rng):
    counters = h.counters["slow"]
    while not h.stop_clients.is_set() and h.death is None:
        endpoint = rng.choice(["/ws", "/ws-strict"])
        ws = await h.connect_ws("slow", endpoint, rng, rcvbuf=rng.choice([2048, 4096, 8192]),
                                deflate=rng.random() < 0.5)
        if ws is None:
            await h.nap(1.0, h.stop_clients)
            continue
        outcome = None
        last_seq = {}
        try:
            topics = [BIG_TOPIC, "soak:w*"] + rng.sample(BATCH_TOPICS + REDIS_TOPICS, 2)
            await ws.send(b"".join(text_frame({"type": "subscribe", "data": t}, rng) for t in topics))
            end = now() + rng.uniform(20, 90)
            next_keepalive = now() + 2.0
            while now() < end and not h.stop_clients.is_set():
                await h.nap(rng.uniform(0.2, 2.0), h.stop_clients)
                try:
                    got = await ws.recv(rng.choice([512, 1024, 4096]), timeout=0.2)
                    counters["bytes_read"] += got
                    if got == 0:
                        outcome = "eof"
                        break
                except asyncio.TimeoutError:
                    pass
                try:
                    for opcode, payload in ws.messages():
                        if opcode == 0x8:
                            outcome = close_text(payload, CLOSE_REASONS, ws.behaviour)
                        elif opcode == 0x1:
                            count_slow_event(payload, last_seq, counters, endpoint)
                except (zlib.error, FrameError, ValueError):
                    outcome = "bad_frame"
                if outcome:
                    break
                if now() >= next_keepalive:   # an unsolicited pong keeps the heartbeat happy
                    await ws.send(client_frame(0xA, b"", rng), timeout=2.0)
                    next_keepalive = now() + 2.0
            if outcome is None:
                outcome = await drain_for_close(ws, 3.0)
            counters["%s:%s" % (endpoint, outcome)] += 1
            if outcome == "open":
                await close_handshake(h, ws, rng, counters)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            counters["%s:%s" % (endpoint, error_name(error))] += 1
        finally:
            ws.close()
        await h.nap(rng.uniform(0.5, 3.0), h.stop_clients)


def count_slow_event(payload, last_seq, counters, endpoint):
    """Counts a slow reader's events and the gaps (drops) it sees per topic."""
    message = json.loads(payload)
    topic = message.get("topic")
    data = message.get("data")
    if topic is None or not isinstance(data, dict) or not isinstance(data.get("seq"), int):
        return
    counters["events"] += 1
    previous = last_seq.get(topic)
    if previous is not None and data["seq"] > previous + 1:
        counters["%s:gaps" % endpoint] += 1
    last_seq[topic] = data["seq"]


async def silent_slot(h, index, rng):
    counters = h.counters["silent"]
    while not h.stop_clients.is_set() and h.death is None:
        endpoint = rng.choice(["/ws", "/ws-strict"])
        rcvbuf = rng.choice([None, 4096])
        ws = await h.connect_ws("silent", endpoint, rng, rcvbuf=rcvbuf, deflate=rng.random() < 0.5)
        if ws is None:
            await h.nap(1.0, h.stop_clients)
            continue
        try:
            topics = [BIG_TOPIC] + rng.sample(BUSY_TOPICS, rng.randint(2, 5))
            await ws.send(b"".join(text_frame({"type": "subscribe", "data": t}, rng) for t in topics))
            await h.nap(rng.uniform(15, 60), h.stop_clients)
            if rng.random() < 0.5 and not h.stop_clients.is_set():
                outcome = await drain_for_close(ws, 5.0)
                counters["%s:%s" % (endpoint, outcome)] += 1
            else:
                counters["%s:closed_unread" % endpoint] += 1
        except asyncio.CancelledError:
            raise
        except Exception as error:
            counters["%s:%s" % (endpoint, error_name(error))] += 1
        finally:
            ws.close()    # unread data makes the kernel answer with RST
        await h.nap(rng.uniform(0.5, 3.0), h.stop_clients)


async def halfclose_slot(h, index, rng):
    counters = h.counters["halfclose"]
    while not h.stop_clients.is_set() and h.death is None:
        endpoint = rng.choice(["/ws", "/ws-deflate", "/ws-strict"])
        ws = await h.connect_ws("halfclose", endpoint, rng, deflate=endpoint != "/ws")
        if ws is None:
            await h.nap(1.0, h.stop_clients)
            continue
        try:
            await ws.send(text_frame({"type": "subscribe", "data": rng.choice(BUSY_TOPICS)}, rng))
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            ws.sock.shutdown(socket.SHUT_WR)
            started = now()
            outcome = None
            while now() - started < h.args.halfclose_timeout:
                try:
                    if await ws.recv(65536, timeout=1.0) == 0:
                        outcome = "server_closed"
                        break
                except asyncio.TimeoutError:
                    continue
                ws.buf.clear()
            if outcome is None:
                outcome = "still_open_after_%ds" % h.args.halfclose_timeout
            else:
                h.counters["halfclose_latency"]["<1s" if now() - started < 1 else "1-5s" if now() - started < 5 else ">5s"] += 1
            counters[outcome] += 1
        except asyncio.CancelledError:
            raise
        except Exception as error:
            counters["error:" + error_name(error)] += 1
        finally:
            ws.close()
        await h.nap(rng.uniform(0.5, 3.0), h.stop_clients)


async def reset_slot(h, index, rng):
    counters = h.counters["reset"]
    while not h.stop_clients.is_set() and h.death is None:
        endpoint = rng.choice(["/ws", "/ws-deflate", "/ws-strict"])
        if rng.random() < 0.2:
            # Reset in the middle of the upgrade request.
            try:
                sock = await h.open_socket("reset")
            except asyncio.CancelledError:
                raise
            except Exception:
                await h.nap(1.0, h.stop_clients)
                continue
            ws = WS(h, sock, "reset")
            try:
                await ws.send(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webso" % endpoint.encode())
                await asyncio.sleep(rng.uniform(0, 0.5))
                counters["reset_mid_request"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as error:
                counters["error:" + error_name(error)] += 1
            ws.reset()
        else:
            ws = await h.connect_ws("reset", endpoint, rng, deflate=endpoint != "/ws")
            if ws is None:
                await h.nap(1.0, h.stop_clients)
                continue
            try:
                await ws.send(b"".join(text_frame({"type": "subscribe", "data": t}, rng)
                                       for t in rng.sample(ALL_TOPICS, 3)))
                end = now() + rng.uniform(0, 3)
                while now() < end:
                    try:
                        if await ws.recv(rng.choice([1024, 65536]), timeout=0.3) == 0:
                            break
                    except asyncio.TimeoutError:
                        pass
                    ws.buf.clear()
                counters["reset_after_upgrade"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as error:
                counters["error:" + error_name(error)] += 1
            ws.reset()
        await h.nap(rng.uniform(0.2, 2.0), h.stop_clients)


async def reconnect_one(h, rng, counters):
    endpoint = rng.choice(["/ws", "/ws-deflate", "/ws-strict"])
    started = now()
    ws = await h.connect_ws("reconnect", endpoint, rng, deflate=endpoint != "/ws")
    if ws is None:
        return
    try:
        topic = rng.choice(ALL_TOPICS)
        await ws.send(text_frame({"type": "subscribe", "data": topic}, rng))
        deadline = now() + 5.0
        confirmed = False
        while now() < deadline and not confirmed:
            if await ws.recv(65536, timeout=max(0.01, deadline - now())) == 0:
                counters["eof_before_subscribed"] += 1
                return
            for opcode, payload in ws.messages():
                if opcode == 0x1 and b'"subscribed"' in payload:
                    confirmed = True
        counters["subscribed" if confirmed else "subscribe_timeout"] += 1
        h.counters["reconnect_latency"][bucket_ms(now() - started)] += 1
        await asyncio.sleep(rng.uniform(0, 0.5))
        await close_handshake(h, ws, rng, counters)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        counters["error:" + error_name(error)] += 1
    finally:
        ws.close()


def bucket_ms(seconds):
    for limit in (10, 50, 100, 500, 1000, 5000):
        if seconds * 1000 < limit:
            return "<%dms" % limit
    return ">=5000ms"


async def reconnect_slot(h, index, rng):
    counters = h.counters["reconnect"]
    while not h.stop_clients.is_set() and h.death is None:
        burst = rng.randint(3, 12)
        counters["bursts"] += 1
        await asyncio.gather(*(reconnect_one(h, random.Random(rng.getrandbits(64)), counters) for _ in range(burst)),
                             return_exceptions=True)
        await h.nap(rng.uniform(2.0, 8.0), h.stop_clients)


async def idle_slot(h, index, rng):
    counters = h.counters["idle"]
    while not h.stop_clients.is_set() and h.death is None:
        try:
            sock = await h.open_socket("idle")
        except asyncio.CancelledError:
            raise
        except Exception:
            await h.nap(1.0, h.stop_clients)
            continue
        held = rng.uniform(20, 120)
        started = now()
        try:
            outcome = "held"
            waiter = asyncio.ensure_future(h.loop.sock_recv(sock, 1024))
            stopper = asyncio.ensure_future(h.stop_clients.wait())
            done, _ = await asyncio.wait({waiter, stopper}, timeout=held, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                try:
                    waited = now() - started
                    outcome = "server_closed_after_%s" % ("<5s" if waited < 5 else "5-15s" if waited < 15 else ">=15s") \
                        if waiter.result() == b"" else "server_sent_data"
                except Exception as error:
                    outcome = error_name(error)
            for future in (waiter, stopper):
                if not future.done():
                    future.cancel()
            counters[outcome] += 1
        finally:
            h.close_socket(sock)
        await h.nap(rng.uniform(1.0, 5.0), h.stop_clients)


# ---------------------------------------------------------------------------------------
# Garbage senders.


async def garbage_slot(h, index, rng):
    kinds = [k for k in GARBAGE_KINDS if ("garbage." + k) in h.args.selected]
    if not kinds:
        return
    weights = [GARBAGE_KINDS[k][0] for k in kinds]
    while not h.stop_clients.is_set() and h.death is None:
        kind = rng.choices(kinds, weights)[0]
        try:
            outcome = await asyncio.wait_for(garbage_session(h, kind, rng), 30.0)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            outcome = "harness_timeout"
        except Exception as error:
            outcome = "error:" + error_name(error)
        if outcome is not None:
            expected = GARBAGE_KINDS[kind][1]
            if expected and not outcome_matches(outcome, expected) and h.death is None:
                await asyncio.sleep(0.5)   # a wrong answer may be the gateway dying: the monitor polls
            if h.death is not None:
                outcome = "gateway_died"
            short, _, detail = outcome.partition("_after_")
            if detail and len(h.garbage_examples[kind]) < 4:
                h.garbage_examples[kind].add(outcome)
            h.garbage[kind][short] += 1
        await h.nap(rng.uniform(0.5, 3.0), h.stop_clients)


async def read_until_close(ws, seconds):
    """Reads for up to `seconds`: 'close:<code>', 'eof', 'reset', 'timeout'; answers pings
    with nothing (garbage clients are rude)."""
    deadline = now() + seconds
    try:
        while now() < deadline:
            try:
                if await ws.recv(65536, timeout=max(0.01, deadline - now())) == 0:
                    return "eof"
            except asyncio.TimeoutError:
                break
            for opcode, payload in ws.messages():
                if opcode == 0x8:
                    return close_text(payload, CLOSE_REASONS, ws.behaviour)
        return "timeout"
    except asyncio.CancelledError:
        raise
    except Exception as error:
        return error_name(error)


async def count_replies(ws, rng, wanted, seconds, predicate):
    """Reads until `wanted` messages matched `predicate(opcode, payload)` (returns the
    count and a close outcome if the server closed)."""
    deadline = now() + seconds
    matched = 0
    others = collections.Counter()
    while now() < deadline and matched < wanted:
        try:
            if await ws.recv(65536, timeout=max(0.01, deadline - now())) == 0:
                return matched, "eof", others
        except asyncio.TimeoutError:
            break
        for opcode, payload in ws.messages():
            if opcode == 0x8:
                return matched, close_text(payload, CLOSE_REASONS, ws.behaviour), others
            if opcode == 0x9:
                await ws.send(client_frame(0xA, payload, rng))
                continue
            kind = predicate(opcode, payload)
            if kind is True:
                matched += 1
            elif kind:
                others[kind] += 1
    return matched, None, others


async def garbage_session(h, kind, rng):
    counters = h.counters["garbage"]
    endpoint = "/ws-strict" if rng.random() < 0.2 else "/ws"
    if kind == "http_garbage":
        try:
            sock = await h.open_socket("garbage")
        except asyncio.CancelledError:
            raise
        except Exception:
            return None
        ws = WS(h, sock, "garbage")
        try:
            await ws.send(b"\x00\xff" + rng.randbytes(rng.randint(16, 4096)))
            deadline = now() + 12.0   # longer than the gateway's handshake timeout (10 s)
            while now() < deadline:
                try:
                    if await ws.recv(65536, timeout=max(0.01, deadline - now())) == 0:
                        break
                except asyncio.TimeoutError:
                    return "timeout"
            match = re.match(rb"HTTP/1\.[01] (\d+)", bytes(ws.buf))
            return "http_%s" % match.group(1).decode() if match else ("eof" if not ws.buf else "eof_after_non_http")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return error_name(error)
        finally:
            ws.close()

    ws = await h.connect_ws("garbage", endpoint, rng, deflate=False)
    if ws is None:
        return None
    try:
        if kind == "frame_garbage":
            await ws.send(rng.randbytes(rng.randint(64, 4096)))
            return await read_until_close(ws, 5.0)
        if kind == "unmasked":
            await ws.send(client_frame(0x1, b'{"type":"ping"}', rng, masked=False))
            return await read_until_close(ws, 5.0)
        if kind == "bad_opcode":
            await ws.send(client_frame(rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]), b"x", rng))
            return await read_until_close(ws, 5.0)
        if kind == "rsv_bits":
            await ws.send(client_frame(0x1, b'{"type":"ping"}', rng, rsv=rng.choice([0x20, 0x10])))
            return await read_until_close(ws, 5.0)
        if kind == "bad_close_code":
            await ws.send(client_frame(0x8, struct.pack("!H", rng.choice([0, 999, 1004, 1005, 1006, 1015, 2000, 5000])), rng))
            return await read_until_close(ws, 5.0)
        if kind == "bad_utf8":
            payload = rng.choice([b"\xff\xfe\xfd", b'{"type":"\xc3\x28"}', b'{"type":"ping","x":"\xed\xa0\x80"}'])
            await ws.send(client_frame(0x1, payload, rng))
            return await read_until_close(ws, 5.0)
        if kind == "oversized_frame":
            # The header claims more than max_message_size; only the start of the payload
            # follows (the server must refuse at the header, not buffer the rest).
            length = rng.randint(MAX_MESSAGE_SIZE + 1, 4 * 1024 * 1024)
            key = rng.randbytes(4)
            header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", length) + key
            await ws.send(header + mask_bytes(rng.randbytes(1024), key))
            return await read_until_close(ws, 5.0)
        if kind == "oversized_fragmented":
            fragment = 16 * 1024
            count = MAX_MESSAGE_SIZE // fragment + 2
            frames = [client_frame(0x1 if i == 0 else 0x0, b"a" * fragment, rng, fin=(i == count - 1)) for i in range(count)]
            try:
                await ws.send(b"".join(frames))
            except (ConnectionResetError, BrokenPipeError):
                pass
            return await read_until_close(ws, 5.0)
        if kind == "bad_json":
            bad = [b"{", b"[]", b"42", b'"text"', b'{"type":5}', b'{"data":"soak:w0"}', b'{"type":"subscribe"}',
                   b'{"type":"subscribe","data":"bad topic"}', b'{"type":"nope"}', b'{"type":"unsubscribe","data":"never:subscribed"}']
            chosen = [rng.choice(bad) for _ in range(rng.randint(5, 20))]
            await ws.send(b"".join(client_frame(0x1, p, rng) for p in chosen) + text_frame({"type": "ping"}, rng))
            errors = [0]
            pong = [False]

            def predicate(opcode, payload):
                try:
                    message = json.loads(payload)
                except ValueError:
                    return "not_json"
                if message.get("type") == "error":
                    errors[0] += 1
                    return "error"
                if message.get("type") == "pong":
                    pong[0] = True
                    return True
                return "other"

            matched, closed, _ = await count_replies(ws, rng, 1, 10.0, predicate)
            if closed:
                return closed
            if matched and errors[0] == len(chosen):
                await close_handshake(h, ws, rng, counters)
                return "ok"
            return "errors_%d_of_%d_pong_%s" % (errors[0], len(chosen), pong[0])
        if kind == "ping_burst":
            count = 3000
            frame = text_frame({"type": "ping"}, rng)
            sender = asyncio.ensure_future(ws.send(frame * count, timeout=20.0))
            matched, closed, others = await count_replies(
                ws, rng, count, 20.0, lambda op, p: True if b'"pong"' in p else "other")
            await asyncio.gather(sender, return_exceptions=True)
            if closed:
                return closed + "_after_%d_pongs" % matched
            if matched == count:
                await close_handshake(h, ws, rng, counters)
                return "ok"
            return "pongs_%d_of_%d" % (matched, count)
        if kind == "subscribe_flood":
            count = 2000
            data = b"".join(text_frame({"type": "subscribe", "data": "flood:%d" % i}, rng) for i in range(count))
            sender = asyncio.ensure_future(ws.send(data, timeout=20.0))

            def predicate(opcode, payload):
                if b'"subscribed"' in payload:
                    return True
                if b"too_many_subscriptions" in payload:
                    return "refused"
                return "other"

            subscribed, closed, others = 0, None, collections.Counter()
            deadline = now() + 20.0
            while subscribed + others["refused"] < count and now() < deadline and not closed:
                got, closed, more = await count_replies(ws, rng, count, min(2.0, deadline - now()), predicate)
                subscribed += got
                others.update(more)
                if not got and not more:
                    break
            await asyncio.gather(sender, return_exceptions=True)
            if closed:
                return "%s_after_%d_subscribed_%d_refused" % (closed, subscribed, others["refused"])
            if subscribed == MAX_SUBSCRIPTIONS and others["refused"] == count - MAX_SUBSCRIPTIONS:
                await close_handshake(h, ws, rng, counters)
                return "ok"
            return "subscribed_%d_refused_%d" % (subscribed, others["refused"])
        if kind == "ping_flood":
            count = 2000
            payloads = [rng.randbytes(rng.randint(0, 125)) for _ in range(count)]
            expected = collections.Counter(payloads)
            seen = collections.Counter()
            sender = asyncio.ensure_future(ws.send(b"".join(client_frame(0x9, p, rng) for p in payloads), timeout=20.0))
            deadline = now() + 20.0
            closed = None
            while sum(seen.values()) < count and now() < deadline:
                try:
                    if await ws.recv(65536, timeout=max(0.01, deadline - now())) == 0:
                        closed = "eof"
                        break
                except asyncio.TimeoutError:
                    break
                for opcode, payload in ws.messages():
                    if opcode == 0xA:
                        seen[payload] += 1
                    elif opcode == 0x8:
                        closed = close_text(payload, CLOSE_REASONS, ws.behaviour)
                if closed:
                    break
            await asyncio.gather(sender, return_exceptions=True)
            if closed:
                return closed + "_after_%d_pongs" % sum(seen.values())
            if seen == expected:
                await close_handshake(h, ws, rng, counters)
                return "ok"
            return "pongs_%d_of_%d%s" % (sum(seen.values()), count, "" if not (seen - expected) else "_mismatched")
        if kind == "ping_burst_unread":
            data = text_frame({"type": "ping"}, rng) * 3000 + b"".join(client_frame(0x9, b"p", rng) for _ in range(2000))
            try:
                await ws.send(data, timeout=10.0)
            except (asyncio.TimeoutError, ConnectionResetError, BrokenPipeError):
                pass
            await asyncio.sleep(5.0)
            pongs = 0
            deadline = now() + 10.0
            while now() < deadline:
                try:
                    if await ws.recv(65536, timeout=max(0.01, min(2.0, deadline - now()))) == 0:
                        return "eof_after_%d_pongs" % pongs
                except asyncio.TimeoutError:
                    break
                for opcode, payload in ws.messages():
                    if opcode == 0xA or (opcode == 0x1 and b'"pong"' in payload):
                        pongs += 1
                    elif opcode == 0x8:
                        return close_text(payload, CLOSE_REASONS, ws.behaviour) + "_after_%d_pongs" % pongs
            await close_handshake(h, ws, rng, counters)
            return "ok_after_%d_pongs" % pongs
        return "unknown_kind"
    finally:
        ws.close()


SLOT_FUNCTIONS = {
    "readers": reader_slot, "slow": slow_slot, "silent": silent_slot, "halfclose": halfclose_slot,
    "reset": reset_slot, "reconnect": reconnect_slot, "garbage": garbage_slot, "idle": idle_slot,
}


# ---------------------------------------------------------------------------------------
# The run.


async def run_slot(h, behaviour, index, rng, delay):
    try:
        await h.nap(delay, h.stop_clients)
        if h.stop_clients.is_set():
            return
        await SLOT_FUNCTIONS[behaviour](h, index, rng)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        h.harness_errors["%s:%s" % (behaviour, error_name(error))] += 1
        if sum(h.harness_errors.values()) < 5:
            log("harness error in %s slot: %r" % (behaviour, error))


async def drain_readers(h):
    """Waits (bounded) until every live reader has the last event of its topics."""
    finals = {name: log_.last_ok() for name, log_ in h.topics.items()}
    deadline = now() + h.args.drain
    behind = None
    while now() < deadline and h.death is None:
        behind = 0
        for session in h.reader_sessions:
            if session.closed:
                continue
            for topic, track in session.tracks.items():
                if finals[topic] >= track.s0 and track.last < finals[topic]:
                    behind += 1
        if not behind:
            return now() - (deadline - h.args.drain), 0
        await asyncio.sleep(0.2)
    return h.args.drain, behind


async def main_run(h):
    args = h.args
    h.loop = asyncio.get_running_loop()
    h.make_events()
    h.tmp = tempfile.mkdtemp(prefix="switchboard-soak-")
    h.redis_port = free_port()
    start_redis(h)
    if not await wait_redis(h, 10.0):
        raise SetupError("redis-server did not start on port %d" % h.redis_port)
    h.redis_up = True
    log("redis-server on 127.0.0.1:%d" % h.redis_port)

    config = os.path.join(h.tmp, "soak.yaml")
    with open(args.config) as template:
        text = template.read()
    if args.endpoint_option:
        # `--endpoint-option KEY=VALUE`: one more key in every endpoint of the copy.
        extra = "".join("    %s: %s\n" % tuple(option.split("=", 1)) for option in args.endpoint_option)
        text = re.sub(r"(?m)^(  - path: .*\n)", lambda match: match.group(1) + extra, text)
    with open(config, "w") as output:
        output.write(text)
    code, output = check_config(h, config)
    if code != 0:
        raise SetupError("switchboard check failed: %s" % output)
    log("config ok: %s" % output.splitlines()[-1] if output else "config ok")

    if not await start_gateway(h, config):
        raise SetupError("the gateway did not start: %s" % " | ".join(gateway_log_tail(h, 15)))
    log("gateway pid %d on %s:%d" % (h.gateway_pid, *h.address))
    background = [asyncio.ensure_future(monitor_process(h)), asyncio.ensure_future(monitor_loop_lag(h))]
    waited = await wait_ready(h, args.ready_timeout)
    if waited is None:
        raise SetupError("the gateway never became ready: %s" % " | ".join(gateway_log_tail(h, 15)))
    log("gateway ready after %.1fs" % waited)
    background += [asyncio.ensure_future(f(h)) for f in (monitor_resources, monitor_healthz, monitor_readyz, monitor_stats,
                                                         monitor_listen_queue)]

    # Publishers run from the warm-up on; each topic has exactly one publisher.
    payloads = Payloads(random.Random(h.rng.getrandbits(64)))
    rate = args.rate
    publishers = [
        asyncio.ensure_future(single_publisher(h, SINGLE_TOPICS[:4], rate * 0.2, random.Random(h.rng.getrandbits(64)), payloads)),
        asyncio.ensure_future(single_publisher(h, SINGLE_TOPICS[4:], rate * 0.2, random.Random(h.rng.getrandbits(64)), payloads)),
        asyncio.ensure_future(batch_publisher(h, max(0.1, rate * 0.35 / 21), random.Random(h.rng.getrandbits(64)), payloads)),
        asyncio.ensure_future(redis_publisher(h, rate * 0.25, random.Random(h.rng.getrandbits(64)), payloads)),
    ]
    if args.big_rate > 0:
        publishers.append(asyncio.ensure_future(big_publisher(h, args.big_rate, random.Random(h.rng.getrandbits(64)), payloads)))
    await h.nap(args.warmup, h.dead_event)
    rss_start, fds_start, cpu_start = read_proc_status(h.gateway_pid)
    conns_start = await gateway_connections(h)
    log("warm-up done: RSS %.1f MiB, %s open files" % ((rss_start or 0) / 1024, fds_start))

    # Clients.
    netstat_start = netstat_counters()
    h.t_clients = now()
    slots = []
    plan = collections.Counter()
    ramp = min(args.ramp, args.duration / 4)
    for behaviour in BEHAVIOURS:
        if behaviour not in args.selected:
            continue
        count = int(round(args.connections * args.mix.get(behaviour, 0.0)))
        plan[behaviour] = count
        for index in range(count):
            rng = random.Random(h.rng.getrandbits(64))
            delay = rng.uniform(0, ramp) if behaviour != "readers" else rng.uniform(0, ramp / 2)
            slots.append(asyncio.ensure_future(run_slot(h, behaviour, index, rng, delay)))
    log("clients: %s (%d slots) for %ds" % (dict(plan), len(slots), args.duration))
    chaos_task = asyncio.ensure_future(chaos(h, random.Random(h.rng.getrandbits(64))))

    next_report = now() + 10
    while now() - h.t_clients < args.duration and h.death is None:
        await h.nap(min(1.0, args.duration - (now() - h.t_clients)), h.dead_event)
        if now() >= next_report:
            next_report = now() + 10
            rss, fds, _ = read_proc_status(h.gateway_pid)
            log("t+%.0fs: sockets %d, gateway RSS %.1f MiB, fds %s, webhook ok %d, redis ok %d, readers %d live" % (
                now() - h.t_clients, len(h.sockets), (rss or 0) / 1024, fds, h.pub["webhook"]["events_ok"],
                h.pub["redis"]["events_ok"], sum(1 for s in h.reader_sessions if not s.closed)))

    # Load ends: hostile clients stop; chaos finishes (Redis back up); publishing stops.
    h.t_load_end = now()
    h.stop_clients.set()
    if h.death is None:
        try:
            await asyncio.wait_for(asyncio.shield(chaos_task), args.ready_timeout + args.redis_down + 15)
        except asyncio.TimeoutError:
            pass
    chaos_task.cancel()
    h.stop_publishing.set()
    netstat_end = netstat_counters()
    await asyncio.wait(publishers, timeout=args.publish_timeout + 5)
    for task in publishers:
        task.cancel()
    log("publishing stopped; draining readers (at most %ds)" % args.drain)
    drain_s, behind = await drain_readers(h)
    h.stop_readers.set()
    done, pending = await asyncio.wait(slots, timeout=20)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    leftovers = len(h.sockets)
    for sock in list(h.sockets):
        h.close_socket(sock)
    log("clients stopped (%d slots had to be cancelled, %d sockets closed by force)" % (len(pending), leftovers))

    # Settle: the gateway should forget every client.
    conns_end = None
    rss_end = fds_end = cpu_end = None
    settle_started = now()
    if h.death is None:
        deadline = now() + args.settle_connections
        while now() < deadline and h.death is None:
            conns_end = await gateway_connections(h)
            if conns_end == 0:
                break
            await asyncio.sleep(0.5)
        await h.nap(args.settle, h.dead_event)
        rss_end, fds_end, cpu_end = read_proc_status(h.gateway_pid)
        conns_end = await gateway_connections(h)
    stats_end = await gateway_stats(h) if h.death is None else None

    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)

    # Graceful stop: SIGTERM must end the gateway with status 0.
    shutdown = None
    if h.death is None:
        h.gateway.send_signal(signal.SIGTERM)
        started = now()
        try:
            code = await asyncio.wait_for(h.loop.run_in_executor(None, h.gateway.wait), 15)
            shutdown = {"returncode": code, "seconds": round(now() - started, 2)}
        except asyncio.TimeoutError:
            shutdown = {"returncode": None, "seconds": None, "error": "did not exit within 15 s of SIGTERM"}
            h.gateway.kill()

    return build_result(h, {
        "rss_start": rss_start, "fds_start": fds_start, "cpu_start": cpu_start, "conns_start": conns_start,
        "rss_end": rss_end, "fds_end": fds_end, "cpu_end": cpu_end, "conns_end": conns_end,
        "stats_end": stats_end, "shutdown": shutdown, "plan": plan, "drain_s": drain_s, "behind": behind,
        "cancelled_slots": len(pending), "forced_sockets": leftovers,
        "netstat": {k: netstat_end.get(k, 0) - v for k, v in netstat_start.items()},
    })


async def gateway_stats(h):
    client = HTTPClient(h)
    try:
        status, body = await client.request("GET", "/stats", timeout=5.0)
        return json.loads(body) if status == 200 else None
    except asyncio.CancelledError:
        raise
    except Exception:
        return None
    finally:
        client.close()


async def gateway_connections(h):
    stats = await gateway_stats(h)
    if stats is None:
        return None
    return stats.get("connections", {}).get("total")


class SetupError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# Results.


def reader_results(h):
    for log_ in h.topics.values():
        log_.finalize()
    death_at = (T0 + h.death["at_s"]) if h.death else None
    totals = collections.Counter()
    per_topic = collections.defaultdict(collections.Counter)
    worst = []
    anomalies = collections.Counter()
    ends = collections.Counter()
    for session in h.reader_sessions:
        if death_at is not None and (session.end or "").startswith("unexpected") and \
                (session.t_end is None or session.t_end >= death_at - 1.0):
            session.end = "unexpected:gateway_died"
        ends[(session.end or "none").split(":")[0] if not (session.end or "").startswith("unexpected") else session.end] += 1
        anomalies.update(session.anomalies)
        if not session.tracks:
            totals["sessions_without_subscription"] += 1
            continue
        totals["sessions"] += 1
        cut = session.t_cut
        if death_at is not None:
            cut = min(cut if cut is not None else math.inf, death_at - h.args.seam)
        session_lost = 0
        session_expected = 0
        lost_by_topic = {}
        for topic, track in session.tracks.items():
            log_ = h.topics[topic]
            last = log_.next_seq - 1 if cut is None else log_.last_acked_before(cut)
            if session.end == "churn":
                # The tail of a session we ended ourselves races with our unsubscribe (a
                # Redis event is acknowledged by Redis, not by the gateway): count up to
                # the last event received; gaps before it still count.
                last = min(last, track.last)
            expected = log_.ok_between(track.s0, last)
            received = 0
            for first, final in track.ranges:
                received += log_.ok_between(max(first, track.s0), min(final, last))
            received += sum(1 for seq in track.late if track.s0 <= seq <= last and log_.status[seq] == OK)
            lost = max(0, expected - received)
            stray = track.received - track.duplicates
            for key, value in (("expected", expected), ("received", received), ("lost", lost),
                               ("out_of_order", track.out_of_order), ("duplicates", track.duplicates),
                               ("delivered_total", stray)):
                totals[key] += value
                per_topic[topic][key] += value
            session_lost += lost
            session_expected += expected
            if lost:
                lost_by_topic[topic] = {"s0": track.s0, "last_expected": last, "lost": lost,
                                        "ranges": track.ranges[:5] + (["..."] if len(track.ranges) > 5 else []),
                                        "missing": missing_sample(log_, track, last) if len(worst) < 20 else None}
        if session_lost:
            worst.append({"reader": session.index, "endpoint": session.endpoint, "patterns": session.patterns,
                          "end": session.end, "expected": session_expected, "lost": session_lost,
                          "lost_by_topic": lost_by_topic})
    worst.sort(key=lambda item: -item["lost"])
    return totals, per_topic, worst[:10], anomalies, ends


def missing_sample(log_, track, last, limit=12):
    """The first missing sequence numbers of a track: [seq, acknowledged at (s), source]."""
    received = set(track.late)
    sample = []
    index = 0
    ranges = track.ranges
    for seq in range(max(track.s0, 0), last + 1):
        if log_.status[seq] != OK:
            continue
        while index < len(ranges) and ranges[index][1] < seq:
            index += 1
        if index < len(ranges) and ranges[index][0] <= seq <= ranges[index][1] or seq in received:
            continue
        sample.append([seq, round(log_.t_ack[seq] - T0, 3)])
        if len(sample) >= limit:
            break
    return sample


def build_result(h, measured):
    args = h.args
    checks = {}
    totals, per_topic, worst, anomalies, ends = reader_results(h)
    alive = h.death is None

    def check(name, ok, **detail):
        checks[name] = dict(ok=bool(ok), **detail)

    check("gateway_alive", alive, exit=h.death)
    if alive:
        shutdown = measured["shutdown"] or {}
        check("clean_shutdown", shutdown.get("returncode") == 0, **shutdown)

    unexpected = sum(n for end, n in ends.items() if end.startswith("unexpected") and end != "unexpected:gateway_died")
    check("readers_lost_nothing", totals["lost"] == 0 and totals["expected"] > 0,
          expected=totals["expected"], received=totals["received"], lost=totals["lost"])
    check("readers_in_order", totals["out_of_order"] == 0 and totals["duplicates"] == 0,
          out_of_order=totals["out_of_order"], duplicates=totals["duplicates"])
    check("readers_not_disconnected", unexpected == 0, unexpected_ends=unexpected)
    check("payloads_intact", anomalies["corrupt_payload"] == 0 and anomalies["malformed_event"] == 0
          and anomalies["bad_json_from_server"] == 0,
          corrupt=anomalies["corrupt_payload"], malformed=anomalies["malformed_event"])
    check("no_unsolicited_events", anomalies["event_before_subscribed"] == 0 and anomalies["event_after_unsubscribed"] == 0,
          before_subscribed=anomalies["event_before_subscribed"], after_unsubscribed=anomalies["event_after_unsubscribed"])

    # /readyz while Redis was down and after.
    # What happened up to a second before the gateway died is judged; the rest is not.
    death_at = (T0 + h.death["at_s"] - 1.0) if h.death else math.inf
    readyz_samples = [s for s in h.readyz_samples if s[1] < death_at]
    lies_down, lies_up, outages = 0, 0, []
    for index, (killed, restarted) in enumerate(h.outages):
        record = h.chaos[index] if index < len(h.chaos) else {}
        end = restarted if restarted is not None else (h.t_load_end or now())
        if end > death_at or (record.get("ready_again_after_s") is None and h.death):
            continue   # the gateway died before this outage was over
        down_samples = [s for s in readyz_samples if killed + args.readyz_detect <= s[0] and s[1] <= end]
        ready_while_down = [round(s[0] - T0, 2) for s in down_samples if s[2] == 200]
        lies_down += len(ready_while_down)
        outages.append(dict(record, samples_while_down=len(down_samples), ready_while_down_at_s=ready_while_down[:10]))
    windows = []
    for index, (killed, restarted) in enumerate(h.outages):
        record = h.chaos[index] if index < len(h.chaos) else {}
        recovered = (restarted + record["ready_again_after_s"]) if restarted and record.get("ready_again_after_s") is not None \
            else math.inf
        windows.append((killed, recovered + 0.5))
    for started, ended, status, state in readyz_samples:
        if status == 503 and h.t_clients and started > h.t_clients and not any(a - 0.5 <= started <= b or a <= ended <= b for a, b in windows):
            lies_up += 1
    detected = all(o.get("not_ready_after_s") is not None and o["not_ready_after_s"] <= args.readyz_detect + 1.0 for o in outages)
    recovered = all(o.get("ready_again_after_s") is not None and o["ready_again_after_s"] <= args.ready_timeout for o in outages)
    if args.redis_kills > 0:
        check("readyz_truthful", len(outages) > 0 and lies_down == 0 and detected and lies_up == 0,
              outages=len(outages), ready_answers_while_redis_down=lies_down, not_ready_answers_while_up=lies_up,
              detected_within_s=args.readyz_detect + 1.0)
        check("readyz_recovered", len(outages) > 0 and recovered, within_s=args.ready_timeout,
              after_s=[o.get("ready_again_after_s") for o in outages])
        check("webhook_flowed_during_outage", h.outage_webhook_deliveries > 0 or "readers" not in args.selected,
              deliveries=h.outage_webhook_deliveries)

    health_fail = [s for s in h.healthz_samples if s[2] != 200 and s[0] < death_at]
    check("healthz_answered", h.healthz_samples and not health_fail, samples=len(h.healthz_samples),
          failures=len(health_fail), slowest_ms=round(max((s[1] for s in h.healthz_samples), default=0) * 1000, 1))

    mib = lambda kib: round(kib / 1024, 1) if kib is not None else None
    rss = {"start": mib(measured["rss_start"]), "peak": mib(h.rss_peak), "end": mib(measured["rss_end"])}
    if alive:
        check("rss_end_within_bound", measured["rss_end"] is not None and measured["rss_start"] is not None
              and measured["rss_end"] <= measured["rss_start"] + args.rss_growth_mib * 1024,
              start_mib=rss["start"], end_mib=rss["end"], bound_mib=round(rss["start"] + args.rss_growth_mib, 1) if rss["start"] else None)
    check("rss_peak_within_bound", h.rss_peak <= args.rss_peak_mib * 1024, peak_mib=rss["peak"], bound_mib=args.rss_peak_mib)
    if alive:
        check("connections_released", measured["conns_end"] == 0, gateway_connections_end=measured["conns_end"])
        fds_start, fds_end = measured["fds_start"], measured["fds_end"]
        check("open_files_released", fds_start is not None and fds_end is not None and fds_end <= fds_start + 16,
              start=fds_start, peak=h.fds_peak, end=fds_end)

    # Close codes and garbage outcomes.
    garbage = {kind: dict(outcomes) for kind, outcomes in sorted(h.garbage.items())}
    wrong = {}
    for kind, outcomes in h.garbage.items():
        expected = GARBAGE_KINDS[kind][1]
        if expected is None:
            continue
        bad = {o: n for o, n in outcomes.items() if not outcome_matches(o, expected) and o != "gateway_died"}
        if bad:
            wrong[kind] = bad
    if "garbage" in args.selected:
        check("garbage_answers", not wrong, unexpected=wrong)
    halfclose = h.counters["halfclose"]
    if "halfclose" in args.selected and alive:
        stuck = sum(n for k, n in halfclose.items() if k.startswith("still_open"))
        check("halfclose_closed_by_server", stuck == 0, stuck=stuck, closed=halfclose["server_closed"])
    connect_attempts = sum(c["attempted"] for c in h.counters.values())
    connect_failures = sum(n for c in h.counters.values() for k, n in c.items()
                           if k.startswith("connect_error:") or k.startswith("upgrade_error:") or k.startswith("upgrade_status:"))
    if alive:
        check("connects_succeeded", connect_attempts and connect_failures * 100.0 <= args.max_connect_failure_pct * connect_attempts,
              attempts=connect_attempts, failures=connect_failures, max_pct=args.max_connect_failure_pct)
    webhook = h.pub["webhook"]
    failed_requests = sum(n for k, n in webhook.items() if k.startswith("status:") or k.startswith("request_error:"))
    if alive:
        check("publish_accepted", failed_requests == 0 and webhook["events_ok"] > 0, failed_requests=failed_requests)
    check("harness_socket_budget", h.max_open_sockets < 15000, max_open_sockets=h.max_open_sockets)

    failed = sorted(name for name, item in checks.items() if not item["ok"])
    if h.death:
        verdict = "the gateway DIED %.1f s into the run (%s); judged up to then: %s" % (
            h.death["at_s"], h.death["signal"] or "exit status %s" % h.death["returncode"],
            ", ".join(n for n in failed if n != "gateway_alive") or "nothing else failed")
    elif failed:
        verdict = "FAILED: " + ", ".join(failed)
    else:
        verdict = "every check passed"
    latency = lambda values: {"p50_ms": round((percentile(values, 0.5) or 0) * 1000, 1),
                              "p99_ms": round((percentile(values, 0.99) or 0) * 1000, 1),
                              "max_ms": round(max(values, default=0) * 1000, 1)}
    behaviours = {}
    for name, counter in sorted(h.counters.items()):
        behaviours[name] = dict(sorted(counter.items()))
    stats_end = measured["stats_end"] or {}
    timeline = h.rss_samples
    if len(timeline) > 60:
        step = len(timeline) / 60.0
        timeline = [timeline[int(i * step)] for i in range(60)] + [timeline[-1]]
    result = {
        "harness": "switchboard-soak",
        "ok": not failed,
        "verdict": verdict,
        "failed_checks": failed,
        "seed": args.seed,
        "binary": args.binary,
        "duration_s": args.duration,
        "short": args.short,
        "connections": args.connections,
        "behaviours": sorted(args.selected),
        "slots": dict(measured["plan"]),
        "large_kb": list(args.large_kb),
        "checks": checks,
        "gateway": {
            "alive": alive,
            "died": h.death,
            "log_tail": gateway_log_tail(h, 30) if not alive else gateway_log_tail(h, 5),
            "shutdown": measured["shutdown"],
            "cpu_s": round(measured["cpu_end"] - measured["cpu_start"], 1) if measured["cpu_end"] is not None and measured["cpu_start"] is not None else None,
            "stats_end": {k: stats_end.get(k) for k in ("events_in", "deliveries_out", "dropped", "encodes", "frame_builds",
                                                        "flush_rounds", "connection_writes", "uptime_seconds")} if stats_end else None,
            "connections_end": measured["conns_end"],
            "closed_for_cause": {path: v.get("closed_for_cause") for path, v in
                                 (stats_end.get("connections", {}).get("per_endpoint", {}) or {}).items()} if stats_end else None,
        },
        "readers": {
            "sessions": totals["sessions"], "ends": dict(ends),
            "expected": totals["expected"], "received": totals["received"], "lost": totals["lost"],
            "out_of_order": totals["out_of_order"], "duplicates": totals["duplicates"],
            "delivered_total": totals["delivered_total"],
            "by_topic": {t: dict(c) for t, c in sorted(per_topic.items())},
            "worst": worst, "anomalies": dict(anomalies),
            "drain_s": round(measured["drain_s"], 2), "behind_after_drain": measured["behind"],
            "stats_events": sum(s.stats_events for s in h.reader_sessions),
            "app_pings": sum(s.pings_sent for s in h.reader_sessions), "app_pongs": sum(s.pongs for s in h.reader_sessions),
        },
        "publish": {
            "webhook": dict(webhook), "redis": dict(h.pub["redis"]),
            "webhook_latency": latency(h.pub_latency["webhook"]), "redis_latency": latency(h.pub_latency["redis"]),
            "refusals": dict(h.pub_status),
            "per_topic_ok": {t: log_.prefix[-1] for t, log_ in sorted(h.topics.items())},
        },
        "redis_chaos": outages,
        "readyz": {"samples": len(h.readyz_samples),
                   "not_ready_samples": sum(1 for s in h.readyz_samples if s[2] == 503),
                   "failed_samples": sum(1 for s in h.readyz_samples if s[2] not in (200, 503))},
        "healthz": {"samples": len(h.healthz_samples), "failures": len(health_fail),
                    "p99_ms": round((percentile([s[1] for s in h.healthz_samples], 0.99) or 0) * 1000, 1)},
        "rss_mib": rss,
        "open_files": {"start": measured["fds_start"], "peak": h.fds_peak, "end": measured["fds_end"]},
        "timeline": [{"t": t, "rss_mib": r, "fds": f, "client_sockets": s} for t, r, f, s in timeline],
        "connections_per_behaviour": behaviours,
        "garbage": garbage,
        "garbage_examples": {k: sorted(v) for k, v in sorted(h.garbage_examples.items())},
        "close_reasons": dict(sorted(CLOSE_REASONS.items())),
        "upgrade_latency": latency(h.upgrade_latency),
        "accept_queue": {"backlog": h.listen_backlog, "max_queued": h.listen_queue_max,
                         "full_samples": h.listen_queue_full_samples,
                         "system_listen_overflows": measured["netstat"].get("ListenOverflows"),
                         "system_listen_drops": measured["netstat"].get("ListenDrops")},
        "harness_stats": {
            "max_open_sockets": h.max_open_sockets, "loop_lag_max_ms": round(h.loop_lag_max * 1000, 1),
            "errors": dict(h.harness_errors), "cancelled_slots": measured["cancelled_slots"],
            "forced_socket_closes": measured["forced_sockets"],
            "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 1),
        },
        "notes": h.notes,
    }
    return result


# ---------------------------------------------------------------------------------------
# Command line.


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Soak and chaos run against a Switchboard binary; prints one JSON line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    default_binary = ROOT / ".build" / "release" / "switchboard"
    if not default_binary.exists():
        default_binary = ROOT / ".build" / "debug" / "switchboard"
    parser.add_argument("--binary", default=str(default_binary), help="the switchboard executable")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="gateway configuration (uses ${SOAK_*})")
    parser.add_argument("--duration", type=float, default=None, help="seconds of load (default 90; 60 with --short)")
    parser.add_argument("--connections", type=int, default=None, help="client slots (default 2000; 1500 with --short)")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: from the clock)")
    parser.add_argument("--out", help="also append the JSON line to this file")
    parser.add_argument("--short", action="store_true", help="CI size: 60 s of load, 1,500 connections, under 2 minutes in all")
    parser.add_argument("--behaviours", default="all",
                        help="comma list of behaviours (%s) and garbage kinds (garbage.KIND); "
                             "'all' = everything; '-NAME' removes one, e.g. all,-silent,-garbage.ping_burst"
                             % ",".join(BEHAVIOURS))
    parser.add_argument("--mix", default="", help="override shares of --connections, e.g. readers=0.2,idle=0.4")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second over webhook (singles, batches) and Redis")
    parser.add_argument("--big-rate", type=float, default=1.0, help="large webhook events per second (0 = none)")
    parser.add_argument("--large-kb", default="20-70", help="size range of the large events in KB (KiB)")
    parser.add_argument("--redis-kills", type=int, default=2, help="times redis-server is killed (SIGKILL) and restarted")
    parser.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis stays down each time")
    parser.add_argument("--ready-timeout", type=float, default=30.0, help="bound for /readyz to say ready after Redis is back")
    parser.add_argument("--readyz-detect", type=float, default=3.0,
                        help="seconds after the kill from which /readyz must answer 503")
    parser.add_argument("--rss-growth-mib", type=float, default=64.0, help="end RSS must be within start + this")
    parser.add_argument("--rss-peak-mib", type=float, default=1024.0, help="peak RSS bound")
    parser.add_argument("--max-connect-failure-pct", type=float, default=1.0, help="tolerated connect/upgrade failures")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of publishing before RSS start (5; 3 with --short)")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which client slots start")
    parser.add_argument("--drain", type=float, default=10.0, help="longest wait for readers after publishing stops")
    parser.add_argument("--settle", type=float, default=None, help="seconds after the clients left before the end RSS (10; 5 with --short)")
    parser.add_argument("--settle-connections", type=float, default=15.0, help="longest wait for /stats to show 0 connections")
    parser.add_argument("--seam", type=float, default=1.0,
                        help="events acknowledged this close to a reader's unsubscribe/unexpected end are not expected")
    parser.add_argument("--reader-stall", type=int, default=30, help="seconds without data a reader reports as a stall")
    parser.add_argument("--halfclose-timeout", type=int, default=10, help="the server must close a half-closed client within this")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="timeout of a TCP connect and of an upgrade")
    parser.add_argument("--probe-timeout", type=float, default=5.0, help="timeout of /healthz, /readyz, /stats requests")
    parser.add_argument("--publish-timeout", type=float, default=10.0, help="timeout of one publish request")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds the gateway gets to log its address")
    parser.add_argument("--max-sockets", type=int, default=14000, help="client sockets this process may hold (< 15,000)")
    parser.add_argument("--log-level", default="info", help="the gateway's --log-level")
    parser.add_argument("--endpoint-option", action="append", default=[], metavar="KEY=VALUE",
                        help="add a key to every endpoint of the config copy, e.g. max_message_rate=0 (repeatable)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (logs, config)")
    args = parser.parse_args(argv)

    if args.duration is None:
        args.duration = 60.0 if args.short else 90.0
    if args.connections is None:
        args.connections = 1500 if args.short else 2000
    if args.warmup is None:
        args.warmup = 3.0 if args.short else 5.0
    if args.settle is None:
        args.settle = 5.0 if args.short else 10.0
    if args.short:
        args.drain = min(args.drain, 8.0)
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    args.max_sockets = min(args.max_sockets, 14500)
    low, _, high = args.large_kb.partition("-")
    args.large_kb = (float(low), float(high or low))

    everything = set(BEHAVIOURS) | {"garbage." + k for k in GARBAGE_KINDS}
    selected = set()
    for item in [i.strip() for i in args.behaviours.split(",") if i.strip()]:
        remove = item.startswith("-")
        name = item.lstrip("-+")
        if name == "all":
            names = everything
        elif name == "garbage":
            names = {"garbage"} | {"garbage." + k for k in GARBAGE_KINDS}
        elif name in everything:
            names = {name}
        else:
            parser.error("unknown behaviour '%s' (known: %s)" % (name, ", ".join(sorted(everything))))
        selected = selected - names if remove else selected | names
    if "garbage" in selected and not any(n.startswith("garbage.") for n in selected):
        selected |= {"garbage." + k for k in GARBAGE_KINDS}
    if any(n.startswith("garbage.") for n in selected):
        selected.add("garbage")
    args.selected = selected
    mix = dict(DEFAULT_MIX)
    for item in [i.strip() for i in args.mix.split(",") if i.strip()]:
        name, _, share = item.partition("=")
        if name not in BEHAVIOURS:
            parser.error("unknown behaviour in --mix: %s" % name)
        mix[name] = float(share)
    args.mix = mix
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log("seed %d (rerun with --seed %d)" % (args.seed, args.seed))
    errors = []
    if not os.access(args.binary, os.X_OK):
        errors.append("no executable at --binary %s" % args.binary)
    if not shutil.which("redis-server"):
        errors.append("redis-server is not on PATH")
    if not os.path.exists(args.config):
        errors.append("no config at %s" % args.config)
    if errors:
        emit({"harness": "switchboard-soak", "ok": False, "seed": args.seed, "error": "; ".join(errors)}, args)
        return 2

    budget = 120 + args.warmup + args.duration + args.drain + args.settle + args.settle_connections \
        + args.redis_kills * (args.ready_timeout + args.redis_down) + 60
    h = Harness(args)
    printed = threading.Event()

    def watchdog():
        if printed.wait(budget):
            return
        log("WATCHDOG: the run exceeded %.0f s; killing everything" % budget)
        CHILDREN.kill_all()
        if not printed.is_set():
            printed.set()
            emit({"harness": "switchboard-soak", "ok": False, "seed": args.seed, "error": "watchdog: run exceeded %.0f s" % budget}, args)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    status = 0
    result = None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main_run(h))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        result = loop.run_until_complete(task)
        status = 0 if result["ok"] else 1
    except asyncio.CancelledError:
        result = {"harness": "switchboard-soak", "ok": False, "seed": args.seed, "error": "interrupted"}
        status = 130
    except SetupError as error:
        result = {"harness": "switchboard-soak", "ok": False, "seed": args.seed, "error": str(error)}
        status = 2
    except Exception as error:
        import traceback
        traceback.print_exc()
        result = {"harness": "switchboard-soak", "ok": False, "seed": args.seed, "error": "harness failure: %r" % error}
        status = 2
    finally:
        for sock in list(h.sockets):
            h.close_socket(sock)
        CHILDREN.kill_all()
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=5))
            loop.run_until_complete(loop.shutdown_default_executor())
        except Exception:
            pass
        loop.close()
        if h.tmp and not args.keep_temp:
            shutil.rmtree(h.tmp, ignore_errors=True)
        elif h.tmp:
            log("kept %s" % h.tmp)
    if not printed.is_set():
        printed.set()
        if result is not None and status in (0, 1):
            log("%s: %s" % ("PASS" if status == 0 else "FAIL", result["verdict"]))
        emit(result, args)
    return status


def emit(result, args):
    line = json.dumps(result, separators=(",", ":"), default=str)
    print(line, flush=True)
    if getattr(args, "out", None):
        with open(args.out, "a") as output:
            output.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
