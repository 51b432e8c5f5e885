"""Contacts and companies in both emulators, as the CRMs document them: Bitrix24 string values and multifields,
the deal's contact bindings, crm.duplicate.findbycomm's result shapes and its limit; amoCRM contacts and companies
found by id or by a phone or e-mail (`query`), with their leads (`with=leads`), and a lead's contacts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox import Sandbox
from sandbox.amocrm import AmoSandbox, responses_amo
from sandbox.amocrm.account import Account

from .conftest import call


def add_contact(portal: Any, contact_id: int, responsible: int, phone: str = "", email: str = "") -> None:
    portal.contacts[contact_id] = {
        "ID": contact_id,
        "NAME": "Иван",
        "ASSIGNED_BY_ID": responsible,
        "DATE_CREATE": 1_700_000_000,
        "PHONE": [phone] if phone else [],
        "EMAIL": [email] if email else [],
    }


def test_bitrix24_contacts_print_strings_and_multifields(sandbox: Sandbox, portal, token) -> None:
    add_contact(portal, 901, 3, phone="+7 900 123-45-67", email="ivan@client.test")
    status, body = call(
        sandbox, token, "crm.contact.list", {"filter": {"@ID": [901]}, "select": ["ID", "ASSIGNED_BY_ID", "PHONE"]}
    )
    assert status == 200
    [row] = body["result"]
    assert row["ID"] == "901" and row["ASSIGNED_BY_ID"] == "3"
    assert row["PHONE"] == [{"ID": "1", "VALUE_TYPE": "WORK", "VALUE": "+7 900 123-45-67", "TYPE_ID": "PHONE"}]
    assert "EMAIL" not in row, "only what was selected"
    status, single = call(sandbox, token, "crm.contact.get", {"id": 901})
    assert single["result"]["DATE_CREATE"].endswith("+03:00")
    assert call(sandbox, token, "crm.company.get", {"id": 99999})[0] == 400


def test_bitrix24_deal_contact_bindings(sandbox: Sandbox, portal, token) -> None:
    deal = portal.deals[1]
    add_contact(portal, 902, 2)
    deal.contact_id = 902
    portal.deal_contacts[1] = [903]
    status, body = call(sandbox, token, "crm.deal.contact.items.get", {"id": 1})
    assert status == 200
    assert [(item["CONTACT_ID"], item["IS_PRIMARY"]) for item in body["result"]] == [(902, "Y"), (903, "N")]


def test_bitrix24_duplicates_by_phone_and_email(sandbox: Sandbox, portal, token) -> None:
    add_contact(portal, 904, 2, phone="+7 (900) 555-00-11")
    portal.companies[905] = {"ID": 905, "TITLE": "ООО «Меридиан»", "ASSIGNED_BY_ID": 3, "EMAIL": ["info@meridian.test"]}
    _status, phone = call(sandbox, token, "crm.duplicate.findbycomm", {"type": "PHONE", "values": ["89005550011"]})
    assert phone["result"] == {"CONTACT": [904]}
    _status, email = call(
        sandbox, token, "crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["INFO@meridian.test"]}
    )
    assert email["result"] == {"COMPANY": [905]}
    _status, nothing = call(sandbox, token, "crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["x@y.test"]})
    assert nothing["result"] == [], "no duplicates: an empty array, as PHP prints an empty array"
    too_many = [f"+7900000{n:04d}" for n in range(21)]
    status, error = call(sandbox, token, "crm.duplicate.findbycomm", {"type": "PHONE", "values": too_many})
    assert status == 400 and error["error"] == "INVALID_ARG_VALUE"


@pytest.fixture
def amo() -> Iterator[tuple[AmoSandbox, Account, str]]:
    sandbox = AmoSandbox(transport=lambda url, body: 200)
    account = sandbox.seed_account(subdomain="acme", account_id=777)
    account.rate_limit = None
    with responses_amo(sandbox):
        yield sandbox, account, sandbox.issue_tokens(account)["access_token"]


def amo_get(token: str, path: str, **params: Any) -> requests.Response:
    return requests.get(
        f"https://acme.amocrm.ru{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )


def test_amocrm_contacts_by_query_with_their_leads(amo: tuple[AmoSandbox, Account, str]) -> None:
    sandbox, account, token = amo
    lead_id = sandbox.act(account, 2).create_lead("Станки", status_id=None, pipeline_id=account.main_pipeline())
    contact_id = sandbox.next_id()
    account.contacts[contact_id] = {
        "id": contact_id,
        "name": "Иван Петров",
        "responsible_user_id": 3,
        "created_at": 1_700_000_000,
        "phones": ["+7 900 123-45-67"],
        "emails": [],
    }
    account.leads[lead_id]["contacts"] = [contact_id]

    found = amo_get(token, "/api/v4/contacts", query="8 900 123 45 67", **{"with": "leads"})
    assert found.status_code == 200
    [contact] = found.json()["_embedded"]["contacts"]
    assert contact["id"] == contact_id and contact["responsible_user_id"] == 3
    [phone] = contact["custom_fields_values"]
    assert (phone["field_code"], phone["values"][0]["value"]) == ("PHONE", "+7 900 123-45-67")
    assert [lead["id"] for lead in contact["_embedded"]["leads"]] == [lead_id]
    assert amo_get(token, "/api/v4/contacts", query="nobody@nowhere.test").status_code == 204
    assert amo_get(token, "/api/v4/companies", **{"filter[id][]": "1"}).status_code == 204

    lead = amo_get(token, f"/api/v4/leads/{lead_id}", **{"with": "contacts"}).json()
    assert lead["_embedded"]["contacts"][0]["id"] == contact_id and lead["_embedded"]["contacts"][0]["is_main"]
    plain = amo_get(token, f"/api/v4/leads/{lead_id}").json()
    assert "contacts" not in plain["_embedded"], "contacts only with=contacts"
