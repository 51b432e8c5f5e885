"""Idempotent install / repair / uninstall per CRM."""
