"""REST answers as a client sees them: strings, paging, filters, batch, errors."""

from __future__ import annotations

from sandbox import Sandbox, generate_bulk

from .conftest import DOMAIN, call


def test_deal_values_are_strings_with_iso_dates(sandbox: Sandbox, portal, token) -> None:
    status, body = call(sandbox, token, "crm.deal.get", {"id": 1})
    assert status == 200
    deal = body["result"]
    assert deal["ID"] == "1"
    assert deal["CATEGORY_ID"] in {"0", "1", "2"}
    assert deal["OPPORTUNITY"].endswith(".00")
    assert isinstance(deal["ASSIGNED_BY_ID"], str)
    assert deal["DATE_MODIFY"].endswith("+03:00") and "T" in deal["DATE_MODIFY"]
    assert deal["STAGE_SEMANTIC_ID"] in {"P", "S", "F"}
    assert set(body["time"]) >= {"start", "finish", "duration", "date_start", "operating_reset_at"}


def test_list_pages_of_50_with_next_and_total(sandbox: Sandbox, portal, token) -> None:
    generate_bulk(portal, deals=90, now=sandbox.clock.now())
    status, first = call(sandbox, token, "crm.deal.list", {"order": {"ID": "ASC"}, "select": ["ID", "TITLE"]})
    assert status == 200
    assert len(first["result"]) == 50
    assert first["next"] == 50
    assert first["total"] == 120
    assert set(first["result"][0]) == {"ID", "TITLE"}
    _, second = call(sandbox, token, "crm.deal.list", {"order": {"ID": "ASC"}, "start": 50})
    assert second["next"] == 100
    _, last = call(sandbox, token, "crm.deal.list", {"order": {"ID": "ASC"}, "start": 100})
    assert len(last["result"]) == 20
    assert "next" not in last
    ids = [row["ID"] for page in (first, second, last) for row in page["result"]]
    assert ids == [str(n) for n in range(1, 121)]


def test_fast_scan_with_start_minus_one(sandbox: Sandbox, portal, token) -> None:
    generate_bulk(portal, deals=1000, now=sandbox.clock.now())
    seen: list[int] = []
    last = 0
    while True:
        status, body = call(
            sandbox,
            token,
            "crm.deal.list",
            {"order": {"ID": "ASC"}, "filter": {">ID": last}, "select": ["ID"], "start": -1},
        )
        assert status == 200
        assert "next" not in body and "total" not in body
        rows = body["result"]
        seen.extend(int(row["ID"]) for row in rows)
        if len(rows) < 50:
            break
        last = int(rows[-1]["ID"])
    assert seen == list(range(1, 1031))


def test_filter_prefixes_and_order(sandbox: Sandbox, portal, token) -> None:
    _, body = call(
        sandbox,
        token,
        "crm.deal.list",
        {
            "filter": {"@STAGE_ID": ["WON", "LOSE"], "!ASSIGNED_BY_ID": 2, ">=OPPORTUNITY": 30000},
            "order": {"OPPORTUNITY": "DESC"},
            "select": ["ID", "STAGE_ID", "ASSIGNED_BY_ID", "OPPORTUNITY"],
        },
    )
    rows = body["result"]
    assert rows
    assert all(r["STAGE_ID"] in {"WON", "LOSE"} and r["ASSIGNED_BY_ID"] != "2" for r in rows)
    amounts = [float(r["OPPORTUNITY"]) for r in rows]
    assert amounts == sorted(amounts, reverse=True) and min(amounts) >= 30000


def test_date_filter(sandbox: Sandbox, portal, token, clock) -> None:
    _, before = call(sandbox, token, "crm.deal.list", {"filter": {">=DATE_MODIFY": "2100-01-01T00:00:00+03:00"}})
    assert before["result"] == [] and before["total"] == 0
    sandbox.act(portal, 3).update_deal(4, {"TITLE": "Changed"})
    since = sandbox.deal(portal, 4)["DATE_MODIFY"]
    _, after = call(sandbox, token, "crm.deal.list", {"filter": {">=DATE_MODIFY": since}, "select": ["ID"]})
    assert [r["ID"] for r in after["result"]] == ["4"]


