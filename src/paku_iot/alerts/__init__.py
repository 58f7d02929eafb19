"""Alerts (issue 18): rules and their validation (`alerts.rules`), and the alerts they open,
with acknowledgement, silencing and their notifications' delivery log (`alerts.service`).
What decides when an alert opens or resolves, and what sends its notifications, build on the
same store (`storage.alerts`)."""
