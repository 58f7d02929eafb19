"""Which devices a bulk command or configuration goes to: given ids, a model, or a tag."""

from __future__ import annotations

from paku_iot.exceptions import InvalidInput, NotFound
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import DeviceRecord

_PAGE = 1000


async def target_devices(
    devices: DeviceStore,
    *,
    device_ids: list[str] | None = None,
    model: str | None = None,
    tag: str | None = None,
) -> list[DeviceRecord]:
    """Exactly one of: the given ids (each must exist; in the order given, duplicates
    dropped), every device of a model, or every device with a tag (possibly none). A model
    or tag reaches devices in service only: a decommissioned one cannot connect to act."""
    if sum(target is not None for target in (device_ids, model, tag)) != 1:
        raise InvalidInput("give exactly one of deviceIds, model or tag")
    if device_ids is not None:
        wanted = list(dict.fromkeys(device_ids))
        known = {d.id: d for d in await devices.many(wanted)}
        unknown = [d for d in wanted if d not in known]
        if unknown:
            raise NotFound(f"no such devices: {', '.join(unknown[:20])}", code="device_not_found")
        return [known[d] for d in wanted]
    found: list[DeviceRecord] = []
    after: str | None = None
    while True:
        page = await devices.page(limit=_PAGE, after_id=after, model=model, tag=tag)
        found.extend(page)
        if len(page) < _PAGE:
            return found
        after = page[-1].id
