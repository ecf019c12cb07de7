#!/usr/bin/env python3
"""How the cost grows with the work: deliveries per server CPU-second and p99 for 100,
1,000 and 10,000 subscribers of one topic (at 50,000 deliveries/s offered: 500, 50 and
5 events/s), and for 1,000 subscribers spread over 1, 100 and 1,000 topics (1,000 events/s
offered, so 1,000,000, 10,000 and 1,000 deliveries/s), Switchboard and Nchan side by side
in each run (Benchmarks/bench.py). Prints a Markdown table; raw lines go to --out.

    python3 Benchmarks/cost_table.py --out Benchmarks/results/cost-table.jsonl
"""
import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = [
    ("100 subscribers, 1 topic", ["a", "--scale", "0.01", "--rate", "500"]),
    ("1,000 subscribers, 1 topic", ["a", "--scale", "0.1", "--rate", "50"]),
    ("10,000 subscribers, 1 topic", ["a", "--scale", "1", "--rate", "5"]),
    ("1,000 subscribers, 1 topic, 1,000 events/s", ["e", "--scale", "0.1", "--topics", "1"]),
    ("1,000 subscribers, 100 topics", ["e", "--scale", "0.1", "--topics", "100"]),
    ("1,000 subscribers, 1,000 topics", ["e", "--scale", "0.1", "--topics", "1000"]),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "Benchmarks/results/cost-table.jsonl"))
    parser.add_argument("--servers", default="switchboard,nchan")
    options = parser.parse_args()
    rows = []
    for label, arguments in RUNS:
        command = [sys.executable, str(ROOT / "Benchmarks/bench.py")] + arguments + ["--servers", options.servers, "--out", options.out]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results = {r["server"]: r for r in (json.loads(line) for line in output.splitlines() if line.startswith("{"))}
        rows.append((label, results))
    servers = options.servers.split(",")
    print("| work | " + " | ".join("%s deliveries / CPU-s | %s p99 ms" % (s, s) for s in servers) + " | ratio |")
    print("|---|" + "---|---|" * len(servers) + "---|")
    for label, results in rows:
        cells = []
        for server in servers:
            r = results.get(server)
            cells += [("%d" % r["deliveries_per_cpu_second"]) if r else "–", ("%.1f" % r["latency_ms"]["p99"]) if r else "–"]
        ratio = "–"
        if all(s in results and results[s]["deliveries_per_cpu_second"] for s in servers[:2]) and len(servers) > 1:
            ratio = "%.2f×" % (results[servers[0]]["deliveries_per_cpu_second"] / results[servers[1]]["deliveries_per_cpu_second"])
        print("| %s | %s | %s |" % (label, " | ".join(cells), ratio))


if __name__ == "__main__":
    main()
