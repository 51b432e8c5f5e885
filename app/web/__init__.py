"""Pages shown inside the CRM's iframe and their static assets."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/rc")


def init_app(app: Flask) -> None:
    """Register templates and static assets."""
    from app.web import api, errors, exchange_api, reports_api, review_api, sandbox_proxy, taskcontrol_api

    app.register_blueprint(bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(reports_api.bp)
    app.register_blueprint(exchange_api.bp)
    app.register_blueprint(review_api.bp)
    app.register_blueprint(taskcontrol_api.bp)
    errors.install(app, api.bp, reports_api.bp, exchange_api.bp, review_api.bp, taskcontrol_api.bp)
    sandbox_proxy.init_app(app)
