#!/usr/bin/env python3
"""Runs the load scenarios against Switchboard and Nchan side by side, in the same run,
and appends one JSON line per (scenario, server) to a results file.

    swift build -c release
    python3 Benchmarks/bench.py                      # every scenario, both servers
    python3 Benchmarks/bench.py a d --servers switchboard,nchan --repeat 3
    python3 Benchmarks/bench.py a --scale 0.1        # a tenth of the connections and events
    python3 Benchmarks/bench.py a f --servers switchboard,nchan,wsfloor   # and the WebSocket floor
    python3 Benchmarks/report.py Benchmarks/results/latest.jsonl   # → Markdown tables

Needs Debian's nginx and libnginx-mod-nchan for the peer. Everything listens on
127.0.0.1; the load generator spreads its connections over 127.0.0.2–127.0.0.250.
"""
import argparse
import collections
import datetime
import json
import math
import os
import pathlib
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
FLUSH_INTERVAL = None  # --flush-interval: Switchboard's flush_interval (the config's default otherwise)

# name: (description, load generator arguments, switchboard path, nchan path or None)
SCENARIOS = {
    "a": ("10,000 subscribers, one topic, 1,000 events/s of 200 B for 20 s",
          {"connections": 10000, "rate": 1000, "size": 200, "duration": 20}, "/bench", "/sub/bench_0"),
    "b": ("15,000 idle connections: RSS per connection",
          {"connections": 15000, "rate": 0, "duration": 5}, "/bench", "/sub/bench_0"),
    "b2": ("15,000 idle connections, each subscribed to two topics by message, default endpoint settings (heartbeat 30s, JSON and MessagePack offered): RSS per connection",
           {"connections": 15000, "rate": 0, "duration": 5, "subscribe_messages": True, "extra_subscribe": "bench:1"}, "/idle", None),
    "b3": ("(b2) with browser-sized upgrade requests (User-Agent, Origin, Accept-Language, a cookie: 600 B of headers): RSS per connection",
           {"connections": 15000, "rate": 0, "duration": 5, "subscribe_messages": True, "extra_subscribe": "bench:1", "browser_headers": 600}, "/idle", None),
    "c": ("burst of 100 events to 10,000 subscribers: time to drain",
          {"connections": 10000, "burst": 100, "size": 200}, "/bench", "/sub/bench_0"),
    "d": ("(a) with permessage-deflate (shared)",
          {"connections": 10000, "rate": 1000, "size": 200, "duration": 20, "deflate": True}, "/bench-deflate", "/subz/bench_0"),
    "e": ("1,000 topics × 10 subscribers, events spread over the topics",
          {"connections": 10000, "topics": 1000, "rate": 1000, "size": 200, "duration": 20}, "/topics", "/sub/bench_{topic}"),
    "f": ("100 clients that never read + 1,000 normal ones",
          {"connections": 1100, "slow": 100, "rate": 1000, "size": 200, "duration": 20}, "/bench", "/sub/bench_0"),
    "g": ("(a) with MessagePack",
          {"connections": 10000, "rate": 1000, "size": 200, "duration": 20, "format": "msgpack"}, "/bench", None),
    "i": ("(a) on two instances sharing Redis (Switchboard's cluster bus, Nchan's Redis mode): subscribers split over both, publisher on one",
          {"connections": 10000, "rate": 1000, "size": 200, "duration": 20, "pair": True}, "/bench", "/sub/bench_0"),
    "h": ("(a) with history on (size 100, ttl 5m): positions in every event",
          {"connections": 10000, "rate": 1000, "size": 200, "duration": 20, "topic_prefix": "hist:"}, "/bench-history", "/sub/bench_0"),
}

