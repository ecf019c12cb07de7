#!/usr/bin/env python3
"""Runs the load scenarios against Switchboard and Nchan side by side, in the same run,
and appends one JSON line per (scenario, server) to a results file.

    swift build -c release
    python3 Benchmarks/bench.py                      # every scenario, both servers
    python3 Benchmarks/bench.py a d --servers switchboard,nchan --repeat 3
    python3 Benchmarks/bench.py a --scale 0.1        # a tenth of the connections and events
    python3 Benchmarks/report.py Benchmarks/results/latest.jsonl   # → Markdown tables

Needs Debian's nginx and libnginx-mod-nchan for the peer. Everything listens on
127.0.0.1; the load generator spreads its connections over 127.0.0.2–127.0.0.250.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
  server {{
    listen 127.0.0.1:{port};
    location ~ ^/sub/(\\w+)$ {{
      nchan_subscriber websocket;
      nchan_channel_id $1;
      nchan_message_buffer_length 1;
      nchan_message_timeout 30s;
    }}
    location ~ ^/subz/(\\w+)$ {{
      nchan_subscriber websocket;
      nchan_channel_id $1;
      nchan_deflate_message_for_websocket on;
      nchan_message_buffer_length 1;
      nchan_message_timeout 30s;
    }}
    location ~ ^/pub/(\\w+)$ {{
      nchan_publisher;
      nchan_channel_id $1;
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

    def __init__(self):
        self.port = free_port()
        self.log = open(tempfile.mktemp(suffix="-switchboard.log"), "w")
        env = dict(os.environ, BENCH_PORT=str(self.port), BENCH_KEY=KEY)
        if FLUSH_INTERVAL:
            env["BENCH_FLUSH_INTERVAL"] = FLUSH_INTERVAL
        self.process = subprocess.Popen(
            [str(ROOT / ".build/release/switchboard"), "run", str(ROOT / "Benchmarks/configs/switchboard.yaml"), "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_http("http://127.0.0.1:%d/healthz" % self.port)
        self.pids = [self.process.pid]

    def ws(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def publish(self):
        return "switchboard:http://127.0.0.1:%d/api/publish" % self.port

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


class Nchan:
    name = "nchan"

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nchan-")
        conf = pathlib.Path(self.dir) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port))
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


def run_scenario(name, server_class, scale, settle, rate=None):
    description, params, sb_path, nchan_path = SCENARIOS[name]
    if rate and params.get("rate"):
        params = dict(params, rate=rate)
    path = sb_path if server_class is Switchboard else nchan_path
    if path is None:
        return None
    server = server_class()
    try:
        args = [str(ROOT / ".build/release/LoadGen"), "--ws", server.ws(path), "--publish", server.publish(), "--key", KEY,
                "--server-pid", ",".join(str(p) for p in server.pids), "--label", "%s/%s" % (name, server.name),
                "--settle", str(settle)]
        for key, value in params.items():
            if key in ("connections", "burst", "slow") and isinstance(value, int):
                value = max(1, int(value * scale)) if value else 0
            if key == "duration" and scale < 1:
                value = max(2, value * scale)
            if value is True:
                args.append("--" + key)
            else:
                args += ["--" + key, str(value)]
        if name == "e" and server_class is Switchboard:
            args.append("--subscribe-messages")
        completed = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if completed.returncode != 0:
            raise RuntimeError(completed.stderr)
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        result.update({"scenario": name, "server": server.name, "description": description, "scale": scale, "rate": params.get("rate", 0)})
        if server_class is Switchboard:
            result["flush_interval"] = FLUSH_INTERVAL or "default"
        return result
    finally:
        server.stop()


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
    options = parser.parse_args()
    global FLUSH_INTERVAL
    FLUSH_INTERVAL = options.flush_interval
    for binary in (".build/release/switchboard", ".build/release/LoadGen"):
        if not (ROOT / binary).exists():
            sys.exit("missing %s: swift build -c release" % binary)
    classes = {"switchboard": Switchboard, "nchan": Nchan}
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
                    result = run_scenario(name, server_class, options.scale, options.settle, options.rate)
                    if result is None:
                        continue
                    result.update({"round": round_number, "machine": machine})
                    line = json.dumps(result, sort_keys=True)
                    print(line, flush=True)
                    results.write(line + "\n")


if __name__ == "__main__":
    main()
