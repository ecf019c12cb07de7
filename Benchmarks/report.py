#!/usr/bin/env python3
"""Turns Benchmarks/bench.py results (JSON lines) into the Markdown tables of
Docs/PERFORMANCE.md: medians over rounds, Switchboard and Nchan side by side, and the
ratio.  python3 Benchmarks/report.py Benchmarks/results/latest.jsonl"""
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
    for scenario in sorted({key[0] for key in runs}):
        print("### (%s) %s\n" % (scenario, descriptions[scenario]))
        print("| metric | Switchboard | Nchan | Switchboard / Nchan |")
        print("|---|---|---|---|")
        for title, extract, _ in COLUMNS.get(scenario[0], COLUMNS["a"]):
            values = {}
            for server in ("switchboard", "nchan"):
                found = [extract(r) for r in runs.get((scenario, server), [])]
                found = [value for value in found if value is not None]
                if found:
                    values[server] = statistics.median(found)
            sb = values.get("switchboard")
            nc = values.get("nchan")
            ratio = "%.2f×" % (sb / nc) if sb is not None and nc else "–"
            fmt = lambda v: "–" if v is None else ("%.0f" % v if abs(v) >= 100 else "%.2f" % v)
            print("| %s | %s | %s | %s |" % (title, fmt(sb), fmt(nc), ratio))
        rounds = max(len(runs.get((scenario, s), [])) for s in ("switchboard", "nchan"))
        sample = next(iter(runs.get((scenario, "switchboard")) or runs.get((scenario, "nchan"))))
        scale = sample.get("scale", 1)
        note = "" if scale == 1 else "; run at --scale %g: %d connections, %d events" % (scale, sample["connections"], sample["published"])
        if sample.get("loadgen_processes"):
            note += "; load generator: %d subscriber process%s%s" % (
                sample["loadgen_processes"], "" if sample["loadgen_processes"] == 1 else "es", " + 1 publisher" if sample.get("published") else "")
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
