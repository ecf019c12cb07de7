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
COLUMNS["d"] = COLUMNS["a"]
COLUMNS["e"] = COLUMNS["a"]
COLUMNS["g"] = COLUMNS["a"]


def main(path):
    runs = collections.defaultdict(list)
    descriptions = {}
    for line in open(path):
        if not line.strip():
            continue
        result = json.loads(line)
        runs[(result["scenario"], result["server"])].append(result)
        descriptions[result["scenario"]] = result.get("description", "")
    for scenario in sorted({key[0] for key in runs}):
        print("### (%s) %s\n" % (scenario, descriptions[scenario]))
        print("| metric | Switchboard | Nchan | Switchboard / Nchan |")
        print("|---|---|---|---|")
        for title, extract, _ in COLUMNS.get(scenario, COLUMNS["a"]):
            values = {}
            for server in ("switchboard", "nchan"):
                if runs.get((scenario, server)):
                    values[server] = statistics.median(extract(r) for r in runs[(scenario, server)])
            sb = values.get("switchboard")
            nc = values.get("nchan")
            ratio = "%.2f×" % (sb / nc) if sb is not None and nc else "–"
            fmt = lambda v: "–" if v is None else ("%.0f" % v if abs(v) >= 100 else "%.2f" % v)
            print("| %s | %s | %s | %s |" % (title, fmt(sb), fmt(nc), ratio))
        rounds = max(len(runs.get((scenario, s), [])) for s in ("switchboard", "nchan"))
        sample = next(iter(runs.get((scenario, "switchboard")) or runs.get((scenario, "nchan"))))
        scale = sample.get("scale", 1)
        note = "" if scale == 1 else "; run at --scale %g: %d connections, %d events" % (scale, sample["connections"], sample["published"])
        print("\n(median of %d round%s%s)\n" % (rounds, "" if rounds == 1 else "s", note))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "Benchmarks/results/latest.jsonl")
