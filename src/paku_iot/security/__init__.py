"""Accountability and onboarding: named admin tokens, the audit log, claim codes."""
