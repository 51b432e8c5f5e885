"""Pages shown inside the CRM's iframe and their static assets."""

from __future__ import annotations

from flask import Blueprint, Flask, has_request_context, request

from app.core import i18n
from app.web import page_strings  # noqa: F401  (registers its strings)

i18n.register(
    {
        "frame_open_app": (
            "Открыть приложение: очередь ОКК, биржа, отчёты, настройки",
            "Open the app: QA queue, exchange, reports, settings",
        ),
        "frame_open_reports": ("Открыть в отчётах", "Open in reports"),
        "date_placeholder": ("ДД.ММ.ГГГГ", "DD.MM.YYYY"),
        "datetime_placeholder": ("ДД.ММ.ГГГГ ЧЧ:ММ", "DD.MM.YYYY HH:MM"),
        "date_invalid": (
            "Введите дату в виде ДД.ММ.ГГГГ, например 08.12.2026.",
            "Enter the date as DD.MM.YYYY, e.g. 08.12.2026.",
        ),
        "datetime_invalid": (
            "Введите дату и время в виде ДД.ММ.ГГГГ ЧЧ:ММ, например 08.12.2026 18:48.",
            "Enter the date and time as DD.MM.YYYY HH:MM, e.g. 08.12.2026 18:48.",
        ),
        "date_pick": ("Выбрать в календаре", "Pick on a calendar"),
    }
)

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/rc")


def crm_of_page() -> dict[str, str]:
    """`rc_crm` for the templates: the CRM whose frame shows the page (its body class; BX24.js only in Bitrix24)."""
    amocrm = has_request_context() and request.path.startswith("/amocrm/")
    return {"rc_crm": "amocrm" if amocrm else "bitrix24"}


def init_app(app: Flask) -> None:
    """Register templates and static assets."""
    from app.web import (
        api,
        errors,
        exchange_api,
        playbook_api,
        postpone_api,
        reasons_api,
        reports_api,
        requirements_api,
        review_api,
        sandbox_proxy,
        taskcontrol_api,
        timezone_api,
    )

    app.register_blueprint(bp)
    app.context_processor(crm_of_page)
    app.register_blueprint(api.bp)
    app.register_blueprint(reports_api.bp)
    app.register_blueprint(exchange_api.bp)
    app.register_blueprint(review_api.bp)
    app.register_blueprint(taskcontrol_api.bp)
    app.register_blueprint(requirements_api.bp)
    app.register_blueprint(reasons_api.bp)
    app.register_blueprint(timezone_api.bp)
    app.register_blueprint(playbook_api.bp)
    app.register_blueprint(postpone_api.bp)
    errors.install(
        app,
        api.bp,
        reports_api.bp,
        exchange_api.bp,
        review_api.bp,
        taskcontrol_api.bp,
        requirements_api.bp,
        reasons_api.bp,
        timezone_api.bp,
        playbook_api.bp,
        postpone_api.bp,
    )
    sandbox_proxy.init_app(app)
