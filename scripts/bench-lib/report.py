"""Reads the outputs of scripts/bench, prints one table and writes
target/bench/report.json."""
import json
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
secs = int(sys.argv[2])
pgb_events = int(sys.argv[3])
levels = [1, 4, 16]


def pgbench(name, c):
    text = (out / f"pgbench_{name}_{c}.txt").read_text()
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", text).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", text).group(1))
    done = int(re.search(r"number of transactions actually processed: (\d+)", text).group(1))
    return {"tps": tps, "latency_avg_ms": lat, "transactions": done}


raw = {name: {c: pgbench(name, c) for c in levels} for name in ["insert", "transfer", "append"]}
pgb_transfers = sum(raw[n][c]["transactions"] for n in ["transfer", "append"] for c in levels)
# A command starting from a kept state sends the append alone.
baseline_for = {
    "deposit": "insert",
    "transfer": "append",
    "transfer-hot": "append",
    "fanout": "append",
    "long-stream": "append",
    # The same with a command id per command (recorded with the events).
    "transfer-ids": "append",
    "transfer-hot-ids": "append",
}

rows = []
print()
print(f"eventcore on PostgreSQL vs pgbench, {secs} s per measurement, durable commits")
print()
print("| workload | conc | cmd/s | p50 ms | p99 ms | max ms | attempts/cmd | cache hits | round trips/cmd | vs pgbench | pgbench tps (what) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for c in levels:
    for name, what in [
        ("insert", "one-row insert"),
        ("transfer", "eventcore's read + append of a transfer"),
        ("append", "eventcore's append alone"),
    ]:
        r = raw[name][c]
        print(f"| pgbench {name} | {c} | {r['tps']:.0f} | | | | | | | | {what} (avg {r['latency_avg_ms']:.2f} ms) |")
checks_ok = True
for w, base in baseline_for.items():
    report = json.loads((out / f"load_{w}.json").read_text())
    checks_ok &= all(report["checks"].values())
    for level in report["levels"]:
        c = level["concurrency"]
        ratio = level["commands_per_sec"] / raw[base][c]["tps"]
        rows.append({"workload": w, "baseline": base, "ratio": ratio, **level})
        print(
            f"| {w} | {c} | {level['commands_per_sec']:.0f} | {level['p50_ms']:.2f} | {level['p99_ms']:.2f} "
            f"| {level['max_ms']:.1f} | {level['attempts_per_command']:.2f} | {level['cache_hit_rate']:.0%} "
            f"| {level['store_calls_per_command']:.2f} | {ratio:.0%} | {raw[base][c]['tps']:.0f} ({base}) |"
        )
by_level = {(r["workload"], r["concurrency"]): r["commands_per_sec"] for r in rows}
print()
print(
    "long-stream (32 accounts of 10,000 events) vs deposit (short accounts), same command: "
    + ", ".join(
        f"{c}: {by_level[('long-stream', c)] / by_level[('deposit', c)]:.0%}" for c in levels
    )
)
catch_up = json.loads((out / "read_catch_up.json").read_text())
live = json.loads((out / "read_live.json").read_text())
print()
print(f"read side: catch-up of {catch_up['events']} events by a subscription: {catch_up['events_per_sec']:.0f} events/s")
print(
    f"read side: live, {live['events']} writes at 1,000/s: commit to handler p50 {live['p50_ms']:.2f} ms, "
    f"p95 {live['p95_ms']:.2f} ms, p99 {live['p99_ms']:.2f} ms, max {live['max_ms']:.1f} ms"
)
checks_ok &= catch_up["handled"] == catch_up["events"] and live["handled"] == live["events"]
print()
print(f"pgbench transfers: {pgb_transfers}, events appended: {pgb_events} (expected {2 * pgb_transfers})")
print(f"load tool invariant checks: {'all passed' if checks_ok else 'FAILED'}")
report = {"seconds": secs, "pgbench": raw, "workloads": rows, "catch_up": catch_up, "live": live, "pgbench_transfer_events": pgb_events, "checks_passed": checks_ok}
(out / "report.json").write_text(json.dumps(report, indent=2))
print(f"wrote {out / 'report.json'}")
if not checks_ok or pgb_events != 2 * pgb_transfers:
    sys.exit(1)
