"""The amoCRM sandbox's list pages (tasks, leads) equal slices of the whole filtered and sorted list, whether
the page is found by a lazy walk (id order over rows stored in id order) or by a bounded heap."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from sandbox.amocrm import AmoSandbox, responses_amo
from sandbox.amocrm.account import Account
from sandbox.amocrm.seed import generate_bulk

Row = dict[str, Any]


@pytest.fixture
def amo() -> Iterator[tuple[AmoSandbox, Account, str]]:
    sandbox = AmoSandbox(transport=lambda url, body: 200)
    account = sandbox.seed_account(subdomain="acme", account_id=777)
    account.rate_limit = None
    generate_bulk(sandbox, account, leads=300, tasks=700)
    with responses_amo(sandbox):
        yield sandbox, account, sandbox.issue_tokens(account)["access_token"]


def pages(token: str, path: str, params: dict[str, Any], limit: int) -> list[list[int]]:
    """The ids of every page up to the first 204, checking each body's `_page` and `_links`."""
    result: list[list[int]] = []
    page = 1
    while True:
        answer = requests.get(
            f"https://acme.amocrm.ru{path}",
            params={**params, "page": page, "limit": limit},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        if answer.status_code == 204:
            assert answer.content == b""
            return result
        body = answer.json()
        key = path.rsplit("/", 1)[1]
        ids = [row["id"] for row in body["_embedded"][key]]
        assert body["_page"] == page and body["_links"]["self"]["href"].endswith(f"?page={page}&limit={limit}")
        assert ("next" in body["_links"]) == (len(ids) == limit)
        result.append(ids)
        page += 1


def expected(rows: dict[int, Row], keep: Callable[[Row], bool], key: str, desc: bool, limit: int) -> list[list[int]]:
    ordered = sorted((row for row in rows.values() if keep(row)), key=lambda r: (r[key], r["id"]), reverse=desc)
    ids = [row["id"] for row in ordered]
    return [ids[start : start + limit] for start in range(0, len(ids), limit)]


@pytest.mark.parametrize(
    ("key", "direction"),
    [("id", "asc"), ("id", "desc"), ("complete_till", "asc"), ("complete_till", "desc"), ("created_at", "asc")],
)
def test_task_pages_are_slices_of_the_sorted_filtered_list(amo: tuple[AmoSandbox, Account, str], key, direction):
    _sandbox, account, token = amo
    params = {"filter[entity_type]": "leads", "filter[is_completed]": "0", "filter[responsible_user_id][]": "2"}
    params[f"order[{key}]"] = direction

    def keep(task: Row) -> bool:
        return task["entity_type"] == "leads" and not task["is_completed"] and task["responsible_user_id"] == 2

    want = expected(account.tasks, keep, key, direction == "desc", 50)
    assert len(want) > 2
    assert pages(token, "/api/v4/tasks", params, 50) == want


def test_a_task_stored_out_of_id_order_still_pages_in_id_order(amo: tuple[AmoSandbox, Account, str]):
    _sandbox, account, token = amo
    first = min(account.tasks)
    lowest = dict(account.tasks.pop(first), id=first)
    account.tasks[first] = lowest  # now the last one stored, with the smallest id
    params = {"filter[entity_type]": "leads", "order[id]": "asc"}
    got = pages(token, "/api/v4/tasks", params, 250)
    assert got == expected(account.tasks, lambda task: True, "id", False, 250)
    assert got[0][0] == first


@pytest.mark.parametrize(("key", "direction"), [("id", "asc"), ("id", "desc"), ("updated_at", "desc")])
def test_lead_pages_by_status_are_slices_of_the_sorted_filtered_list(
    amo: tuple[AmoSandbox, Account, str], key, direction
):
    _sandbox, account, token = amo
    main = account.main_pipeline()
    working = sorted(s for s, status in account.pipelines[main]["statuses"].items() if status["type"] == 0)
    params = {f"order[{key}]": direction}
    for index, status_id in enumerate(working[:3]):
        params[f"filter[statuses][{index}][pipeline_id]"] = str(main)
        params[f"filter[statuses][{index}][status_id]"] = str(status_id)
    wanted = {(main, status_id) for status_id in working[:3]}

    def keep(lead: Row) -> bool:
        return (lead["pipeline_id"], lead["status_id"]) in wanted

    want = expected(account.leads, keep, key, direction == "desc", 25)
    assert len(want) > 1
    assert pages(token, "/api/v4/leads", params, 25) == want
