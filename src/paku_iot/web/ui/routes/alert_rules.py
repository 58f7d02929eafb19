"""The alert rules page: every rule in a sentence, a form to make one (with one destination;
the API takes up to ten), and buttons to enable, disable or delete one. Secrets go in and
never come back out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from paku_iot.alerts.rules import DestinationSpec, RuleSpec
from paku_iot.exceptions import NotFound, PakuError
from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.storage.records import AlertKind, DestinationType
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import ActionSession, PageSession, can_do, can_see
from paku_iot.web.ui.rendering import render
from paku_iot.web.ui.sessions import Session

router = APIRouter()
PAGE_SIZE = 100
# What the form keeps between tries: every field but the secret, which is never rendered.
FORM_FIELDS = (
    "name",
    "kind",
    "scope",
    "model",
    "tag",
    "device_id",
    "field",
    "above",
    "below",
    "for_seconds",
    "silence_seconds",
    "per_minute",
    "dest_type",
    "dest_url",
)
EMPTY_FORM = dict.fromkeys(FORM_FIELDS, "") | {
    "kind": "threshold",
    "scope": "all",
    "dest_type": "webhook",
}
Short = Annotated[str, Form(max_length=200)]


def _float(text: str, name: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number") from None


def _spec(form: dict[str, str], secret: str) -> RuleSpec:
    """The rule the form describes. Only the chosen kind's and scope's fields count: the
    form shows them all (it works without script), and the others may hold leftovers."""
    kind = form["kind"]
    threshold = kind == AlertKind.THRESHOLD
    per_minute = form["per_minute"].strip() if kind == AlertKind.REJECTED_RATE else ""
    if per_minute and not (per_minute.isascii() and per_minute.isdigit()):
        raise ValueError("Rejected messages a minute must be a whole number")
    silence = form["silence_seconds"] if kind == AlertKind.OFFLINE else ""
    destination = DestinationSpec(form["dest_type"], form["dest_url"].strip(), secret or None)
    return RuleSpec(
        name=form["name"],
        kind=kind,
        model=form["model"].strip() if form["scope"] == "model" else None,
        tag=form["tag"].strip() if form["scope"] == "tag" else None,
        device_id=form["device_id"].strip() if form["scope"] == "device" else None,
        field=(form["field"].strip() or None) if threshold else None,
        above=_float(form["above"], "Above") if threshold else None,
        below=_float(form["below"], "Below") if threshold else None,
        for_seconds=(_float(form["for_seconds"], "For (seconds)") or 0) if threshold else 0,
        silence_seconds=_float(silence, "Silent for (seconds)"),
        per_minute=int(per_minute) if per_minute else None,
        destinations=(destination,),
    )


async def _rules_page(
    request: Request,
    session: Session,
    service: Service,
    *,
    after: str = "",
    status_code: int = 200,
    **context: object,
) -> HTMLResponse:
    position = None
    if after:
        try:
            anchor = await service.alert_rules.get(after)
            position = (anchor.created_at, anchor.id)
        except NotFound:
            position = None  # deleted meanwhile: start again from the first
    rows = await service.alert_rules.page(limit=PAGE_SIZE + 1, after=position)
    context.setdefault("form", EMPTY_FORM)
    return render(
        request,
        "alert_rules.html",
        session,
        status_code=status_code,
        title="Alert rules",
        rules=rows[:PAGE_SIZE],
        next_link=f"/ui/alert-rules?after={rows[PAGE_SIZE - 1].id}"
        if len(rows) > PAGE_SIZE
        else None,
        first_link="/ui/alert-rules" if after else None,
        open_counts=await _open_counts(service),
        kinds=[k.value for k in AlertKind],
        destination_types=[t.value for t in DestinationType],
        **context,
    )


async def _open_counts(service: Service) -> dict[str, int]:
    return await service.alerts.open_counts_by_rule()


@router.get(
    "/ui/alert-rules", response_class=HTMLResponse, dependencies=[can_see(Permission.ALERTS_READ)]
)
async def alert_rules_page(
    request: Request,
    session: PageSession,
    service: ServiceDep,
    after: Annotated[str, Query(max_length=64)] = "",
    notice: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    notices = {"created": "Rule created.", "deleted": "Rule deleted.", "changed": "Rule changed."}
    return await _rules_page(request, session, service, after=after, notice=notices.get(notice))


@router.post(
    "/ui/alert-rules",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.ALERT_RULES_WRITE)],
)
async def create_rule(
    request: Request,
    session: ActionSession,
    service: ServiceDep,
    name: Short = "",
    kind: Annotated[str, Form(max_length=32)] = "threshold",
    scope: Annotated[Literal["all", "model", "tag", "device"], Form()] = "all",
    model: Short = "",
    tag: Short = "",
    device_id: Short = "",
    field: Short = "",
    above: Short = "",
    below: Short = "",
    for_seconds: Short = "",
    silence_seconds: Short = "",
    per_minute: Short = "",
    dest_type: Annotated[str, Form(max_length=32)] = "webhook",
    dest_url: Annotated[str, Form(max_length=2000)] = "",
    dest_secret: Short = "",
) -> Response:
    form = {
        "name": name,
        "kind": kind,
        "scope": scope,
        "model": model,
        "tag": tag,
        "device_id": device_id,
        "field": field,
        "above": above,
        "below": below,
        "for_seconds": for_seconds,
        "silence_seconds": silence_seconds,
        "per_minute": per_minute,
        "dest_type": dest_type,
        "dest_url": dest_url,
    }
    try:
        rule = await service.alert_rules.create(_spec(form, dest_secret))
    except (ValueError, PakuError) as exc:
        return await _rules_page(
            request,
            session,
            service,
            status_code=exc.http_status if isinstance(exc, PakuError) else 422,
            form=form,
            form_error=exc.message if isinstance(exc, PakuError) else str(exc),
            secret_dropped=bool(dest_secret),
        )
    await service.audit.record(
        session.identity,
        "alert_rule.create",
        rule.id,
        {"name": rule.name, "kind": str(rule.kind), "via": "ui"},
    )
    return RedirectResponse(f"/ui/alert-rules?notice=created#rule-{rule.id}", status_code=303)


@router.post(
    "/ui/alert-rules/{rule_id}/enabled", dependencies=[can_do(Permission.ALERT_RULES_WRITE)]
)
async def set_enabled(
    rule_id: str,
    session: ActionSession,
    service: ServiceDep,
    enabled: Annotated[Literal["true", "false"], Form()],
) -> Response:
    await service.alert_rules.set_enabled(rule_id, enabled == "true")
    # As the API records a change: the fields, never values (a destination holds a secret).
    await service.audit.record(
        session.identity, "alert_rule.update", rule_id, {"fields": ["enabled"], "via": "ui"}
    )
    return RedirectResponse(f"/ui/alert-rules?notice=changed#rule-{rule_id}", status_code=303)


@router.post(
    "/ui/alert-rules/{rule_id}/delete", dependencies=[can_do(Permission.ALERT_RULES_WRITE)]
)
async def delete_rule(rule_id: str, session: ActionSession, service: ServiceDep) -> Response:
    await service.alert_rules.delete(rule_id)
    await service.audit.record(session.identity, "alert_rule.delete", rule_id, {"via": "ui"})
    return RedirectResponse("/ui/alert-rules?notice=deleted", status_code=303)