def test_batch_shape(sandbox: Sandbox, portal, token) -> None:
    status, body = call(
        sandbox,
        token,
        "batch",
        {
            "halt": 0,
            "cmd": {
                "one": "crm.deal.get?id=5",
                "missing": "crm.deal.get?id=99999",
                "list": "crm.deal.list?filter[CATEGORY_ID]=0&select[]=ID&select[]=STAGE_ID",
                "chained": "crm.deal.get?id=$result[one][ID]",
            },
        },
    )
    assert status == 200
    result = body["result"]
    assert set(result) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert result["result"]["one"]["ID"] == "5"
    assert result["result"]["chained"]["ID"] == "5"
    assert result["result_error"] == {"missing": {"error": "", "error_description": "Not found"}}
    assert result["result_total"]["list"] == len(result["result"]["list"])
    assert result["result_next"] == []  # empty maps come back as []
    assert sandbox.rest_calls(portal, "crm.deal.get") == 3
    assert sandbox.rest_calls(portal) == 1  # one HTTP request


def test_batch_resolves_encoded_references_after_parsing(sandbox: Sandbox, portal, token) -> None:
    # A client that encodes the whole query (qs / http_build_query) sends `%24result%5Bp0%5D...`: the
    # portal parses the command first, so the reference still resolves; a broken path resolves to "".
    encoded = "crm.deal.list?filter%5B%3EID%5D=%24result%5Bp0%5D%5B1%5D%5BID%5D&order%5BID%5D=ASC&start=-1"
    status, body = call(
        sandbox,
        token,
        "batch",
        {
            "cmd": {
                "p0": "crm.deal.list?order[ID]=ASC&start=-1&select[]=ID",
                "p1": encoded,
                "broken": "crm.deal.get?id=$result[p0][999][ID]",
            }
        },
    )
    assert status == 200
    first = [int(row["ID"]) for row in body["result"]["result"]["p0"]]
    second = [int(row["ID"]) for row in body["result"]["result"]["p1"]]
    assert second and second[0] > first[1] and second == sorted(second)
    assert body["result"]["result_error"]["broken"]["error_description"] == "ID is not defined or invalid."


