from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic.alias_generators import to_camel

from paku_iot.exceptions import InvalidInput
from paku_iot.security.roles import Permission
from paku_iot.storage.records import AlertState
from paku_iot.web.api.alert_schemas import (
    Alert,
    AlertPage,
    AlertRule,
    AlertRuleCreate,
    AlertRulePage,
    AlertRuleUpdate,
    Delivery,
    DeliveryList,
    Silence,
)
from paku_iot.web.api.auth import Actor, needs
from paku_iot.web.api.cursors import decode_time_cursor, decode_time_text_cursor, encode_cursor
from paku_iot.web.api.responses import ROLE_LIMITED, Responses, error
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["alerts"], responses=ROLE_LIMITED)
Limit = Annotated[int, Query(ge=1, le=1000)]
# Within BIGINT: a larger number is no alert, not a database error.
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
NO_RULE: Responses = {404: error("No alert rule with this id (`alert_rule_not_found`).")}
NO_ALERT: Responses = {404: error("No alert with this id (`alert_not_found`).")}
NO_RULE_OR_DEVICE: Responses = {
    404: error(
        "No alert rule with this id (`alert_rule_not_found`), or `deviceId` names no "
        "device (`device_not_found`)."
    )
}


def _alert_position(cursor: str) -> tuple[datetime, int]:
    at, alert_id = decode_time_cursor(cursor)
    if not 0 < alert_id < 2**63:  # a forged cursor: no database error for it
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor")
    return at, alert_id


@router.post(
    "/alert-rules",
    status_code=status.HTTP_201_CREATED,
    response_model=AlertRule,
    responses={404: error("`deviceId` names no device (`device_not_found`).")},
    dependencies=[needs(Permission.ALERT_RULES_WRITE)],
)
async def create_alert_rule(body: AlertRuleCreate, service: ServiceDep, actor: Actor) -> AlertRule:
    """Make a rule. Its kind's own fields: `field`, `above`, `below`, `forSeconds` for
    `threshold`; `silenceSeconds` for `offline`; `perMinute` for `rejected_rate`. A
    destination's `secret` is kept to sign webhooks and never shown again."""
    rule = await service.alert_rules.create(body.spec())
    await service.audit.record(
        actor, "alert_rule.create", rule.id, {"name": rule.name, "kind": str(rule.kind)}
    )
    return AlertRule.of(rule)


@router.get(
    "/alert-rules", response_model=AlertRulePage, dependencies=[needs(Permission.ALERTS_READ)]
)
async def list_alert_rules(
    service: ServiceDep, limit: Limit = 100, cursor: str | None = None
) -> AlertRulePage:
    """Rules in creation order; pass `next` back as `cursor` for the next page."""
    after = decode_time_text_cursor(cursor) if cursor else None
    rules = await service.alert_rules.page(limit=limit, after=after)
    last = rules[-1] if len(rules) == limit else None
    return AlertRulePage(
        items=[AlertRule.of(r) for r in rules],
        next=encode_cursor(last.created_at, last.id) if last else None,
    )


@router.get(
    "/alert-rules/{rule_id}",
    response_model=AlertRule,
    responses=NO_RULE,
    dependencies=[needs(Permission.ALERTS_READ)],
)
async def get_alert_rule(rule_id: str, service: ServiceDep) -> AlertRule:
    return AlertRule.of(await service.alert_rules.get(rule_id))


@router.patch(
    "/alert-rules/{rule_id}",
    response_model=AlertRule,
    responses=NO_RULE_OR_DEVICE,
    dependencies=[needs(Permission.ALERT_RULES_WRITE)],
)
async def update_alert_rule(
    rule_id: str, body: AlertRuleUpdate, service: ServiceDep, actor: Actor
) -> AlertRule:
    """Change the fields sent (null clears one); the rule must be valid as a whole after."""
    rule = await service.alert_rules.update(rule_id, body.changes())
    # The fields that changed (as the API names them), never their values: a destination
    # may carry a secret.
    fields = sorted(to_camel(name) for name in body.model_fields_set)
    await service.audit.record(actor, "alert_rule.update", rule_id, {"fields": fields})
    return AlertRule.of(rule)


@router.delete(
    "/alert-rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NO_RULE,
    dependencies=[needs(Permission.ALERT_RULES_WRITE)],
)
async def delete_alert_rule(rule_id: str, service: ServiceDep, actor: Actor) -> Response:
    """Delete the rule, with its alerts and their delivery log."""
    await service.alert_rules.delete(rule_id)
    await service.audit.record(actor, "alert_rule.delete", rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/alerts", response_model=AlertPage, dependencies=[needs(Permission.ALERTS_READ)])
async def list_alerts(
    service: ServiceDep,
    device_id: Annotated[str | None, Query(alias="deviceId")] = None,
    rule_id: Annotated[str | None, Query(alias="ruleId")] = None,
    state: Annotated[AlertState | None, Query()] = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> AlertPage:
    """Alerts newest first (by the time they opened), optionally of one device, one rule,
    or one state; pass `next` back as `cursor` for the next page."""
    views = await service.alerts.page(
        limit=limit,
        before=_alert_position(cursor) if cursor else None,
        device_id=device_id,
        rule_id=rule_id,
        state=state,
    )
    last = views[-1].alert if len(views) == limit else None
    return AlertPage(
        items=[Alert.of(v) for v in views],
        next=encode_cursor(last.opened_at, last.id) if last else None,
    )


@router.get(
    "/alerts/{alert_id}",
    response_model=Alert,
    responses=NO_ALERT,
    dependencies=[needs(Permission.ALERTS_READ)],
)
async def get_alert(alert_id: AlertId, service: ServiceDep) -> Alert:
    return Alert.of(await service.alerts.get(alert_id))


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=Alert,
    responses=NO_ALERT,
    dependencies=[needs(Permission.ALERTS_HANDLE)],
)
async def acknowledge_alert(alert_id: AlertId, service: ServiceDep, actor: Actor) -> Alert:
    """Say someone is on it. The first acknowledgement (who, when) stands."""
    view = await service.alerts.acknowledge(alert_id, actor.actor)
    await service.audit.record(actor, "alert.acknowledge", f"alert:{alert_id}")
    return Alert.of(view)


@router.post(
    "/alerts/{alert_id}/silence",
    response_model=Alert,
    responses=NO_ALERT,
    dependencies=[needs(Permission.ALERTS_HANDLE)],
)
async def silence_alert(
    alert_id: AlertId, body: Silence, service: ServiceDep, actor: Actor
) -> Alert:
    """No notifications for `seconds` from now, for this alert and for the next ones of its
    rule and device while the silence lasts. Alerts still open and resolve."""
    view = await service.alerts.silence(alert_id, body.seconds)
    await service.audit.record(
        actor, "alert.silence", f"alert:{alert_id}", {"seconds": body.seconds}
    )
    return Alert.of(view)


@router.get(
    "/alerts/{alert_id}/deliveries",
    response_model=DeliveryList,
    responses=NO_ALERT,
    dependencies=[needs(Permission.ALERTS_READ)],
)
async def alert_deliveries(alert_id: AlertId, service: ServiceDep) -> DeliveryList:
    """The alert's notifications, one per destination and event, each with every attempt."""
    deliveries = await service.alerts.deliveries(alert_id)
    return DeliveryList(items=[Delivery.of(d, attempts) for d, attempts in deliveries])
