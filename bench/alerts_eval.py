"""What the alert evaluator adds to ingest (issue 18, docs/performance.md): `observe()` over
committed batches of telemetry shaped like `make bench`'s load (`{"ts", "temp", "hum", "n"}`,
1,000 devices, batches of 500), timed per record, with:

- no rules;
- 100 rules, mixed: thresholds scoped to a device (40), to a model (20) and to every device
  (10, 5 of them on a field the payload has), offline rules (10: one for every device, the
  rest per device, so every device's silence is tracked), ota_failed (10), rejected_rate (10);
- 100 threshold rules for every device on `temp`: each record meets all 100, in range;
- the same with one of them crossed on every device (an alert open on each), the worst case.

Also a tick over the 1,000 devices with the mixed rules, and the evaluator's memory per
device (tracemalloc, 10,000 devices, a dozen samples each). The collector takes about 23 µs a
message (docs/performance.md): 5% of that is about 1.1 µs.

    .venv/bin/python -m bench.alerts_eval
    .venv/bin/python -m bench.alerts_eval --records 500000
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from paku_iot.alerts.evaluate import AlertEvaluator
from paku_iot.storage.records import AlertKind, AlertRuleRecord, IngestBatch, TelemetryRecord

DEVICES = 1000
BATCH = 500
MODELS = ("boiler", "sensor", "meter", "pump")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def rule(number: int, kind: AlertKind, **fields: object) -> AlertRuleRecord:
    base: dict[str, object] = {
        "id": f"r{number}",
        "name": f"rule {number}",
        "kind": kind,
        "device_id": None,
        "model": None,
        "field": None,
        "above": None,
        "below": None,
        "for_seconds": 0.0,
        "silence_seconds": None,
        "per_minute": None,
        "destinations": (),
        "enabled": True,
        "created_at": T0,
        "updated_at": T0,
    }
    base.update(fields)
    return AlertRuleRecord(**base)  # type: ignore[arg-type]


def mixed_rules() -> list[AlertRuleRecord]:
    rules: list[AlertRuleRecord] = []
    n = 0
    for i in range(40):
        rules.append(
            rule(n, AlertKind.THRESHOLD, device_id=f"dev-{i * 25:04d}", field="temp", above=80)
        )
        n += 1
    for i in range(20):
        rules.append(rule(n, AlertKind.THRESHOLD, model=MODELS[i % 4], field="hum", below=5 + i))
        n += 1
    for i in range(10):
        field = "temp" if i < 5 else f"absent{i}.value"
        rules.append(rule(n, AlertKind.THRESHOLD, field=field, above=100 + i, for_seconds=30))
        n += 1
    rules.append(rule(n, AlertKind.OFFLINE))
    n += 1
    for i in range(9):
        rules.append(rule(n, AlertKind.OFFLINE, device_id=f"dev-{i:04d}", silence_seconds=60))
        n += 1
    for i in range(10):
        rules.append(rule(n, AlertKind.OTA_FAILED, model=MODELS[i % 4]))
        n += 1
    for i in range(10):
        rules.append(rule(n, AlertKind.REJECTED_RATE, device_id=f"dev-{i:04d}", per_minute=60))
        n += 1
    assert len(rules) == 100
    return rules


def worst_rules() -> list[AlertRuleRecord]:
    return [rule(i, AlertKind.THRESHOLD, field="temp", above=100 + i) for i in range(100)]


def worst_open_rules() -> list[AlertRuleRecord]:
    # One of the 100 is crossed by every sample (temp 21.5 > 20): every device has an alert
    # open and every record is out of that band, so all 100 rules of the field are checked.
    return [*worst_rules()[:99], rule(99, AlertKind.THRESHOLD, field="temp", above=20)]


def batches(count: int) -> list[IngestBatch]:
    out: list[IngestBatch] = []
    batch = IngestBatch()
    for n in range(count):
        when = T0 + timedelta(microseconds=200 * n)  # 5,000 msgs/s, each device every 0.2 s
        payload = {"ts": when.timestamp(), "temp": 21.5, "hum": 40, "n": n}
        batch.telemetry.append(TelemetryRecord(f"dev-{n % DEVICES:04d}", when, when, payload))
        if len(batch.telemetry) == BATCH:
            out.append(batch)
            batch = IngestBatch()
    if batch.telemetry:
        out.append(batch)
    return out


def run(rules: list[AlertRuleRecord], data: list[IngestBatch], records: int) -> float:
    models = {f"dev-{i:04d}": MODELS[i % 4] for i in range(DEVICES)}
    best = float("inf")
    for _ in range(3):
        evaluator = AlertEvaluator(rules, models)
        gc.collect()
        start = time.perf_counter()
        for batch in data:
            evaluator.observe(batch, batch.telemetry[-1].received_at)
        best = min(best, time.perf_counter() - start)
    return best / records * 1e6


def tick_cost(data: list[IngestBatch]) -> float:
    models = {f"dev-{i:04d}": MODELS[i % 4] for i in range(DEVICES)}
    evaluator = AlertEvaluator(mixed_rules(), models)
    for batch in data:
        evaluator.observe(batch, batch.telemetry[-1].received_at)
    now = data[-1].telemetry[-1].received_at + timedelta(seconds=0.5)
    evaluator.tick(now)  # learns the intervals once
    start = time.perf_counter()
    for i in range(20):
        evaluator.tick(now + timedelta(milliseconds=i))
    return (time.perf_counter() - start) / 20 * 1e3


def memory_per_device(rules: list[AlertRuleRecord], devices: int = 10_000) -> float:
    models = {f"dev-{i:04d}": MODELS[i % 4] for i in range(devices)}
    gc.collect()
    tracemalloc.start()
    evaluator = AlertEvaluator(rules, models)
    for second in range(12):
        when = T0 + timedelta(seconds=second)
        batch = IngestBatch(
            [
                TelemetryRecord(f"dev-{i:04d}", when, when, {"temp": 21.5, "hum": 40})
                for i in range(devices)
            ]
        )
        evaluator.observe(batch, when)
        del batch
    evaluator.tick(T0 + timedelta(seconds=13))
    used, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return used / devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    data = batches(args.records)
    print(
        f"observe() over {args.records:,} telemetry records, {DEVICES} devices, batches of {BATCH}"
    )
    base = run([], data, args.records)
    print(f"  {'0 rules':<34} {base:6.3f} µs/record")
    for name, rules in (
        ("100 rules, mixed", mixed_rules()),
        ("100 rules on temp, all devices", worst_rules()),
        ("the same, one open on every device", worst_open_rules()),
    ):
        cost = run(rules, data, args.records)
        print(f"  {name:<34} {cost:6.3f} µs/record (+{cost - base:.3f})")
    print(f"tick() with the mixed rules over {DEVICES} devices: {tick_cost(data):.3f} ms")
    print(f"memory, mixed rules: {memory_per_device(mixed_rules()):.0f} bytes a device")


if __name__ == "__main__":
    main()