NGINX_CONF = """
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
events {{ worker_connections 19900; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  {upstream}
  server {{
    listen 127.0.0.1:{port};
    location ~ ^/sub/(\\w+)$ {{
      nchan_subscriber websocket;
      nchan_channel_id $1;
      {redis}
      nchan_message_buffer_length 1;
      nchan_message_timeout 30s;
    }}
    location ~ ^/subz/(\\w+)$ {{
      nchan_subscriber websocket;
      nchan_channel_id $1;
      {redis}
      nchan_deflate_message_for_websocket on;
      nchan_message_buffer_length 1;
      nchan_message_timeout 30s;
    }}
    location ~ ^/pub/(\\w+)$ {{
      nchan_publisher;
      nchan_channel_id $1;
      {redis}
      nchan_message_buffer_length 1;
      nchan_message_timeout 30s;
    }}
  }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception as error:  # refused until it listens; 4xx from nchan is fine
            if hasattr(error, "code"):
                return
            time.sleep(0.05)
    raise RuntimeError("server did not come up: " + url)


class Switchboard:
    name = "switchboard"

    def __init__(self, extra_config=""):
        self.port = free_port()
        self.log = open(tempfile.mktemp(suffix="-switchboard.log"), "w")
        env = dict(os.environ, BENCH_PORT=str(self.port), BENCH_KEY=KEY)
        if FLUSH_INTERVAL:
            env["BENCH_FLUSH_INTERVAL"] = FLUSH_INTERVAL
        config = ROOT / "Benchmarks/configs/switchboard.yaml"
        if extra_config:
            combined = pathlib.Path(tempfile.mktemp(suffix="-switchboard.yaml"))
            combined.write_text(config.read_text() + "\n" + extra_config)
            config = combined
        self.process = subprocess.Popen(
            [str(ROOT / ".build/release/switchboard"), "run", str(config), "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_http("http://127.0.0.1:%d/healthz" % self.port)
        self.pids = [self.process.pid]

    def ws(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def publish(self):
        return "switchboard:http://127.0.0.1:%d/api/publish" % self.port

    def frames_per_write(self):
        """Deliveries per socket write, from /stats (how much the flush rounds gathered)."""
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.port, timeout=5) as response:
            stats = json.load(response)
        return stats["deliveries_out"] / stats["connection_writes"] if stats.get("connection_writes") else 0

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


class Nchan:
    name = "nchan"

    def __init__(self, redis_port=None):
        self.upstream = "upstream bus { nchan_redis_server redis://127.0.0.1:%d; }" % redis_port if redis_port else ""
        self.redis = "nchan_redis_pass bus;" if redis_port else ""
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nchan-")
        conf = pathlib.Path(self.dir) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, upstream=self.upstream, redis=self.redis))
        self.process = subprocess.Popen(["nginx", "-c", str(conf), "-p", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_http("http://127.0.0.1:%d/pub/probe" % self.port)
        time.sleep(0.3)
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        self.pids = [self.process.pid] + [int(pid) for pid in children]

    def ws(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def publish(self):
        return "nchan:http://127.0.0.1:%d/pub" % self.port

    def stop(self):
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class WsFloor:
    """Benchmarks/Floor/ws_floor.c: a minimal C WebSocket server (epoll, one write() per
    subscriber, no framework) that speaks Nchan's protocol (`/sub/<id>` upgrade, `POST
    /pub/<id>`), so LoadGen measures it exactly as it measures the servers: the floor with
    the same reader. Plain one-topic WebSocket only: scenarios a, b, c, f. Each round of
    events, a loop writes what is pending to each subscriber with one write(): one frame at
    a moderate rate, up to `batch` frames when events queue up (batch 1: every frame alone)."""
    name = "wsfloor"
    scenarios = ("a", "b", "c", "f")
    threads = 2  # --wsfloor-threads: event loops (Switchboard's 2 loops, Nchan's 2 workers)
    batch = 64  # --wsfloor-batch: most frames in one write() to a subscriber
    binary = None

    def __init__(self):
        if WsFloor.binary is None:
            if not shutil.which("gcc"):
                raise RuntimeError("the WebSocket floor needs gcc")
            binary = pathlib.Path(tempfile.gettempdir()) / "switchboard-ws-floor"
            subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ROOT / "Benchmarks/Floor/ws_floor.c")], check=True)
            WsFloor.binary = binary
        self.port = free_port()
        self.log = open(tempfile.mktemp(suffix="-wsfloor.log"), "w")
        self.process = subprocess.Popen([str(WsFloor.binary), str(self.port), str(WsFloor.threads), str(WsFloor.batch)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_http("http://127.0.0.1:%d/healthz" % self.port)
        self.pids = [self.process.pid]

    def ws(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def publish(self):
        return "nchan:http://127.0.0.1:%d/pub" % self.port

    def stop(self):
        if self.process.poll() is not None:
            self.log.close()
            raise RuntimeError("ws_floor exited (%s): %s" % (self.process.returncode, pathlib.Path(self.log.name).read_text()[-2000:]))
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


class RedisBus:
    """A throwaway redis-server on a free loopback port: the pairs' shared bus."""

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class Pair:
    """Two instances of a server sharing one Redis: subscribers alternate between them
    (by load generator process), the publisher uses the first. CPU and RSS are the sum of
    both instances and Redis."""

    def __init__(self, make):
        self.bus = RedisBus()
        self.instances = []
        try:
            for _ in range(2):
                self.instances.append(make(self.bus.port))
        except Exception:
            self.stop()
            raise
        self.name = self.instances[0].name + "-pair"
        self.pids = [pid for instance in self.instances for pid in instance.pids] + [self.bus.process.pid]

    def ws(self, path, index=0):
        return self.instances[index % 2].ws(path)

    def publish(self):
        return self.instances[0].publish()

    def frames_per_write(self):
        return sum(instance.frames_per_write() for instance in self.instances) / 2

    def stop(self):
        for instance in self.instances:
            instance.stop()
        self.bus.stop()


def switchboard_pair():
    return Pair(lambda port: Switchboard("cluster:\n  redis: redis://127.0.0.1:%d\n" % port))


def nchan_pair():
    return Pair(lambda port: Nchan(redis_port=port))


PER_PROCESS = 19800  # sockets one load generator process may hold (20,000 open files)
LOADGEN_PROCESSES = None  # --loadgen-processes: subscriber processes (enough for PER_PROCESS otherwise)


def sample(pids):
    """Server CPU seconds and RSS bytes, summed over its processes (Nchan: master and workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, rss = 0.0, 0
    for pid in pids:
        fields = pathlib.Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks
        for line in pathlib.Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
    return cpu, rss


class LoadProcess:
    """One coordinated LoadGen process; its stdout lines are read on a thread so every
    wait has a deadline."""

    def __init__(self, args):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, key, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if line is None:
                self.stderr.seek(0)
                raise RuntimeError("load generator exited: " + self.stderr.read()[-2000:])
            message = json.loads(line)
            if key in message:
                return message
        raise RuntimeError("load generator: no %r line within %d s" % (key, timeout))

    def send(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def percentile(histogram, total, p, max_us):
    """The same bucket layout as LoadStats.micros(bucket:) in Benchmarks/LoadGen."""
    if total == 0:
        return 0.0
    target, seen = max(1, math.ceil(total * p)), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= target:
            micros = bucket * 10 + 5 if bucket < 2000 else 20000 + (bucket - 2000) * 1000 + 500
            return min(micros, max_us) / 1000
    return max_us / 1000


def merge(reports, publisher, started_nanos):
    """One result from the subscriber processes' reports and the publisher's line."""
    result = {key: sum(r[key] for r in reports) for key in (
        "connections", "connected", "failed", "closed_early", "deliveries", "bytes_received", "expected", "lost",
        "clients_with_loss", "measured_clients")}
    result["connect_seconds"] = max(r["connect_seconds"] for r in reports)
    result["connects_per_second"] = result["connected"] / result["connect_seconds"] if result["connect_seconds"] else 0
    result["drain_seconds"] = max(r["drain_seconds"] for r in reports)
    for key in ("published", "publish_connections", "offered_events_per_second", "publish_errors", "publish_seconds"):
        result[key] = publisher.get(key, 0) if publisher else 0
    histogram = collections.Counter()
    for r in reports:
        for bucket, count in r["histogram"]:
            histogram[bucket] += count
    total = sum(histogram.values())
    max_us = max(r["max_latency_us"] for r in reports)
    result["latency_ms"] = {name: percentile(histogram, total, p, max_us) for name, p in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}
    result["latency_ms"]["max"] = max_us / 1000
    last = max(r["last_delivery_nanos"] for r in reports)
    result["last_delivery_after_first_publish_ms"] = (last - started_nanos) / 1e6 if last > started_nanos else 0
    result["loadgen_processes"] = len(reports)
    return result


def run_scenario(name, server_class, scale, settle, rate=None, topics=None, duration=None):
    description, params, sb_path, nchan_path = SCENARIOS[name]
    if rate and params.get("rate"):
        params = dict(params, rate=rate)
    if topics and params.get("topics"):
        params = dict(params, topics=topics)
    if server_class is WsFloor and name not in WsFloor.scenarios:
        return None  # deflate, topics, MessagePack, history, pairs: not what the floor is for
    path = sb_path if server_class is Switchboard else nchan_path  # the floor speaks Nchan's paths
    if path is None:
        return None
    params = dict(params)
    pair = params.pop("pair", False)
    for key in ("connections", "burst", "slow"):
        if params.get(key):
            params[key] = max(1, int(params[key] * scale))
    if params.get("duration") and scale < 1:
        params["duration"] = max(2, params["duration"] * scale)
    if duration and params.get("rate") and params.get("duration"):
        params["duration"] = duration
    if pair:
        server = switchboard_pair() if server_class is Switchboard else nchan_pair()
    else:
        server = server_class()
    processes = []
    publisher = None
    try:
        common = [str(ROOT / ".build/release/LoadGen"), "--coordinate", "--settle", str(settle)]
        for key in ("rate", "size", "duration", "burst", "topics", "slow", "deflate", "format", "topic_prefix", "subscribe_messages", "extra_subscribe", "browser_headers"):
            if key in params:
                flag = "--" + key.replace("_", "-")
                common += [flag] if params[key] is True else [flag, str(params[key])]
        if name == "e" and server_class is Switchboard:
            common.append("--subscribe-messages")
        if params.get("deflate"):
            # Both servers compress each event once for every subscriber (Nchan without
            # saying server_no_context_takeover): inflate each distinct message once.
            common.append("--independent-messages")
        # Subscribers spread over enough processes; the publisher gets a process of its own.
        count = max(LOADGEN_PROCESSES or (2 if pair else 1), -(-params["connections"] // PER_PROCESS))
        if pair and count % 2:
            count += 1  # half of the subscribers on each instance
        baseline = sample(server.pids)
        first = 0
        for index in range(count):
            share = params["connections"] // count + (1 if index < params["connections"] % count else 0)
            ws = server.ws(path, index) if pair else server.ws(path)
            processes.append(LoadProcess(common + ["--ws", ws, "--connections", str(share), "--first-index", str(first), "--label", "%s/%s/%d" % (name, server.name, index)]))
            first += share
        for process in processes:
            process.expect("ready", 180)
        if params.get("rate") or params.get("burst"):
            publisher = LoadProcess(common + ["--ws", server.ws(path, 0) if pair else server.ws(path), "--connections", "0", "--publish", server.publish(), "--key", KEY, "--label", "%s/%s/publisher" % (name, server.name)])
            publisher.expect("ready", 60)
        before = sample(server.pids)
        everyone = processes + ([publisher] if publisher else [])
        for process in everyone:
            process.send("go")
        if publisher:
            published = publisher.expect("published_per_topic", params.get("duration", 0) + 90)
            counts = published["published_per_topic"]
        else:
            time.sleep(params.get("duration", 0))
            published, counts = {"publish_started_nanos": 0}, [0] * params.get("topics", 1)
        for process in everyone:
            process.send("drain " + json.dumps(counts))
        reports = [process.expect("deliveries", 60) for process in processes]
        if publisher:
            publisher.expect("deliveries", 60)
        after = sample(server.pids)
        result = merge(reports, published if publisher else None, published["publish_started_nanos"])
        cpu = after[0] - before[0]
        result.update({"server_cpu_seconds": cpu, "deliveries_per_cpu_second": result["deliveries"] / cpu if cpu > 0 else 0,
                       "server_rss_bytes": after[1], "server_rss_baseline_bytes": baseline[1],
                       "label": "%s/%s" % (name, server.name)})
        if result["connected"]:
            result["rss_per_connection_bytes"] = (after[1] - baseline[1]) // result["connected"]
        result.update({"scenario": name, "server": server.name, "description": description, "scale": scale, "rate": params.get("rate", 0)})
        if server_class is WsFloor:
            result.update({"wsfloor_threads": WsFloor.threads, "wsfloor_batch": WsFloor.batch})
        if server_class is Switchboard:
            result["flush_interval"] = FLUSH_INTERVAL or "default"
            result["frames_per_write"] = server.frames_per_write()
        return result
    finally:
        for process in processes + ([publisher] if publisher else []):
            process.stop()
        server.stop()


def run_floor(connections, rate):
    """Benchmarks/Floor/loopback_floor.c at the scenario's connection count and rate: what
    the kernel alone costs per fan-out on this machine at this moment (None without gcc)."""
    if not shutil.which("gcc"):
        return None
    binary = pathlib.Path(tempfile.gettempdir()) / "switchboard-loopback-floor"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ROOT / "Benchmarks/Floor/loopback_floor.c")], check=True)
    results = []
    for writers in (1, 2):
        rounds = max(10, min(200, rate or 50))
        completed = subprocess.run([str(binary), str(min(connections, 9000)), str(writers), str(rounds)], capture_output=True, text=True, timeout=300)
        if completed.returncode != 0:
            raise RuntimeError(completed.stderr)
        results.append(json.loads(completed.stdout))
    return {"scenario": "floor", "server": "floor", "floor": results, "connections": min(connections, 9000)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--servers", default="switchboard,nchan")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--out", default=str(ROOT / "Benchmarks/results/latest.jsonl"))
    parser.add_argument("--flush-interval", help="Switchboard's flush_interval, e.g. 0s or 5ms")
    parser.add_argument("--rate", type=int, help="events/s for the scenarios that publish at a rate (instead of 1,000)")
    parser.add_argument("--duration", type=float, help="seconds of publishing for the scenarios that publish at a rate (instead of 20 x scale)")
    parser.add_argument("--topics", type=int, help="topics for the scenarios spread over several (e; instead of 1,000)")
    parser.add_argument("--check", action="store_true", help="fail unless every run delivered every expected message (the CI smoke run)")
    parser.add_argument("--floor", action="store_true", help="each round, also run Benchmarks/Floor/loopback_floor.c at (a)'s connection count")
    parser.add_argument("--wsfloor-threads", type=int, default=2, help="event loops of the WebSocket floor (--servers ...,wsfloor; default 2)")
    parser.add_argument("--wsfloor-batch", type=int, default=64, help="most frames the WebSocket floor writes to a subscriber at once (1: every frame alone)")
    parser.add_argument("--loadgen-processes", type=int, help="subscriber processes (at least enough for 19,800 sockets each; default 1)")
    options = parser.parse_args()
    global FLUSH_INTERVAL, LOADGEN_PROCESSES
    FLUSH_INTERVAL = options.flush_interval
    LOADGEN_PROCESSES = options.loadgen_processes
    if not 1 <= options.wsfloor_threads <= 8:
        parser.error("--wsfloor-threads: 1 to 8")
    if not 1 <= options.wsfloor_batch <= 256:
        parser.error("--wsfloor-batch: 1 to 256")
    WsFloor.threads, WsFloor.batch = options.wsfloor_threads, options.wsfloor_batch
    for binary in (".build/release/switchboard", ".build/release/LoadGen"):
        if not (ROOT / binary).exists():
            sys.exit("missing %s: swift build -c release" % binary)
    classes = {"switchboard": Switchboard, "nchan": Nchan, "wsfloor": WsFloor}
    servers = [classes[name] for name in options.servers.split(",")]
    if Nchan in servers and not shutil.which("nginx"):
        sys.exit("nginx is not installed: apt install nginx libnginx-mod-nchan")
    out = pathlib.Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(), "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with out.open("a") as results:
        for round_number in range(options.repeat):
            for name in options.scenarios:
                for server_class in servers:
                    result = run_scenario(name, server_class, options.scale, options.settle, options.rate, options.topics, options.duration)
                    if result is not None and options.topics:
                        result["topics"] = options.topics
                    if result is None:
                        continue
                    result.update({"round": round_number, "machine": machine})
                    line = json.dumps(result, sort_keys=True)
                    print(line, flush=True)
                    results.write(line + "\n")
                    if options.check and (result["lost"] or result["deliveries"] < result["expected"] or result["connected"] < result["connections"]
                                          or (result.get("published") and not result["expected"])):
                        sys.exit("check failed: %s/%s connected %d of %d, delivered %d of %d expected, lost %d" % (
                            name, result["server"], result["connected"], result["connections"], result["deliveries"], result["expected"], result["lost"]))
            if options.floor:
                floor = run_floor(max(1, int(SCENARIOS["a"][1]["connections"] * options.scale)), options.rate)
                if floor:
                    floor.update({"round": round_number, "machine": machine})
                    line = json.dumps(floor, sort_keys=True)
                    print(line, flush=True)
                    results.write(line + "\n")


if __name__ == "__main__":
    main()
