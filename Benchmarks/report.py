#!/usr/bin/env python3
"""Turns Benchmarks/bench.py results (JSON lines) into the Markdown tables of
Docs/PERFORMANCE.md: medians over rounds, Switchboard and Nchan side by side, and the
ratio; with the WebSocket floor (bench.py --servers ...,wsfloor) in the run, its column
and each server's ratio to it.  python3 Benchmarks/report.py Benchmarks/results/latest.jsonl"""
import collections
import json
import statistics
import sys

# scenario → [(column title, extractor, "higher" or "lower" is better)]
COLUMNS = {
    "a": [("deliveries / server CPU-s", lambda r: r.get("deliveries_per_cpu_second", 0), "higher"),
          ("lost", lambda r: r["lost"], "lower"),
          ("p50 ms", lambda r: r["latency_ms"]["p50"], "lower"),
          ("p99 ms", lambda r: r["latency_ms"]["p99"], "lower"),
          ("p999 ms", lambda r: r["latency_ms"]["p999"], "lower"),
          ("server CPU s", lambda r: r.get("server_cpu_seconds", 0), "lower"),
          ("server RSS MiB", lambda r: r.get("server_rss_bytes", 0) / 2**20, "lower")],
    "b": [("RSS / idle connection KiB", lambda r: r.get("rss_per_connection_bytes", 0) / 1024, "lower"),
          ("connected", lambda r: r["connected"], "higher"),
          ("connects / s", lambda r: r["connects_per_second"], "higher")],
    "c": [("burst drained in ms", lambda r: r["last_delivery_after_first_publish_ms"], "lower"),
          ("lost", lambda r: r["lost"], "lower"),
          ("p99 ms", lambda r: r["latency_ms"]["p99"], "lower")],
    "f": [("normal clients' p99 ms", lambda r: r["latency_ms"]["p99"], "lower"),
          ("lost (normal clients)", lambda r: r["lost"], "lower"),
          ("server RSS MiB", lambda r: r.get("server_rss_bytes", 0) / 2**20, "lower")],
}
DEFAULT_RATE = 1000
# Column order and titles; a server not listed here comes after them under its own name.
SERVERS = [("switchboard", "Switchboard"), ("nchan", "Nchan"), ("wsfloor", "WebSocket floor"),
           ("switchboard-pair", "Switchboard pair"), ("nchan-pair", "Nchan pair")]
# Compared pairs: both columns and their ratio whenever either ran (an empty one shows –);
# and, when the WebSocket floor ran, every server's ratio to it.
RATIOS = [("switchboard", "nchan"), ("switchboard-pair", "nchan-pair")]
FLOOR = "wsfloor"
COLUMNS["a"].append(("events offered / s", lambda r: r.get("offered_events_per_second", 0), "higher"))
COLUMNS["a"].append(("frames per socket write", lambda r: r.get("frames_per_write"), "higher"))
COLUMNS["d"] = COLUMNS["a"]
COLUMNS["e"] = COLUMNS["a"]
COLUMNS["g"] = COLUMNS["a"]


def main(path):
    runs = collections.defaultdict(list)
    descriptions = {}
    floors = []
    for line in open(path):
        if not line.strip():
            continue
        result = json.loads(line)
        if result["scenario"] == "floor":
            floors.append(result)
            continue
        # A run at another rate than the scenario's (bench.py --rate) gets a table of its own.
        scenario = result["scenario"]
        if result.get("rate") and result["rate"] != DEFAULT_RATE:
            scenario = "%s at %d events/s" % (scenario, result["rate"])
        runs[(scenario, result["server"])].append(result)
        descriptions[scenario] = result.get("description", "")
    titles = dict(SERVERS)
    for scenario in sorted({key[0] for key in runs}):
        print("### (%s) %s\n" % (scenario, descriptions[scenario]))
        present = {key[1] for key in runs if key[0] == scenario}
        shown = present | {name for pair in RATIOS if present & set(pair) for name in pair}
        servers = [name for name, _ in SERVERS if name in shown] + sorted(present - set(titles))
        ratios = [(a, b) for a, b in RATIOS if a in shown]
        ratios += [(server, FLOOR) for server in servers if FLOOR in present and server != FLOOR]
        short = lambda name: "floor" if name == FLOOR else titles.get(name, name)
        headers = [titles.get(name, name) for name in servers] + ["%s / %s" % (short(a), short(b)) for a, b in ratios]
        print("| metric | %s |" % " | ".join(headers))
        print("|---|%s" % ("---|" * len(headers)))
        fmt = lambda v: "–" if v is None else ("%.0f" % v if abs(v) >= 100 else "%.2f" % v)
        for title, extract, _ in COLUMNS.get(scenario[0], COLUMNS["a"]):
            values = {}
            for server in servers:
                found = [extract(r) for r in runs.get((scenario, server), [])]
                found = [value for value in found if value is not None]
                if found:
                    values[server] = statistics.median(found)
            cells = [fmt(values.get(server)) for server in servers]
            cells += ["%.2f×" % (values[a] / values[b]) if values.get(a) is not None and values.get(b) else "–" for a, b in ratios]
            print("| %s | %s |" % (title, " | ".join(cells)))
        rounds = max(len(runs.get((scenario, server), [])) for server in servers)
        sample = next(runs[(scenario, server)][0] for server in servers if server in present)
        scale = sample.get("scale", 1)
        note = "" if scale == 1 else "; run at --scale %g: %d connections, %d events" % (scale, sample["connections"], sample["published"])
        if sample.get("loadgen_processes"):
            note += "; load generator: %d subscriber process%s%s" % (
                sample["loadgen_processes"], "" if sample["loadgen_processes"] == 1 else "es", " + 1 publisher" if sample.get("published") else "")
        if FLOOR in present:
            floor = runs[(scenario, FLOOR)][0]
            note += "; WebSocket floor: Benchmarks/Floor/ws_floor.c, %d thread%s, at most %d frames per write" % (
                floor.get("wsfloor_threads", 2), "" if floor.get("wsfloor_threads", 2) == 1 else "s", floor.get("wsfloor_batch", 64))
        print("\n(median of %d round%s%s)\n" % (rounds, "" if rounds == 1 else "s", note))
    if floors:
        print("### The floor: plain write() to %d loopback connections, one epoll reader\n" % floors[0]["connections"])
        print("| writer threads | p50 ms | p99 ms | last ms |")
        print("|---|---|---|---|")
        for index, entry in enumerate(floors[0]["floor"]):
            writers = entry["writers"]
            rows = [f["floor"][index] for f in floors]
            median = lambda key: statistics.median(row[key] for row in rows)
            print("| %d | %.2f | %.2f | %.2f |" % (writers, median("median_p50_ms"), median("median_p99_ms"), median("median_last_ms")))
        print("\n(median of %d round%s)\n" % (len(floors), "" if len(floors) == 1 else "s"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "Benchmarks/results/latest.jsonl")
