"""Alerts (issue 18): rules evaluated against what devices send, and their notifications.

`rules` validates rules; `service` serves rules and alerts (acknowledge, silence, the
delivery log); `evaluate` decides in memory when an alert opens or resolves; `payloads`,
`signing` and `sender` make and send the notifications; `outbox` delivers them from the
database with retries. All of it builds on one store (`storage.alerts`)."""