def test_batch_empty_maps_and_limit(sandbox: Sandbox, portal, token) -> None:
    _, body = call(sandbox, token, "batch", {"cmd": {"a": "crm.deal.get?id=424242"}})
    assert body["result"]["result"] == []
    assert body["result"]["result_total"] == []
    status, body = call(sandbox, token, "batch", {"cmd": {str(i): "user.current" for i in range(51)}})
    assert status == 400
    assert body["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"


def test_batch_halt_stops_at_first_error(sandbox: Sandbox, portal, token) -> None:
    _, body = call(sandbox, token, "batch", {"halt": 1, "cmd": {"a": "crm.deal.get?id=0", "b": "crm.deal.get?id=1"}})
    assert "a" in body["result"]["result_error"]
    assert body["result"]["result"] == []


def test_errors(sandbox: Sandbox, portal, token) -> None:
    assert sandbox.handle_rest(DOMAIN, "crm.deal.get", {"id": 1}) == (
        401,
        {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
    )
    status, body = call(sandbox, token, "crm.deal.nonsense")
    assert (status, body["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
    status, body = call(sandbox, token, "crm.deal.get", {"id": 424242})
    assert (status, body) == (400, {"error": "", "error_description": "Not found"})
    status, body = call(sandbox, token, "crm.deal.update", {"id": 424242, "fields": {"TITLE": "x"}})
    assert (status, body) == (400, {"error": "", "error_description": "Not found"})
    status, body = call(sandbox, "not-a-token", "crm.deal.get", {"id": 1})
    assert (status, body["error"]) == (401, "invalid_token")


def test_operation_time_limit_switch(sandbox: Sandbox, portal, token) -> None:
    sandbox.force_operation_limit(portal, "crm.deal.list", times=1)
    status, body = call(sandbox, token, "crm.deal.list")
    assert (status, body["error"]) == (429, "OPERATION_TIME_LIMIT")
    assert call(sandbox, token, "crm.deal.list")[0] == 200


def test_deal_update_ignores_category_and_tracks_the_mover(sandbox: Sandbox, portal, token) -> None:
    manager = sandbox.issue_tokens(portal, 3)["access_token"]
    deal = sandbox.deal(portal, 1)
    assert deal["CATEGORY_ID"] == "0"
    status, body = call(
        sandbox, manager, "crm.deal.update", {"id": 1, "fields": {"CATEGORY_ID": 2, "STAGE_ID": "LOSE"}}
    )
    assert (status, body["result"]) == (200, True)
    after = sandbox.deal(portal, 1)
    assert after["CATEGORY_ID"] == "0"
    assert after["STAGE_ID"] == "LOSE"
    assert after["STAGE_SEMANTIC_ID"] == "F" and after["CLOSED"] == "Y"
    assert after["MODIFY_BY_ID"] == "3" and after["MOVED_BY_ID"] == "3"
    status, body = call(sandbox, manager, "crm.deal.update", {"id": 1, "fields": {"STAGE_ID": "C2:NEW"}})
    assert status == 400 and body["error"] == ""
    _, history = call(
        sandbox, token, "crm.stagehistory.list", {"entityTypeId": 2, "filter": {"OWNER_ID": 1}, "order": {"ID": "DESC"}}
    )
    latest = history["result"]["items"][0]
    assert latest["STAGE_ID"] == "LOSE" and latest["TYPE_ID"] == 3


def test_item_update_moves_between_funnels(sandbox: Sandbox, portal, token) -> None:
    status, body = call(
        sandbox,
        token,
        "crm.item.update",
        {"entityTypeId": 2, "id": 1, "fields": {"categoryId": 1, "stageId": "C1:NEW"}},
    )
    assert status == 200
    assert body["result"]["item"]["categoryId"] == 1
    assert body["result"]["item"]["stageId"] == "C1:NEW"
    deal = sandbox.deal(portal, 1)
    assert (deal["CATEGORY_ID"], deal["STAGE_ID"]) == ("1", "C1:NEW")


def test_status_add_prefixes_funnel_stages(sandbox: Sandbox, portal, token) -> None:
    status, body = call(
        sandbox,
        token,
        "crm.status.add",
        {"fields": {"ENTITY_ID": "DEAL_STAGE_1", "STATUS_ID": "COND_REFUSAL", "NAME": "Условный отказ", "SORT": 65}},
    )
    assert status == 200 and isinstance(body["result"], int)
    _, listed = call(sandbox, token, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_1"}})
    added = next(s for s in listed["result"] if s["ID"] == str(body["result"]))
    assert added["STATUS_ID"] == "C1:COND_REFUSAL"
    assert added["SEMANTICS"] is None and added["EXTRA"]["SEMANTICS"] == "process"
    assert added["CATEGORY_ID"] == "1" and added["SORT"] == "65"
    status, body = call(
        sandbox, token, "crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "BAD ID!", "NAME": "x"}}
    )
    assert status == 400
    manager = sandbox.issue_tokens(portal, 3)["access_token"]
    status, body = call(
        sandbox, manager, "crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "X", "NAME": "x"}}
    )
    assert (status, body["error"]) == (403, "ACCESS_DENIED")
    _, types = call(sandbox, token, "crm.status.entity.types")
    funnel = next(t for t in types["result"] if t["ID"] == "DEAL_STAGE_1")
    assert funnel["PREFIX"] == "C1"
    assert funnel["SEMANTIC_INFO"]["FINAL_UNSUCCESS_FIELD"] == "C1:LOSE"


def test_categories_and_stage_semantics(sandbox: Sandbox, portal, token) -> None:
    _, body = call(sandbox, token, "crm.category.list", {"entityTypeId": 2})
    categories = body["result"]["categories"]
    assert [c["id"] for c in categories] == [0, 1, 2]
    assert categories[0]["isDefault"] == "Y"
    _, stages = call(sandbox, token, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}})
    semantics = {s["STATUS_ID"]: (s["SEMANTICS"], s["EXTRA"]["SEMANTICS"]) for s in stages["result"]}
    assert semantics["NEW"] == (None, "process")
    assert semantics["WON"] == ("S", "success")
    assert semantics["LOSE"] == ("F", "failure")
    assert semantics["APOLOGY"] == ("F", "apology")


def test_userfield_enumeration_items_get_ids(sandbox: Sandbox, portal, token) -> None:
    status, body = call(
        sandbox,
        token,
        "crm.deal.userfield.add",
        {
            "fields": {
                "FIELD_NAME": "REFUSAL_REASON",
                "USER_TYPE_ID": "enumeration",
                "EDIT_FORM_LABEL": {"ru": "Причина отказа", "en": "Refusal reason"},
                "LIST": [{"VALUE": "Дорого"}, {"VALUE": "Не дозвонились", "SORT": 20}],
            }
        },
    )
    assert status == 200 and isinstance(body["result"], int)
    _, listed = call(sandbox, token, "crm.deal.userfield.list", {"filter": {"FIELD_NAME": "UF_CRM_REFUSAL_REASON"}})
    field = listed["result"][0]
    assert field["FIELD_NAME"] == "UF_CRM_REFUSAL_REASON"
    assert "EDIT_FORM_LABEL" not in field
    items = field["LIST"]
    assert all(item["ID"].isdigit() for item in items)
    expensive = next(i["ID"] for i in items if i["VALUE"] == "Дорого")
    call(sandbox, token, "crm.deal.update", {"id": 2, "fields": {"UF_CRM_REFUSAL_REASON": expensive}})
    assert sandbox.deal(portal, 2)["UF_CRM_REFUSAL_REASON"] == expensive
    call(sandbox, token, "crm.deal.update", {"id": 2, "fields": {"UF_CRM_REFUSAL_REASON": "not-an-id"}})
    assert sandbox.deal(portal, 2)["UF_CRM_REFUSAL_REASON"] is None
    _, labelled = call(sandbox, token, "crm.deal.userfield.list", {"filter": {"LANG": "en"}})
    assert labelled["result"][0]["EDIT_FORM_LABEL"] == "Refusal reason"
    status, body = call(
        sandbox, token, "crm.deal.userfield.add", {"fields": {"FIELD_NAME": "bad-name", "USER_TYPE_ID": "string"}}
    )
    assert (status, body["error"]) == (400, "ERROR_CORE")
    call(sandbox, token, "crm.deal.userfield.update", {"id": field["ID"], "fields": {"LIST": [{"VALUE": "Конкурент"}]}})
    _, again = call(sandbox, token, "crm.deal.userfield.list", {"filter": {"FIELD_NAME": "UF_CRM_REFUSAL_REASON"}})
    assert [i["VALUE"] for i in again["result"][0]["LIST"]] == ["Не дозвонились", "Дорого", "Конкурент"]
    _, select_uf = call(sandbox, token, "crm.deal.list", {"filter": {"ID": 2}, "select": ["ID", "UF_*"]})
    assert set(select_uf["result"][0]) == {"ID", "UF_CRM_REFUSAL_REASON"}


def test_users_departments_profile(sandbox: Sandbox, portal, token) -> None:
    _, users = call(sandbox, token, "user.get", {"FILTER": {"ACTIVE": True}})
    assert all(u["ACTIVE"] is True for u in users["result"])
    assert len(users["result"]) == 10
    _, qa = call(sandbox, token, "user.get", {"FILTER": {"UF_DEPARTMENT": 3}})
    assert sorted(u["ID"] for u in qa["result"]) == ["7", "8"]
    assert qa["result"][0]["UF_DEPARTMENT"] == [3]
    _, departments = call(sandbox, token, "department.get")
    heads = {d["NAME"]: d.get("UF_HEAD") for d in departments["result"]}
    assert heads["Отдел продаж"] == "9"
    # `sort` / `order` order the answer; they do not filter on the SORT field.
    _, ordered = call(sandbox, token, "department.get", {"sort": "ID", "order": "DESC"})
    assert [d["ID"] for d in ordered["result"]] == sorted((d["ID"] for d in departments["result"]), reverse=True)
    _, sales = call(sandbox, token, "department.get", {"NAME": "Отдел продаж"})
    assert [d["UF_HEAD"] for d in sales["result"]] == ["9"]
    _, profile = call(sandbox, token, "profile")
    assert profile["result"]["ADMIN"] is True
    manager = sandbox.issue_tokens(portal, 3)["access_token"]
    assert call(sandbox, manager, "user.admin")[1]["result"] is False
    assert call(sandbox, manager, "user.current")[1]["result"]["ID"] == "3"
    assert call(sandbox, token, "app.info")[1]["result"]["INSTALLED"] is True
    assert call(sandbox, token, "feature.get", {"CODE": "rest_offline_extended"})[1]["result"] == {"value": "Y"}


def test_deal_fields_title_standard_fields_by_label_and_user_fields_by_name(sandbox: Sandbox, portal, token) -> None:
    """crm.deal.fields as a Russian portal answers: a standard field's `title` is its label; a user field's
    `title` is its FIELD_NAME and its labels are in formLabel / listLabel / filterLabel, with list items."""
    fields = {
        "FIELD_NAME": "DELIVERY",
        "USER_TYPE_ID": "enumeration",
        "EDIT_FORM_LABEL": {"ru": "Доставка"},
        "LIST_COLUMN_LABEL": {"ru": "Доставка"},
        "LIST": [{"VALUE": "Самовывоз"}, {"VALUE": "Курьер"}],
    }
    status, added = sandbox.call(portal, "crm.deal.userfield.add", {"fields": fields}, 1)
    assert status == 200, added
    status, body = call(sandbox, token, "crm.deal.fields")
    assert status == 200
    result = body["result"]
    assert result["OPPORTUNITY"]["title"] == "Сумма" and result["OPPORTUNITY"]["type"] == "double"
    assert result["ASSIGNED_BY_ID"]["type"] == "user" and result["ID"]["isReadOnly"] is True
    delivery = result["UF_CRM_DELIVERY"]
    assert delivery["title"] == "UF_CRM_DELIVERY" and delivery["isDynamic"] is True
    assert delivery["formLabel"] == delivery["listLabel"] == "Доставка"
    assert [item["VALUE"] for item in delivery["items"]] == ["Самовывоз", "Курьер"]
