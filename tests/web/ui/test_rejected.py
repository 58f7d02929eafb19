"""What was refused, on the dashboard: devices publish invalid messages through the real broker,
and the device page and the fleet-wide page show them (time, topic, reason, the payload's
start, escaped), counted by reason, newest first, each linked to its device."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from paku_iot.server.service import Service
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import IngestBatch, RejectedRecord
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.ui import sign_in

ROW = re.compile(r'<tr data-rejected-id="(\d+)">')
SCRIPT = '<script>alert("pwned")</script>'
ESCAPED_SCRIPT = "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;"


def table(page: str, table_id: str) -> str:
    """One table of a page, so that what another part shows does not count."""
    match = re.search(rf'<table id="{table_id}".*?</table>', page, re.DOTALL)
    assert match, f"no table {table_id} on the page"
    return match.group(0)


def count_row(page: str, reason: str) -> tuple[int, int]:
    match = re.search(
        rf'<tr data-reason="{reason}">.*?<td class="num">(\d+)</td>\s*<td class="num">(\d+)</td>',
        page,
        re.DOTALL,
    )
    assert match, f"no count for {reason}"
    return int(match.group(1)), int(match.group(2))


async def publish_refused_messages(service: Service, broker: Broker) -> None:
    """Two devices, six messages the broker takes and the collector refuses."""
    noisy = await service.registry.provision(model="m", device_id="noisy-01")
    quiet = await service.registry.provision(model="m", device_id="quiet-01")
    device = await broker.device("noisy-01", noisy.password).connect()
    other = await broker.device("quiet-01", quiet.password).connect()
    sent = [
        # A clock not yet set (seconds since boot: 1970)
        (device, "paku/noisy-01/telemetry", '{"ts": 12, "temp": 21.5}'),
        (device, "paku/noisy-01/telemetry", '{"ts": 13, "temp": 21.6}'),
        (device, "paku/noisy-01/telemetry", SCRIPT),
        (device, "paku/noisy-01/event", '{"press": "long"}'),  # an event without a name
        (other, "paku/quiet-01/telemetry", '{"ts": 14}'),
        (other, "paku/quiet-01/telemetry", "[1, 2]"),
    ]
    for client, topic, payload in sent:
        assert await client.publish(topic, payload) == 0
    await device.disconnect()
    await other.disconnect()

    async def all_stored() -> None:
        assert len(await service.history.rejected(limit=10)) == len(sent)

    await eventually(all_stored)


async def test_a_devices_page_shows_its_rejected_messages_escaped(
    ui: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    await publish_refused_messages(service, broker)
    await sign_in(ui)
    page = await ui.get("/ui/devices/noisy-01")
    assert page.status_code == 200
    rejected = table(page.text, "device-rejected")
    assert len(ROW.findall(rejected)) == 4  # its own, not quiet-01's
    assert "quiet-01" not in rejected
    assert "paku/noisy-01/telemetry" in rejected
    assert "paku/noisy-01/event" in rejected
    assert '<span class="reason">invalid_ts</span>' in rejected
    assert "is outside 2000-2199: is the device&#39;s clock set" in rejected  # it says why
    assert '<span class="reason">invalid_topic</span>' in rejected
    assert "{&#34;ts&#34;: 12, &#34;temp&#34;: 21.5}" in rejected  # the payload's start
    # A payload is shown as text, never as markup.
    assert ESCAPED_SCRIPT in rejected
    assert SCRIPT not in page.text
    # Newest first: the nameless event was the device's last message.
    assert rejected.index("paku/noisy-01/event") < rejected.index("&#34;ts&#34;: 12,")

    # At the top of the page, the latest one, leading down to the list.
    assert re.search(
        r'<dd id="last-rejected"><a href="#rejected-heading">invalid_topic</a>, <time', page.text
    )
    # The live regions the page refreshes carry them too.
    state = await ui.get("/ui/devices/noisy-01/live", params={"part": "state"})
    assert '<a href="#rejected-heading">invalid_topic</a>' in state.text
    live = await ui.get("/ui/devices/noisy-01/live", params={"part": "activity"})
    assert len(ROW.findall(table(live.text, "device-rejected"))) == 4
    assert ESCAPED_SCRIPT in live.text
    assert SCRIPT not in live.text

    quiet = await ui.get("/ui/devices/quiet-01")
    assert len(ROW.findall(table(quiet.text, "device-rejected"))) == 2
    assert '<a href="#rejected-heading">not_object</a>' in quiet.text
    await service.registry.provision(model="m", device_id="silent-01")
    silent = await ui.get("/ui/devices/silent-01")
    assert '<dd id="last-rejected">nothing</dd>' in silent.text
    assert "Nothing rejected." in table(silent.text, "device-rejected")


async def test_the_fleet_page_counts_rejections_by_reason_and_links_each_device(
    ui: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    await publish_refused_messages(service, broker)
    await sign_in(ui)
    page = await ui.get("/ui/rejected")
    assert page.status_code == 200
    counts = table(page.text, "reason-counts")
    assert count_row(counts, "invalid_ts") == (3, 2)  # 3 messages from 2 devices
    assert count_row(counts, "invalid_json") == (1, 1)
    assert count_row(counts, "invalid_topic") == (1, 1)
    assert count_row(counts, "not_object") == (1, 1)
    # The most frequent reason first; each links to its own list.
    assert re.findall(r'data-reason="([a-z_]+)"', counts)[0] == "invalid_ts"
    assert 'href="/ui/rejected?reason=invalid_ts"' in counts

    listing = table(page.text, "rejected")
    ids = [int(i) for i in ROW.findall(listing)]
    assert len(ids) == 6
    assert ids == sorted(ids, reverse=True)  # newest first
    assert '<a href="/ui/devices/noisy-01">noisy-01</a>' in listing
    assert '<a href="/ui/devices/quiet-01">quiet-01</a>' in listing
    assert ESCAPED_SCRIPT in listing
    assert SCRIPT not in page.text
    assert 'href="/ui/rejected" aria-current="page"' in page.text  # in the main navigation

    only_ts = await ui.get("/ui/rejected", params={"reason": "invalid_ts"})
    filtered = table(only_ts.text, "rejected")
    assert len(ROW.findall(filtered)) == 3
    assert filtered.count('<span class="reason">') == 3
    assert filtered.count('<span class="reason">invalid_ts</span>') == 3
    assert "Show every reason" in only_ts.text
    none = await ui.get("/ui/rejected", params={"reason": "oversize"})
    assert "No rejected messages with this reason." in none.text
    assert (await ui.get("/ui/rejected", params={"reason": "<b>"})).status_code == 422


async def test_the_fleet_page_pages_back_through_older_rejections(
    ui: httpx.AsyncClient, service: Service
) -> None:
    now = datetime.now(UTC)
    rows = [
        RejectedRecord(
            received_at=now - timedelta(days=2, seconds=n),  # older than the counts' day
            topic="paku/old-01/telemetry",
            device_id="old-01",
            reason="invalid_json",
            detail="payload is not JSON",
            payload=f"junk {n}".encode(),
            payload_size=6,
        )
        for n in range(55)
    ]
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(rejected=rows))
    await sign_in(ui)
    first = await ui.get("/ui/rejected")
    assert "Nothing rejected in the last 24 hours." in first.text
    ids = [int(i) for i in ROW.findall(table(first.text, "rejected"))]
    assert len(ids) == 50
    older = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert older, "no link to older rejections"
    assert older.group(1) == f"/ui/rejected?before={ids[-1]}"
    second = await ui.get(older.group(1))
    rest = [int(i) for i in ROW.findall(table(second.text, "rejected"))]
    assert len(rest) == 5
    assert max(rest) < min(ids)
    assert 'rel="next"' not in second.text
    assert 'href="/ui/rejected">&larr; Newest</a>' in second.text
