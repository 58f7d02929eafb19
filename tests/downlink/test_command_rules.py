"""The command rules are the domain's, not only the HTTP schema's: `CommandService.create`
refuses a bad name or TTL whoever calls it (the API, the dashboard, a script), and stores
nothing for it. Runs against a real service on both databases."""

from __future__ import annotations

import pytest

from paku_iot.downlink.commands import NewCommand
from paku_iot.exceptions import InvalidInput
from paku_iot.server.service import Service

# Each breaks the name rule a different way: MQTT wildcards and a level separator, a space,
# nothing at all, one character too many, a character outside ASCII.
BAD_NAMES = ["bad name/#", "a/b", "+", "", "x" * 65, "caf\u00e9"]


async def test_create_refuses_an_invalid_command_name(service: Service) -> None:
    await service.registry.provision(model="lamp", device_id="rules-1")
    for name in BAD_NAMES:
        with pytest.raises(InvalidInput, match="command name") as refused:
            await service.commands.create(["rules-1"], NewCommand(name))
        assert refused.value.code == "invalid_input"
    assert await service.commands.page("rules-1", limit=100) == []


async def test_create_refuses_a_ttl_out_of_bounds(service: Service) -> None:
    await service.registry.provision(model="lamp", device_id="rules-2")
    for ttl in (0, -1, 30 * 24 * 3600 + 1):
        with pytest.raises(InvalidInput, match="ttlSeconds"):
            await service.commands.create(["rules-2"], NewCommand("reboot", ttl_seconds=ttl))
    assert await service.commands.page("rules-2", limit=100) == []


async def test_create_accepts_names_at_the_edges_of_the_rule(service: Service) -> None:
    await service.registry.provision(model="lamp", device_id="rules-3")
    names = ["a", "x" * 64, "Set_level.v2-b"]
    for name in names:
        [made] = await service.commands.create(["rules-3"], NewCommand(name, ttl_seconds=1))
        assert made.name == name
    stored = await service.commands.page("rules-3", limit=100)
    assert sorted(c.name for c in stored) == sorted(names)
