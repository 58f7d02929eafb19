"""paku-iot's benchmarks, in one run on this machine (`make bench`):

    python -m bench all            # everything below; results in bench/results/
    python -m bench ingest --db postgresql --rate 0 --duration 60
    python -m bench paced          # 1k, 5k, 10k, 20k, 25k msgs/s and flat out
    python -m bench ceiling        # a bare subscriber on the same load
    python -m bench replicas       # two collector processes on the shared subscription
    python -m bench memory         # serve --role collector, then serve, under 10k msgs/s
    python -m bench idle           # 10,000 devices provisioned, 5,000 connected at rest
    python -m bench bigtable       # one device's day from a 10-million-row table

Each prints its results as JSON; `all` also writes bench/results/results.json and the plot
docs/img/ingest.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import scenarios

RESULTS = Path(__file__).parent / "results"
PLOT = Path(__file__).parent.parent / "docs" / "img" / "ingest.png"
PACED_RATES = (1000, 5000, 10000, 20000, 25000)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
        "mosquitto": mosquitto.stdout.splitlines()[0] if mosquitto.stdout else "?",
    }


def fresh(run: Callable[[Path], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Each scenario in its own scratch directory, broker and database."""
    with tempfile.TemporaryDirectory(prefix="paku-bench-") as work:
        result = asyncio.run(run(Path(work)))
    print(json.dumps(result), flush=True)
    return result


def paced(db: str, devices: int, duration: float) -> list[dict[str, Any]]:
    runs = []
    for rate in (*PACED_RATES, 0):
        runs.append(
            fresh(
                lambda work, rate=rate: scenarios.ingest(db, work, devices, rate, duration)  # type: ignore[misc]
            )
        )
    return runs


def plot(runs: list[dict[str, Any]], ceiling: dict[str, Any] | None) -> None:
    # Imported here: only the report needs it, and it is slow to import.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    paced_runs = [r for r in runs if r["offered_rate"] != "max"]
    offered = [r["offered_rate"] for r in paced_runs]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    top.plot(offered, [r["persisted_rate"] for r in paced_runs], "o-", label="persisted")
    top.plot(offered, offered, ":", color="grey", label="offered")
    flat = [r for r in runs if r["offered_rate"] == "max"]
    if flat:
        top.axhline(flat[0]["persisted_rate"], color="tab:green", ls="--", label="flat out")
    if ceiling:
        top.axhline(ceiling["received_rate"], color="tab:red", ls="--", label="bare subscriber")
    top.set_ylabel("msgs/s")
    top.set_title("paku-iot collector, PostgreSQL, acks after commit (2 cores, one box)")
    top.legend()
    top.grid(alpha=0.3)
    for key, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")):
        bottom.plot(offered, [r[key] for r in paced_runs], "o-", label=label)
    bottom.set_yscale("log")
    bottom.set_xlabel("offered load (msgs/s)")
    bottom.set_ylabel("publish-to-commit latency (ms)")
    bottom.legend()
    bottom.grid(alpha=0.3)
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "scenario",
        choices=["all", "ingest", "paced", "ceiling", "replicas", "memory", "idle", "bigtable"],
    )
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0, help="msgs/s; 0 = flat out")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load")
    parser.add_argument("--sustained", type=float, default=60, help="seconds of the long run")
    parser.add_argument(
        "--sustained-rate", type=float, default=25000, help="msgs/s offered in the long run"
    )
    parser.add_argument(
        "--alert-rules", type=int, default=0, help="alert rules evaluated during ingest"
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="bigtable size")
    args = parser.parse_args()
    d, n = args.duration, args.devices
    if args.scenario == "ingest":
        fresh(lambda w: scenarios.ingest(args.db, w, n, args.rate, d, args.alert_rules))
    elif args.scenario == "paced":
        paced(args.db, n, d)
    elif args.scenario == "ceiling":
        fresh(lambda w: scenarios.ceiling(w, n, d))
    elif args.scenario == "replicas":
        fresh(lambda w: scenarios.replicas(w, n, d))
    elif args.scenario == "memory":
        for role in ("collector", "all"):
            fresh(lambda w, r=role: scenarios.memory_under_load(w, r, n, 10000, d))  # type: ignore[misc]
    elif args.scenario == "idle":
        fresh(lambda w: scenarios.idle_fleet(w, 10_000, 5_000, 30))
    elif args.scenario == "bigtable":
        fresh(lambda w: scenarios.big_table(w, args.rows))
    else:
        results: dict[str, Any] = {"machine": machine()}
        results["paced_postgresql"] = paced("postgresql", n, d)
        results["ceiling"] = fresh(lambda w: scenarios.ceiling(w, n, d))
        results["sustained_postgresql"] = fresh(
            lambda w: scenarios.ingest("postgresql", w, n, args.sustained_rate, args.sustained)
        )
        results["sqlite_flat_out"] = fresh(lambda w: scenarios.ingest("sqlite", w, n, 0, d))
        results["sqlite_paced_10k"] = fresh(lambda w: scenarios.ingest("sqlite", w, n, 10000, d))
        results["replicas"] = fresh(lambda w: scenarios.replicas(w, n, d))
        for role in ("collector", "all"):
            results[f"memory_{role}"] = fresh(
                lambda w, r=role: scenarios.memory_under_load(w, r, n, 10000, d)  # type: ignore[misc]
            )
        results["idle"] = fresh(lambda w: scenarios.idle_fleet(w, 10_000, 5_000, 30))
        results["bigtable"] = fresh(lambda w: scenarios.big_table(w, args.rows))
        flat = results["paced_postgresql"][-1]["persisted_rate"]
        results["ratio_to_bare_subscriber"] = round(flat / results["ceiling"]["received_rate"], 2)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results["paced_postgresql"], results["ceiling"])
        print(f"wrote {RESULTS / 'results.json'} and {PLOT}")


if __name__ == "__main__":
    main()
