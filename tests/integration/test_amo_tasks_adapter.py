"""The amoCRM adapter's task-control reads against the sandbox account: the filters it sends, 204 empty
pages, paging past 250, tasks before leads, closed and incoming leads left out, the 7 req/s limit."""

import time
from typing import Any

import pytest

from app.crm.amocrm import AmoCrm
from app.crm.port import Deal, Notice, Task
from sandbox.amocrm import api
from tests.integration.amo import HEAD, MANAGER, OTHER_MANAGER, QA, Amo, new_lead

WON, LOST = 142, 143
DAY = 86400


def crm(amo: Amo) -> AmoCrm:
    return AmoCrm(amo.our_portal())


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any], int]]:
    """Every API call the sandbox answered: (method, path, decoded query, status)."""
    calls: list[tuple[str, str, dict[str, Any], int]] = []
    handle = api.handle

    def recording(sandbox, host, authorization, method, path, query, body):
        try:
            status, answer = handle(sandbox, host, authorization, method, path, query, body)
        except api.ApiError as error:
            calls.append((method, path, query, error.status))
            raise
        calls.append((method, path, query, status))
        return status, answer

    monkeypatch.setattr(api, "handle", recording)
    return calls


def task_gets(sent: list[tuple[str, str, dict[str, Any], int]]) -> list[tuple[dict[str, Any], int]]:
    return [(query, status) for method, path, query, status in sent if (method, path) == ("GET", "/api/v4/tasks")]


def test_open_deal_tasks_sends_the_documented_filters_and_keeps_only_the_leads_open_tasks(amo_installed: Amo, sent):
    amo = amo_installed
    lead = new_lead(amo)
    other = new_lead(amo)
    head = amo.sandbox.act(amo.account, HEAD)
    now = time.time()
    late = head.add_task(lead, "Отправить КП\nс ценами на станки", now - 2 * DAY, responsible=MANAGER)
    later = head.add_task(lead, "Перезвонить", now + DAY, responsible=OTHER_MANAGER)
    done = head.add_task(lead, "Встреча", now - DAY, responsible=MANAGER)
    amo.sandbox.act(amo.account, MANAGER).complete_task(done, "Провели")
    head.add_task(other, "Чужая задача", now - DAY, responsible=MANAGER)
    head.add_task(None, "Уведомление без сделки", now - DAY, responsible=MANAGER)
    sent.clear()

    tasks = {task.id: task for task in crm(amo).open_deal_tasks(str(lead))}

    assert set(tasks) == {str(late), str(later)}
    overdue = tasks[str(late)]
    assert (overdue.title, overdue.deal_id, overdue.responsible_id, overdue.created_by) == (
        "Отправить КП",
        str(lead),
        str(MANAGER),
        str(HEAD),
    )
    assert overdue.overdue and overdue.is_open and overdue.kind == "task"
    assert overdue.deadline is not None and overdue.deadline.timestamp() == int(now - 2 * DAY)
    assert not tasks[str(later)].overdue
    [(query, status)] = task_gets(sent)
    assert status == 200
    assert query["filter"]["entity_type"] == "leads"
    assert [int(v) for v in query["filter"]["entity_id"]] == [lead]
    assert query["filter"]["is_completed"] == "0"
    assert query["limit"] == "250"


def test_a_lead_without_open_tasks_is_one_204_and_an_empty_list(amo_installed: Amo, sent):
    amo = amo_installed
    lead = new_lead(amo)
    finished = amo.sandbox.act(amo.account, MANAGER).add_task(lead, "Позвонить", time.time() + DAY)
    amo.sandbox.act(amo.account, MANAGER).complete_task(finished)
    sent.clear()
    assert crm(amo).open_deal_tasks(str(lead)) == []
    assert [status for _query, status in task_gets(sent)] == [204]


def test_open_deal_tasks_pages_past_250(amo_installed: Amo, sent):
    amo = amo_installed
    lead = new_lead(amo)
    actor = amo.sandbox.act(amo.account, MANAGER)
    for index in range(260):
        actor.add_task(lead, f"Задача {index}", time.time() + DAY)
    sent.clear()
    assert len(crm(amo).open_deal_tasks(str(lead))) == 260
    assert [(q["page"], status) for q, status in task_gets(sent)] == [("1", 200), ("2", 200)]


