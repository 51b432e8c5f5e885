"""CSV formula injection: a head downloads every CSV report of a period in which deal titles, manager names,
lead sources and a cancellation reason were typed as formulas; no cell reaches the spreadsheet as a formula,
and the amounts we write (a cancelled fine's negative amount included) stay numbers."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from flask import Flask

from app.core.db import db
from app.core.models import Penalty, RefusalCase
from app.domain import reports
from app.web.reports_api import CSV_TABLES
from tests.security.conftest import HEAD, headers, installed_portal

EVIL = [
    '=HYPERLINK("http://evil","x")',
    "+cmd|' /C calc'!A0",
    "@SUM(1)",
    "-2+3",
    "\t=1",
    "\r=1",
]
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


@pytest.fixture
def evil_period(app: Flask, monkeypatch: pytest.MonkeyPatch):
    """Six managers, sources and deals named with formulas; each manager fined, the last fine cancelled."""
    portal = installed_portal(timezone="Europe/Moscow", language="ru")
    users = {str(20 + number): name for number, name in enumerate(EVIL)}
    sources = {f"S{number}": name for number, name in enumerate(EVIL)}
    monkeypatch.setattr(reports, "lookup_names", lambda _portal: reports.Names(users=users, sources=sources))
    opened = datetime(2026, 11, 10, 9, tzinfo=UTC)
    for number, title in enumerate(EVIL):
        case = RefusalCase(
            portal_id=portal.id,
            deal_id=str(700 + number),
            deal_title=title,
            pipeline_id="0",
            manager_id=str(20 + number),
            reason="price",
            source_id=f"S{number}",
            state=RefusalCase.LEAKED,
            opened_at=opened,
        )
        db.session.add(case)
        db.session.flush()
        fine = Penalty(
            portal_id=portal.id,
            manager_id=case.manager_id,
            case_id=case.id,
            deal_id=case.deal_id,
            kind=Penalty.PENALTY,
            amount=Decimal("1000"),
            currency="RUB",
            rule="portal_default",
            reason="leaked client",
            created_by="7",
            created_at=opened,
        )
        db.session.add(fine)
        db.session.flush()
    db.session.add(
        Penalty(
            portal_id=portal.id,
            manager_id=fine.manager_id,
            case_id=fine.case_id,
            deal_id=fine.deal_id,
            kind=Penalty.REVERSAL,
            amount=Decimal("-1000"),
            currency="RUB",
            rule="portal_default",
            reverses_id=fine.id,
            reason=EVIL[0],
            created_by=HEAD,
            created_at=opened,
        )
    )
    db.session.commit()
    return portal


def _cells(answer) -> list[str]:
    text = answer.get_data().decode("utf-8-sig")
    return [cell for row in csv.reader(io.StringIO(text, newline=""), delimiter=";") for cell in row]


@pytest.mark.parametrize("name", CSV_TABLES)
def test_no_csv_cell_starts_like_a_formula_unless_it_is_a_number_we_wrote(app: Flask, evil_period, name: str):
    answer = app.test_client().get(
        f"/api/reports/{name}.csv?from=2026-11-01&to=2026-11-30", headers=headers(evil_period, HEAD)
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    cells = _cells(answer)
    formulas = [cell for cell in cells if cell.startswith(DANGEROUS) and not NUMBER.fullmatch(cell)]
    assert formulas == []
    if name in {"managers", "sources"}:
        # Every name typed as a formula is there, shown as text.
        assert {f"'{evil}" for evil in EVIL} <= set(cells)
    if name == "ledger":
        assert {f"'{evil}" for evil in EVIL} <= {cell.split(" (#")[0] for cell in cells}
        assert "'" + EVIL[0] in cells  # the cancellation's reason
        assert "-1000,00" in cells  # our own negative amount is still a number


def test_a_numeric_cell_written_by_us_stays_a_number_in_english_too():
    from app.web.reports_api import csv_bytes

    table = reports.Table("t", "t", ["Name", "Amount"], [["-5", Decimal("-12.50")], ["=1", 3]])
    text = csv_bytes(table, "en").decode("utf-8-sig")
    assert text.splitlines() == ["Name,Amount", "'-5,-12.50", "'=1,3"]
