"""Refusal Control: a Bitrix24 / amoCRM add-on that stops sales managers from leaking clients."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Request, jsonify
from flask.sessions import SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. Nothing connects here: databases and Redis are reached on first use."""
    app = Flask(__name__, instance_relative_config=True)
    instance_path = Path(
        (test_config or {}).get("INSTANCE_PATH") or os.environ.get("INSTANCE_PATH") or app.instance_path
    )
    app.instance_path = str(instance_path)

    from app.core.config import load_config

    app.config.from_mapping(load_config(instance_path))
    if test_config is not None:
        app.config.from_mapping(test_config)
        if "DATABASE_URL" in test_config:
            from app.core.config import normalise_database_url

            app.config["DATABASE_URL"] = normalise_database_url(test_config["DATABASE_URL"])

    from app.core import db, health, i18n, limits, logs, validation

    logs.init_app(app)
    limits.init_app(app)
    validation.init_app(app)
    db.init_app(app)
    i18n.init_app(app)
    health.init_app(app)
    _wire(app)
    _init_requests(app)
    return app


def _wire(app: Flask) -> None:
    """Fill every table the app runs on: the one place where the layers are plugged together.

    Registries are keyed, so building a second app (tests do) fills them with the same entries again.
    """
    import handlers
    from app import jobs, web
    from app.cli import db as db_cli
    from app.cli import inbox as inbox_cli
    from app.cli import settings as settings_cli
    from app.cli import worker as worker_cli
    from app.crm import factory, port
    from app.domain import (
        effects,
        exchange,
        guard,
        postpone,
        recovery,
        reports,
        requirements,
        review,
        robots,
        stages,
        taskcontrol,
    )
    from handlers import amo_jobs

    port.use_client_factory(factory.client_for)
    # Kinds of pending CRM writes (app.domain.effects): one function each.
    effects.EFFECT_KINDS.update(
        {
            "move": effects.move,
            "assign": effects.assign,
            "notify": effects.notify,
            "update": effects.update,
            "qa_task": guard.create_qa_task,
            "complete_task": guard.complete_qa_task,
            "complete_todo": guard.complete_callback_todo,
            "todo": review.carry_out_todo,
            "callback_task": taskcontrol.create_callback_task,
            amo_jobs.NOTE_EFFECT: amo_jobs.write_note,
        }
    )
    # Kinds whose effects of a group of deals go to the CRM in one packed call.
    effects.EFFECT_PACKS.update(
        {
            "qa_task": guard.create_qa_tasks,
            "complete_task": guard.complete_qa_tasks,
            "complete_todo": guard.complete_callback_todos,
        }
    )
    # The automation robots the installer registers in each CRM.
    for robot in (exchange.PUT_ON_EXCHANGE_ROBOT, taskcontrol.CHECK_TASKS_ROBOT, taskcontrol.CALLBACK_ROBOT):
        robots.register(robot)
    # Rules the guard applies to a move between working stages or to won, in order (the first that decides
    # wins): a stage's required fields, «Отложено» (reason and return date), then the next-step rule of task control.
    for rule in (requirements.stage_requirements_rule, postpone.postpone_rule, taskcontrol.forward_move_rule):
        if rule not in guard.PROCESS_MOVE_RULES:
            guard.PROCESS_MOVE_RULES.append(rule)
    # Rules for a deal first seen after install in a working or won stage (created or imported there).
    for first_seen in (requirements.first_seen_rule, postpone.first_seen_rule):
        if first_seen not in guard.FIRST_SEEN_RULES:
            guard.FIRST_SEEN_RULES.append(first_seen)
    # The stages besides Conditional refusal that a pipeline created after install gets when the app notices it.
    if postpone.adopt_hook not in stages.PIPELINE_HOOKS:
        stages.PIPELINE_HOOKS.append(postpone.adopt_hook)
    # Followers of every deal as read: a postponed deal's return date moved, a returned deal won.
    if postpone.deal_seen not in guard.SEEN_HOOKS:
        guard.SEEN_HOOKS.append(postpone.deal_seen)
    # What the scheduled summary says besides the refusals: the money saved, then the lead exchange.
    for line in (recovery.summary_line, exchange.summary_line):
        if line not in reports.SUMMARY_LINES:
            reports.SUMMARY_LINES.append(line)
    app.config.setdefault("PERIODIC_JOBS", jobs.PERIODIC_JOBS)
    # Inbox processors (which function handles which stored call) and the CRM-facing routes.
    handlers.init_app(app)
    web.init_app(app)
    # Operator commands (README "Deploying").
    for command in (
        worker_cli.worker_command,
        inbox_cli.inbox_command,
        db_cli.upgrade_command,
        db_cli.downgrade_command,
        settings_cli.settings_cli,
    ):
        app.cli.add_command(command)


class _NoCookieSessions(SecureCookieSessionInterface):
    """No cookie session is ever opened or sent.

    Our pages live in CRM iframes, where third-party cookies are unreliable: identity travels in the
    X-RC-Token header (app/core/security.py). Flask would otherwise build a signer for every request,
    webhooks included.
    """

    def open_session(self, app: Flask, request: Request) -> None:
        return None


def _init_requests(app: Flask) -> None:
    """JSON errors instead of HTML pages, no cookie sessions (request ids: app.core.logs)."""
    app.session_interface = _NoCookieSessions()

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> ResponseReturnValue:
        return jsonify(error=error.name, message=error.description), error.code or 500
