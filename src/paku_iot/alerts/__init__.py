"""Alerts: rules evaluated against what devices send, and their notifications."""
