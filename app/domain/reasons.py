"""Refusal reasons owned by the company: one list per portal, kept in sync with the CRM's reason field.

The seven reasons of the old fixed list are every portal's first reasons (seeded on first use, and by migration
0009 for portals that existed before). Admins add, rename (Russian and English), reorder, retire and restore
reasons on the settings page; each change is audited and written to the CRM's field (Bitrix24 enumeration
items, amoCRM select options). An item an admin adds in the CRM reaches the app three ways: a deal carrying it
(the adapter decodes an unknown item as `crm_<item id>` and the guard adopts it at once), the settings page
(it reads the field first) and the periodic reconciliation.

A retired reason stays in the field (deals that carry it keep their value in the CRM), after the active ones;
history and reports keep its name, and the guard refuses a new refusal with it, with a notice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.db import db
from app.core.models import Portal, RefusalReason
from app.core.queue import get_redis
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.crm.port import CrmClient, FieldOption, item_of_reason_code, reason_code_for_item
from app.domain import audit
from app.domain.catalog import REASONS

log = logging.getLogger(__name__)
LOCK_SECONDS = 60
NAME_MAX = 100
SYNC_ACTOR = "crm"  # the audit actor of a change read from the CRM's field

i18n.register(
    {
        "reasons_hint": (
            "Причины, которые менеджер выбирает в поле «Причина отказа». Изменения сразу записываются в поле CRM; "
            "причину, добавленную в CRM, приложение подхватывает само. Архивная причина остаётся в истории и "
            "отчётах, но для новых отказов не принимается.",
            'The reasons a manager picks in the "Refusal reason" field. Changes are written to the CRM field at '
            "once; a reason added in the CRM is picked up by the app. A retired reason stays in history and "
            "reports but is not accepted for new refusals.",
        ),
        "reasons_name_ru": ("Название (рус.)", "Name (Russian)"),
        "reasons_name_en": ("Название (англ.)", "Name (English)"),
        "reasons_add": ("Добавить причину", "Add a reason"),
        "reasons_new": ("Новая причина", "A new reason"),
        "reasons_save": ("Сохранить", "Save"),
        "reasons_up": ("Выше", "Up"),
        "reasons_down": ("Ниже", "Down"),
        "reasons_retire": ("В архив", "Retire"),
        "reasons_restore": ("Вернуть", "Restore"),
        "reasons_retired": ("в архиве", "retired"),
        "reasons_from_crm": ("добавлена в CRM", "added in the CRM"),
        "reasons_saved": ("Причины сохранены и записаны в CRM.", "Reasons saved and written to the CRM."),
        "reasons_saved_crm_later": (
            "Причины сохранены; CRM не ответила, запись в поле будет повторена.",
            "Reasons saved; the CRM did not answer, the field will be written again.",
        ),
        "reasons_error_empty": ("Укажите название причины.", "Enter the reason's name."),
        "reasons_error_long": ("Название не длиннее 100 символов.", "A name is at most 100 characters."),
        "reasons_error_duplicate": ("Причина «{name}» уже есть.", 'The reason "{name}" already exists.'),
        "reasons_error_last": (
            "Нельзя отправить в архив последнюю действующую причину.",
            "The last active reason cannot be retired.",
        ),
        "reasons_error_order": (
            "Порядок должен перечислять каждую причину один раз.",
            "The order must list every reason once.",
        ),
        "reasons_error_unknown": ("Такой причины нет.", "There is no such reason."),
    }
)


class ReasonError(ValueError):
    """A change to the reasons that cannot be made; `message` is translated, `field` names the input."""

    def __init__(self, status: int, key: str, language: str, field: str = "", **values: str) -> None:
        self.status = status
        self.key = key
        self.field = field
        self.message = i18n.translate(key, language).format(**values)
        super().__init__(self.message)


@contextmanager
def reasons_lock(portal_id: int) -> Iterator[None]:
    """One writer of a portal's reasons at a time (settings page, guard, reconciliation, installer)."""
    with get_redis().lock(f"rc:lock:reasons:{portal_id}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS):
        yield


# ---------------------------------------------------------------- reading


def ensure_seeded(portal_id: int) -> None:
    """The seven first reasons, for a portal that has none yet (a new portal); commits when it adds them."""
    if db.session.scalar(sa.select(sa.func.count()).where(RefusalReason.portal_id == portal_id)):
        return
    for index, (code, label) in enumerate(REASONS.items()):
        db.session.add(
            RefusalReason(portal_id=portal_id, code=code, name_ru=label.ru, name_en=label.en, sort=(index + 1) * 10)
        )
    try:
        db.session.commit()
    except IntegrityError:  # another process seeded the portal at the same moment
        db.session.rollback()


def listing(portal_id: int) -> list[RefusalReason]:
    """Every reason of the portal, active ones first, each group in its order."""
    ensure_seeded(portal_id)
    return list(
        db.session.scalars(
            sa.select(RefusalReason)
            .where(RefusalReason.portal_id == portal_id)
            .order_by(RefusalReason.retired, RefusalReason.sort, RefusalReason.id)
        )
    )


def find(portal_id: int, code: str) -> RefusalReason | None:
    """One reason by its code."""
    return db.session.scalar(
        sa.select(RefusalReason).where(RefusalReason.portal_id == portal_id, RefusalReason.code == code)
    )


def names(portal_id: int, language: str) -> dict[str, str]:
    """{code: name in the language} of every reason, retired ones included (history and reports)."""
    return {row.code: row.name(language) for row in listing(portal_id)}


def name_of(portal_id: int, code: str | None, language: str) -> str:
    """A reason's name for people: «—» for none; an unknown code as it is."""
    if not code:
        return "—"
    row = find(portal_id, code)
    if row is not None:
        return row.name(language)
    label = REASONS.get(code)
    return label.in_language(language) if label else code


def choices(portal_id: int, language: str) -> list[dict[str, str]]:
    """The reasons offered for a new refusal (active ones, in order)."""
    return [{"code": row.code, "name": row.name(language)} for row in listing(portal_id) if not row.retired]


def as_dict(row: RefusalReason, language: str) -> dict[str, object]:
    """A reason as the settings page shows it."""
    return {
        "code": row.code,
        "name": row.name(language),
        "name_ru": row.name_ru,
        "name_en": row.name_en,
        "retired": row.retired,
        "from_crm": item_of_reason_code(row.code) is not None,
        "in_crm": row.crm_item_id is not None,
    }


@dataclass(frozen=True)
class Verdict:
    """Whether a deal's reason may open a new refusal: `ok`, `retired` or `unknown` (gone from the CRM)."""

    state: str
    name: str = ""


def check(portal: Portal, crm: CrmClient, code: str) -> Verdict:
    """Whether a new refusal may carry `code`. A code the app does not know yet (an item an admin just added in
    the CRM) makes the app read the CRM's field at once and adopt it. Commits; call before the first write of a
    decision (no write transaction is held across the CRM call)."""
    row = find(portal.id, code)
    if row is None and item_of_reason_code(code) is not None:
        try:
            pull_from_crm(portal, crm)
        except PortalNeedsReinstall:
            raise
        except CrmError:  # the field could not be read: decide on what the deal says
            db.session.rollback()
            log.warning("reason field not read", extra={"portal_id": portal.id, "code": code}, exc_info=True)
            return Verdict("ok", code)
        row = find(portal.id, code)
    if row is None:
        ensure_seeded(portal.id)
        row = find(portal.id, code)
    if row is None:
        return Verdict("unknown", code)
    return Verdict("retired" if row.retired else "ok", row.name(portal.language))


# ---------------------------------------------------------------- CRM → app


def _apply_options(portal: Portal, options: Sequence[FieldOption]) -> list[str]:
    """Adopt the CRM's items: new items become reasons, renamed items rename the reason (in the portal's
    language), the CRM's order is kept; a reason whose item is gone is retired. Returns what changed."""
    language = portal.language
    rows = listing(portal.id)
    by_item = {row.crm_item_id: row for row in rows if row.crm_item_id}
    by_code = {row.code: row for row in rows}
    changes: list[str] = []
    seen: set[int] = set()
    for option in options:
        row = by_item.get(option.id)
        if row is None and option.code in by_code and not by_code[option.code].crm_item_id:
            row = by_code[option.code]  # our own item, written before its id came back
        if row is None:
            row = next(
                (
                    r
                    for r in rows
                    if not r.crm_item_id and option.name.casefold() in (r.name_ru.casefold(), r.name_en.casefold())
                ),
                None,
            )
        if row is None:
            code = reason_code_for_item(option.id)
            row = by_code.get(code) or RefusalReason(
                portal_id=portal.id, code=code, name_ru=option.name[:255], name_en=option.name[:255]
            )
            if row.id is None:
                row.sort = option.sort
                db.session.add(row)
                db.session.flush()
                changes.append(f"added {code} «{option.name}»")
        if row.crm_item_id != option.id:
            row.crm_item_id = option.id
        current = row.name_en if language == "en" else row.name_ru
        # A name the reason already has in either language is no rename (the portal's language may have changed
        # since the item was written).
        if option.name and option.name not in (row.name_ru, row.name_en):
            if language == "en":
                row.name_en = option.name[:255]
            else:
                row.name_ru = option.name[:255]
            changes.append(f"renamed {row.code} «{current}» → «{option.name}»")
        if not row.retired and row.sort != option.sort:
            row.sort = option.sort
        seen.add(row.id)
    present = {option.id for option in options}
    for row in rows:
        if row.id not in seen and row.crm_item_id and row.crm_item_id not in present:
            row.crm_item_id = None
            if not row.retired:
                row.retired = True
                changes.append(f"retired {row.code}: its item was deleted in the CRM")
    return changes


def pull_from_crm(portal: Portal, crm: CrmClient) -> list[str]:
    """Read the CRM's reason field and adopt what an admin changed there; audits and commits."""
    ensure_seeded(portal.id)
    options = crm.list_reason_options()
    with reasons_lock(portal.id):
        changes = _apply_options(portal, options)
        if changes:
            audit.record(portal.id, SYNC_ACTOR, "refusal reasons", "changed in the CRM", changes=changes)
        db.session.commit()
    return changes


# ---------------------------------------------------------------- app → CRM


def _wanted(portal: Portal) -> list[tuple[RefusalReason, FieldOption]]:
    """The field's items as the app wants them: active reasons in order, then retired ones."""
    wanted = []
    for index, row in enumerate(listing(portal.id)):
        option = FieldOption(
            id=row.crm_item_id or "", name=row.name(portal.language), sort=(index + 1) * 10, code=row.code
        )
        wanted.append((row, option))
    return wanted


def push_to_crm(portal: Portal, crm: CrmClient) -> int:
    """Write the app's reasons to the CRM's field (names in the portal's language, order, new items) and
    record the new items' ids; commits. Returns how many items were written."""
    wanted = _wanted(portal)
    db.session.commit()  # no transaction across the CRM call
    options = crm.save_reason_options([option for _row, option in wanted])
    with reasons_lock(portal.id):
        by_code = {option.code: option for option in options if option.code}
        by_name: dict[str, FieldOption] = {}
        for option in options:
            by_name.setdefault(option.name.casefold(), option)
        taken = {row.crm_item_id for row, _option in wanted if row.crm_item_id}
        for row, option in wanted:
            if row.crm_item_id:
                continue
            made = by_code.get(row.code) or by_name.get(option.name.casefold())
            if made is not None and made.id not in taken:
                row.crm_item_id = made.id
                taken.add(made.id)
        db.session.commit()
    return len(wanted)


def initial_options(portal: Portal) -> list[FieldOption]:
    """The items a newly created reason field starts with (install): every reason, in order."""
    return [option for _row, option in _wanted(portal)]


def item_ids(portal_id: int) -> dict[str, str]:
    """{code: CRM item id} of the reasons written to the CRM."""
    return {row.code: row.crm_item_id for row in listing(portal_id) if row.crm_item_id}


def sync(portal: Portal, crm: CrmClient) -> list[str]:
    """Both ways: adopt the CRM's changes, then write the app's list (install, repair, reconciliation)."""
    changes = pull_from_crm(portal, crm)
    push_to_crm(portal, crm)
    return changes


PUSH_PENDING = "reasons_push_pending"  # portal.settings: an admin's change not yet written to the CRM


def mark_push_pending(portal: Portal, pending: bool) -> None:
    """Remember (or forget) that the CRM's field still lacks an admin's change; the caller commits."""
    settings = dict(portal.settings or {})
    if bool(settings.get(PUSH_PENDING)) == pending:
        return
    if pending:
        settings[PUSH_PENDING] = True
    else:
        settings.pop(PUSH_PENDING, None)
    portal.settings = settings
    flag_modified(portal, "settings")


def publish(portal: Portal, crm: CrmClient) -> bool:
    """Write an admin's change to the CRM now; when the CRM fails, the reconciliation writes it later (and
    reads nothing back from the CRM before that, so the change is never undone). Returns whether it was
    written."""
    mark_push_pending(portal, True)
    db.session.commit()
    try:
        push_to_crm(portal, crm)
    except CrmError as error:
        db.session.rollback()
        log.warning("refusal reasons not written", extra={"portal_id": portal.id, "code": error.code})
        return False
    mark_push_pending(portal, False)
    db.session.commit()
    return True


def sync_quietly(portal: Portal, crm: CrmClient) -> bool:
    """`sync` for the periodic reconciliation: an admin's change still waiting is written first, then the
    CRM's changes are adopted; a CRM error is logged, never raised."""
    try:
        if (portal.settings or {}).get(PUSH_PENDING):
            push_to_crm(portal, crm)
            mark_push_pending(portal, False)
            db.session.commit()
        pull_from_crm(portal, crm)
        if any(row.crm_item_id is None for row in listing(portal.id)):
            push_to_crm(portal, crm)
    except PortalNeedsReinstall:
        raise
    except CrmError:  # the next reconciliation tries again
        db.session.rollback()
        log.warning("refusal reasons not synced", extra={"portal_id": portal.id}, exc_info=True)
        return False
    return True


# ---------------------------------------------------------------- the admin's changes


def _clean(value: object, language: str, field: str) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise ReasonError(400, "reasons_error_empty", language, field)
    if len(text) > NAME_MAX:
        raise ReasonError(400, "reasons_error_long", language, field)
    return text


def _names(portal: Portal, name_ru: object, name_en: object, skip: RefusalReason | None) -> tuple[str, str]:
    """Both names, checked: the portal's language is required, the other defaults to it; no name may repeat
    another reason's name in the same language (case-insensitive)."""
    language = portal.language
    first, second = ("name_en", "name_ru") if language == "en" else ("name_ru", "name_en")
    given = {"name_ru": name_ru, "name_en": name_en}
    main = _clean(given[first], language, first)
    other = _clean(given[second], language, second) if str(given[second] or "").strip() else main
    cleaned = {first: main, second: other}
    for row in listing(portal.id):
        if row is skip:
            continue
        for key in ("name_ru", "name_en"):
            if cleaned[key].casefold() == str(getattr(row, key)).casefold():
                raise ReasonError(409, "reasons_error_duplicate", language, key, name=cleaned[key])
    return cleaned["name_ru"], cleaned["name_en"]


def _row(portal: Portal, code: str) -> RefusalReason:
    ensure_seeded(portal.id)
    row = find(portal.id, code)
    if row is None:
        raise ReasonError(404, "reasons_error_unknown", portal.language, "code")
    return row


def add(portal: Portal, by: str, name_ru: object, name_en: object) -> RefusalReason:
    """A new reason at the end of the active ones; audited (the caller commits and writes the CRM)."""
    ru, en = _names(portal, name_ru, name_en, None)
    rows = listing(portal.id)
    last = max((row.sort for row in rows if not row.retired), default=0)
    row = RefusalReason(portal_id=portal.id, code=f"r_{secrets.token_hex(4)}", name_ru=ru, name_en=en, sort=last + 10)
    db.session.add(row)
    db.session.flush()
    audit.record(portal.id, by, "refusal reasons", "added", code=row.code, name_ru=ru, name_en=en)
    return row


def rename(portal: Portal, by: str, code: str, name_ru: object, name_en: object) -> RefusalReason:
    """New names for a reason; audited with the old and new names."""
    row = _row(portal, code)
    ru, en = _names(portal, name_ru, name_en, row)
    before = {"name_ru": row.name_ru, "name_en": row.name_en}
    if (ru, en) != (row.name_ru, row.name_en):
        row.name_ru, row.name_en = ru, en
        audit.record(
            portal.id,
            by,
            "refusal reasons",
            "renamed",
            code=code,
            changed={"from": before, "to": {"name_ru": ru, "name_en": en}},
        )
    return row


def reorder(portal: Portal, by: str, codes: Sequence[str]) -> None:
    """The active reasons in a new order (retired ones keep theirs, after them); audited."""
    active = [row for row in listing(portal.id) if not row.retired]
    if sorted(codes) != sorted(row.code for row in active) or len(set(codes)) != len(codes):
        raise ReasonError(400, "reasons_error_order", portal.language, "order")
    by_code = {row.code: row for row in active}
    before = [row.code for row in active]
    for index, code in enumerate(codes):
        by_code[code].sort = (index + 1) * 10
    if before != list(codes):
        audit.record(portal.id, by, "refusal reasons", "reordered", changed={"from": before, "to": list(codes)})


def set_retired(portal: Portal, by: str, code: str, retired: bool) -> RefusalReason:
    """Retire a reason (kept for history, refused for new refusals) or restore it at the end; audited."""
    row = _row(portal, code)
    if row.retired == retired:
        return row
    rows = listing(portal.id)
    if retired and sum(1 for other in rows if not other.retired) <= 1:
        raise ReasonError(409, "reasons_error_last", portal.language, "code")
    row.retired = retired
    if not retired:
        row.sort = max((other.sort for other in rows if not other.retired), default=0) + 10
    audit.record(portal.id, by, "refusal reasons", "retired" if retired else "restored", code=code)
    return row