def test_iter_open_work_streams_every_open_lead_task_then_every_open_lead(amo_installed: Amo, sent):
    amo = amo_installed
    main, other = amo.pipelines()
    statuses = amo.statuses()
    incoming = statuses["Неразобранное"]
    working = new_lead(amo)
    second = new_lead(amo, manager=OTHER_MANAGER, status="Новая заявка", pipeline=other)
    won = new_lead(amo)
    lost = new_lead(amo, manager=OTHER_MANAGER)
    waiting = amo.sandbox.act(amo.account, MANAGER).create_lead("Заявка с сайта", status_id=incoming)
    amo.sandbox.act(amo.account, MANAGER).move_lead(won, WON)
    amo.sandbox.act(amo.account, HEAD).move_lead(lost, LOST)
    actor = amo.sandbox.act(amo.account, HEAD)
    for index in range(251):  # more than one page of open lead tasks
        actor.add_task(second, f"Шаг {index}", time.time() + DAY, responsible=OTHER_MANAGER)
    closed = actor.add_task(working, "Закрытая", time.time() - DAY, responsible=MANAGER)
    amo.sandbox.act(amo.account, MANAGER).complete_task(closed)
    actor.add_task(None, "Без сделки", time.time() - DAY, responsible=QA)
    sent.clear()

    items = list(crm(amo).iter_open_work())

    kinds = [type(item) for item in items]
    first_deal = kinds.index(Deal)
    assert all(kind is Task for kind in kinds[:first_deal]) and all(kind is Deal for kind in kinds[first_deal:])
    tasks = [item for item in items if isinstance(item, Task)]
    assert len(tasks) == 251 and {task.deal_id for task in tasks} == {str(second)}
    deals = {item.id for item in items if isinstance(item, Deal)}
    assert deals == {str(working), str(second)}, "won, lost and Incoming leads are not open work"
    assert str(waiting) not in deals and {str(won), str(lost)}.isdisjoint(deals)
    task_pages = task_gets(sent)
    assert [(q["page"], status) for q, status in task_pages] == [("1", 200), ("2", 200)]
    assert all(q["filter"] == {"entity_type": "leads", "is_completed": "0"} for q, _status in task_pages)
    lead_pages = [(q, status) for method, path, q, status in sent if (method, path) == ("GET", "/api/v4/leads")]
    [(lead_query, _status)] = lead_pages
    sent_pairs = lead_query["filter"]["statuses"]
    sent_pairs = sent_pairs.values() if isinstance(sent_pairs, dict) else sent_pairs
    pairs = {(int(p["pipeline_id"]), int(p["status_id"])) for p in sent_pairs}
    assert (main, incoming) not in pairs and not {status for _pipeline, status in pairs} & {WON, LOST}
    assert (main, statuses["Переговоры"]) in pairs and (other, amo.statuses(other)["Новая заявка"]) in pairs
    # Only the reads the scan needs: the pipelines once, two task pages, one lead page.
    assert [(m, p) for m, p, _q, _s in sent] == [
        ("GET", "/api/v4/tasks"),
        ("GET", "/api/v4/tasks"),
        ("GET", "/api/v4/leads/pipelines"),
        ("GET", "/api/v4/leads"),
    ]


def test_iter_open_work_on_an_empty_account_stops_at_the_204s(amo_installed: Amo, sent):
    amo = amo_installed
    sent.clear()
    assert list(crm(amo).iter_open_work()) == []
    assert [(p, s) for m, p, _q, s in sent if p != "/api/v4/leads/pipelines"] == [
        ("/api/v4/tasks", 204),
        ("/api/v4/leads", 204),
    ]


def test_iter_open_work_never_exceeds_seven_requests_a_second(amo_installed: Amo, sent):
    amo = amo_installed
    lead = new_lead(amo)
    actor = amo.sandbox.act(amo.account, MANAGER)
    for index in range(250 * 11):
        actor.add_task(lead, f"Задача {index}", time.time() + DAY)
    amo.account.rate_limit = 7
    amo.app.config.update(AMO_RATE=7.0, AMO_BURST=7)
    sent.clear()
    tasks = [item for item in crm(amo).iter_open_work() if isinstance(item, Task)]
    assert len(tasks) == 250 * 11
    assert len(task_gets(sent)) == 12
    assert [s for _m, _p, _q, s in sent if s == 429] == []


def test_notices_go_out_fifty_tasks_to_a_request(amo_installed: Amo, sent):
    amo = amo_installed
    sent.clear()
    crm(amo).notify_many([Notice(str(MANAGER), f"Уведомление {index}") for index in range(120)])
    posts = [s for m, p, _q, s in sent if (m, p) == ("POST", "/api/v4/tasks")]
    assert posts == [200, 200, 200]
    notices = [t for t in amo.sandbox.tasks_for(amo.account, user_id=MANAGER) if t["entity_type"] is None]
    assert sorted(t["text"] for t in notices) == sorted(f"Уведомление {index}" for index in range(120))
