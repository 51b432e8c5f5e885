"""Inbound calls from the CRMs: parse, verify, persist, enqueue."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the CRM-facing blueprints."""
    from handlers import amo_jobs, amocrm, b24_jobs, b24_review, bitrix24

    b24_jobs.register_processors()
    amo_jobs.register_processors()
    app.register_blueprint(bitrix24.bp)
    app.register_blueprint(b24_review.bp)
    app.register_blueprint(amocrm.bp)
