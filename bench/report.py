"""Markdown tables from bench/results/results.json, for docs/performance.md:

python -m bench.report
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "results.json"


def _rate(value: Any) -> str:
    return "flat out" if value == "max" else f"{value:,.0f}"


def ingest_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| offered msgs/s | persisted msgs/s | stored / acked by broker | p50 | p99 | max "
        "| collector CPU s / 1k | Mosquitto CPU s / 1k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {_rate(r['offered_rate'])} | {r['persisted_rate']:,} "
            f"| {r['stored_distinct']:,} / {r['acked_by_broker']:,} "
            f"| {r['latency_p50_ms']:,} ms | {r['latency_p99_ms']:,} ms "
            f"| {r['latency_max_ms']:,} ms | {r['collector_cpu_s_per_1k']} "
            f"| {r['mosquitto_cpu_s_per_1k']} |"
        )
    return "\n".join(lines)


def main() -> None:
    r = json.loads(RESULTS.read_text())
    m = r["machine"]
    print(f"Machine: {m['cpus']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, ")
    print(f"{m['mosquitto']}.\n")
    print("### PostgreSQL, 100 devices, 20 s each\n")
    print(ingest_table(r["paced_postgresql"]))
    print("\n### Sustained, PostgreSQL\n")
    print(ingest_table([r["sustained_postgresql"]]))
    print("\n### SQLite\n")
    print(ingest_table([r["sqlite_paced_10k"], r["sqlite_flat_out"]]))
    c = r["ceiling"]
    print(
        f"\nBare subscriber: {c['received_rate']:,} msgs/s received "
        f"({c['received']:,} of {c['published']:,}), {c['subscriber_cpu_s_per_1k']} CPU s / 1k. "
        f"paku-iot flat out / bare subscriber: {r['ratio_to_bare_subscriber']}."
    )
    rep = r["replicas"]
    print(
        f"\nReplicas: {rep['replicas']} collectors, {rep['published']:,} published, "
        f"{rep['stored_rows']:,} stored, {rep['duplicates']} duplicates, {rep['lost']} lost, "
        f"{rep['combined_rate_wall']:,} msgs/s combined; peak PSS {rep['collector_peak_pss_mib']}."
    )
    print("\n| process under 10,000 msgs/s | RSS at rest | peak RSS | PSS at rest | peak PSS |")
    print("|---|---|---|---|---|")
    for role in ("collector", "all"):
        mem = r[f"memory_{role}"]
        print(
            f"| `serve --role {role}` | {mem['rss_at_rest_mib']} MiB | {mem['peak_rss_mib']} MiB "
            f"| {mem['pss_at_rest_mib']} MiB | {mem['peak_pss_mib']} MiB |"
        )
    idle = r["idle"]
    print(f"\nIdle fleet: {json.dumps(idle)}")
    print(f"\nBig table: {json.dumps(r['bigtable'])}")


if __name__ == "__main__":
    main()
