"""create_app is the one place that fills the tables the app runs on: each table holds exactly what it should."""

from __future__ import annotations

from flask import Flask

from app import jobs
from app.core import inbox
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
from handlers import amo_jobs, b24_jobs


def test_every_effect_kind_is_one_registered_function(app: Flask):
    assert effects.EFFECT_KINDS == {
        "move": effects.move,
        "assign": effects.assign,
        "notify": effects.notify,
        "update": effects.update,
        "qa_task": guard.create_qa_task,
        "complete_task": guard.complete_qa_task,
        "complete_todo": guard.complete_callback_todo,
        "todo": review.carry_out_todo,
        "callback_task": taskcontrol.create_callback_task,
        "amo_note": amo_jobs.write_note,
    }


def test_the_guard_applies_its_move_rules_once_however_many_apps_are_built(app: Flask):
    from app import create_app

    create_app({"PERIODIC_JOBS": (), "DATABASE_URL": app.config["DATABASE_URL"]})
    assert guard.PROCESS_MOVE_RULES == [
        requirements.stage_requirements_rule,
        postpone.postpone_rule,
        taskcontrol.forward_move_rule,
    ]
    assert guard.FIRST_SEEN_RULES == [requirements.first_seen_rule, postpone.first_seen_rule]
    assert stages.PIPELINE_HOOKS == [postpone.adopt_hook]
    assert reports.SUMMARY_LINES == [recovery.summary_line, exchange.summary_line]


def test_every_stored_call_kind_has_its_processor(app: Flask):
    deal_events = ("ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY", "ONCRMDEALDELETE")
    assert inbox.PROCESSORS == {
        ("b24", "ONAPPUNINSTALL"): b24_jobs.process_uninstall,
        ("b24", "ONAPPUPDATE"): b24_jobs.process_update,
        ("b24", "robot"): b24_jobs.process_robot,
        **{("b24", event): b24_jobs.process_deal_event for event in deal_events},
        ("amo", "lead"): amo_jobs.process_lead,
        ("amo", "lead_delete"): amo_jobs.process_lead_delete,
        ("amo", "dp_robot"): amo_jobs.process_dp_robot,
    }
    # Kinds whose waiting rows a deal event's job decides with it (a deletion is always decided alone).
    assert inbox.GROUP_KINDS == {"b24": deal_events[:3], "amo": ("lead",)}


def test_the_robots_are_the_apps_three(app: Flask):
    assert robots.REGISTRY == {
        robot.code: robot
        for robot in (exchange.PUT_ON_EXCHANGE_ROBOT, taskcontrol.CHECK_TASKS_ROBOT, taskcontrol.CALLBACK_ROBOT)
    }
    assert robots.REGISTRY["rc_put_on_exchange"].handler is exchange.robot_put_on_exchange


def test_the_domain_gets_its_crm_client_from_the_adapters_factory(app: Flask):
    assert port._factory == [factory.client_for]


def test_the_production_app_schedules_every_periodic_job_by_function(tmp_path):
    from app import create_app

    production = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert production.config["PERIODIC_JOBS"] == jobs.PERIODIC_JOBS
    assert all(callable(job.func) for job in jobs.PERIODIC_JOBS)
    assert {job.name for job in jobs.PERIODIC_JOBS} == {
        "heartbeat",
        "inbox-sweep",
        "inbox-purge",
        "reconcile",
        "penalty-notices",
        "scheduled-reports",
        "exchange-idle",
        "taskcontrol",
        "postpone-returns",
        "abc-idle",
    }


def test_the_blueprints_and_commands_are_registered(app: Flask):
    assert {"b24", "amocrm", "web", "api", "health"} <= set(app.blueprints)
    assert {"worker", "inbox", "settings", "db-upgrade", "db-downgrade"} <= set(app.cli.commands)


def test_every_job_the_app_queues_is_an_entry_point_of_app_jobs():
    """RQ knows one module by name: each enqueue names "app.jobs.<function>", and the function exists."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    queued: list[tuple[str, str]] = []
    for package in ("app", "handlers", "installers"):
        for path in (root / package).rglob("*.py"):
            if path == root / "app" / "core" / "queue.py":
                continue  # the queue module's own helpers pass their caller's function on
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name not in ("enqueue", "enqueue_unique", "replace_scheduled") or len(node.args) < 2:
                    continue
                target = node.args[1]
                where = f"{path.relative_to(root)}:{node.lineno}"
                assert isinstance(target, ast.Constant) and isinstance(target.value, str), where
                queued.append((where, target.value))
    assert len(queued) >= 10
    for where, dotted in queued:
        module, _, function = dotted.rpartition(".")
        assert module == "app.jobs", where
        assert callable(getattr(jobs, function, None)), where
