"""Refusal analytics with the company's own reasons: what managers write (the most frequent words and phrases
of the comments per reason, and every comment with its deal), and the stage a deal was at when it was moved to
«Условный отказ». A plain Russian/English tokenizer with a stop-word list; no NLP library.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import sqlalchemy as sa

from app.core import i18n
from app.core.db import db
from app.core.models import Portal, RefusalCase
from app.core.timezones import zone_name
from app.domain import directory, reasons, review_text  # noqa: F401 - review_text registers the state names

log = logging.getLogger(__name__)
TOP_TERMS = 5
TABLES = ("comment_terms", "comments", "stages")

i18n.register(
    {
        "reports_comment_terms": ("Комментарии: что пишут менеджеры", "Comments: what managers write"),
        # The stage table's share is of the refusals claimed from every stage (not of the confirmed ones).
        "col_share_claimed": ("Доля среди всех отказов, %", "Share of all refusals, %"),
        "reports_comments": ("Все комментарии к отказам", "Every refusal comment"),
        "reports_stages": (
            "Отказы по стадии, с которой сделку перевели в «Условный отказ»",
            "Refusals by the stage the deal was moved to «Conditional refusal» from",
        ),
        "col_terms": ("Частые слова и фразы", "Frequent words and phrases"),
        "col_comments": ("Комментариев", "Comments"),
        "col_comment": ("Комментарий", "Comment"),
        "col_stage": ("Стадия", "Stage"),
        "col_pipeline": ("Воронка", "Pipeline"),
        "col_state": ("Состояние", "State"),
        "comments_filter_reason": ("Причина", "Reason"),
        "comments_filter_manager": ("Менеджер", "Manager"),
        "comments_filter_all": ("Все", "All"),
        "stage_unknown": ("Неизвестная стадия", "Unknown stage"),
    }
)

# Words that say nothing about why a client refused (Russian and English function words, and the
# words every refusal comment has).
STOP_WORDS = frozenset(
    """
    а без более бы был была были было быть в вам вас весь во вот все всё всего всех вы где да даже для до его
    ее её если есть еще ещё же за здесь и из или им их к как какой когда кто ли либо мне может мы на над нам нас
    не него нее неё нет ни них но ну о об однако он она они оно от очень по под при с со так также такой там те
    тем то того тоже той только том ты у уже хотя чего чей чем что чтобы чье чьё эта эти это этот я
    сказал сказала говорит клиент клиента клиенту клиентом пока сейчас будет будут пишет
    a about above after again all also am an and any are as at be because been before being but by can could
    did do does doing for from had has have having he her here him his how i if in into is it its just me more
    most my no not now of on once only or other our out over said says she should so some such than that the
    their them then there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your client customer
    """.split()
)
_WORD = re.compile(r"[a-zа-яё]+(?:-[a-zа-яё]+)*", re.IGNORECASE)


def tokens(text: str) -> list[str]:
    """The comment's meaningful words: lower case, ё as е, without stop words and words under 3 letters."""
    words = (match.group(0).lower().replace("ё", "е") for match in _WORD.finditer(text or ""))
    return [word for word in words if len(word) >= 3 and word not in STOP_WORDS]


# Russian case and number endings, longest first; a word keeps at least STEM_MIN letters. Enough to count
# «парковка», «парковку» and «парковки» as one word (a light stemmer, not a morphology).
_ENDINGS = sorted(
    """ями ами ого его ему ому ыми ими иях ая яя ую юю ой ей ый ий ое ее ые ие ых их ом ем ам ям ах ях ов ев
    а я у ю ы и е о ь""".split(),
    key=len,
    reverse=True,
)
STEM_MIN = 4


def stem(word: str) -> str:
    """The word without its Russian ending (or English plural -s), so inflected forms count together."""
    if word.isascii():
        return word[:-1] if word.endswith("s") and len(word) > STEM_MIN else word
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= STEM_MIN:
            return word[: -len(ending)]
    return word


def terms(texts: Iterable[str], limit: int = TOP_TERMS) -> list[tuple[str, int]]:
    """The most frequent words and two-word phrases of the texts (each counted once per text; inflected forms
    together, shown in their most frequent form): a phrase met in at least two texts comes first and hides its
    own words; ties in alphabetical order."""
    words: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = defaultdict(Counter)
    for text in texts:
        found = tokens(text)
        stems = [stem(word) for word in found]
        for word, key in zip(found, stems, strict=True):
            forms[key][word] += 1
        for (first, second), (a, b) in zip(itertools.pairwise(found), itertools.pairwise(stems), strict=True):
            forms[f"{a} {b}"][f"{first} {second}"] += 1
        words.update(set(stems))
        pairs.update({f"{a} {b}" for a, b in itertools.pairwise(stems)})

    def shown(key: str) -> str:
        return min(forms[key].items(), key=lambda item: (-item[1], item[0]))[0]

    chosen: list[tuple[str, int]] = []
    covered: set[str] = set()
    for phrase, count in sorted(pairs.items(), key=lambda item: (-item[1], shown(item[0]))):
        if count < 2 or len(chosen) >= limit:
            break
        chosen.append((shown(phrase), count))
        covered.update(phrase.split())
    for word, count in sorted(words.items(), key=lambda item: (-item[1], shown(item[0]))):
        if len(chosen) >= limit:
            break
        if word not in covered:
            chosen.append((shown(word), count))
    chosen.sort(key=lambda item: (-item[1], item[0]))
    return chosen


class CaseOutcome(Protocol):
    """What the reports know of a case: its id and whether it was confirmed (reports.CaseFacts)."""

    @property
    def id(self) -> int: ...

    @property
    def confirmed(self) -> bool: ...


def build(
    portal: Portal, facts: Sequence[CaseOutcome], users: dict[str, str], language: str | None = None
) -> dict[str, Any]:
    """The comment and stage analytics of the cases the report counts (`facts`, opened in its period), with
    reason names in `language` (else the portal's)."""
    language = language or portal.language
    confirmed = {fact.id: fact.confirmed for fact in facts}
    cases: list[RefusalCase] = []
    ids = list(confirmed)
    for chunk in range(0, len(ids), 500):
        cases.extend(
            db.session.scalars(
                sa.select(RefusalCase).where(
                    RefusalCase.portal_id == portal.id, RefusalCase.id.in_(ids[chunk : chunk + 500])
                )
            )
        )
    cases.sort(key=lambda case: (case.opened_at, case.id))
    reason_names = reasons.names(portal.id, language)
    order = {code: index for index, code in enumerate(reason_names)}

    def reason_name(code: str) -> str:
        return reason_names.get(code) or reasons.name_of(portal.id, code, language)

    by_reason: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        if case.comment.strip():
            by_reason[case.reason or ""].append(case.comment)
    comment_terms = [
        {
            "reason": code,
            "name": reason_name(code),
            "comments": len(texts),
            "terms": [{"term": term, "count": count} for term, count in terms(texts)],
        }
        for code, texts in sorted(by_reason.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    ]

    stage_names, pipeline_names, deal_url = _crm_names(portal)
    comments = [
        {
            "case_id": case.id,
            "deal_id": case.deal_id,
            "title": case.deal_title or f"#{case.deal_id}",
            "url": deal_url(case.deal_id),
            "at": case.opened_at.isoformat(),
            "at_text": i18n.when(case.opened_at, language, zone_name(portal)),
            "manager_id": case.manager_id,
            "manager": users.get(case.manager_id, case.manager_id),
            "reason": case.reason,
            "reason_name": reason_name(case.reason),
            "comment": case.comment,
            "state": i18n.translate(f"review_state_{case.state}", language),
        }
        for case in cases
    ]

    counted: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for case in cases:
        bucket = counted[(case.pipeline_id, case.previous_stage_id or "")]
        bucket[0] += 1
        bucket[1] += int(confirmed.get(case.id, False))
    total = sum(claimed for claimed, _ in counted.values())
    stages: list[dict[str, Any]] = [
        {
            "pipeline_id": pipeline_id,
            "pipeline": pipeline_names.get(pipeline_id, pipeline_id),
            "stage_id": stage_id,
            "stage": stage_names.get(stage_id) or (stage_id or i18n.translate("stage_unknown", language)),
            "claimed": claimed,
            "confirmed": confirmed_count,
            "share": _percent(claimed, total),
        }
        for (pipeline_id, stage_id), (claimed, confirmed_count) in counted.items()
    ]
    stages.sort(key=lambda row: (-row["claimed"], row["pipeline"], row["stage"]))
    filters = {
        "reasons": sorted(
            ({"code": code, "name": reason_name(code)} for code in {row["reason"] for row in comments}),
            key=lambda item: (order.get(item["code"], len(order)), item["name"]),
        ),
        "managers": sorted(
            ({"id": uid, "name": users.get(uid, uid)} for uid in {row["manager_id"] for row in comments}),
            key=lambda item: item["name"],
        ),
    }
    return {"comment_terms": comment_terms, "comments": comments, "stages": stages, "filters": filters}


def _percent(part: int, whole: int) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), ROUND_HALF_UP)


def _crm_names(portal: Portal) -> tuple[dict[str, str], dict[str, str], Any]:
    """Stage and pipeline names and the deal link builder; ids and no links when the CRM cannot say."""
    from app.crm.port import client_for

    try:
        crm = client_for(portal)
        found = directory.pipelines(portal.id, crm)
    except Exception:  # names are cosmetic: the figures never depend on the CRM answering
        log.warning("stage names for the report are unavailable", extra={"portal_id": portal.id}, exc_info=True)
        return {}, {}, lambda deal_id: ""
    stage_names = {stage.id: stage.name for pipeline in found for stage in pipeline.stages}
    return stage_names, {pipeline.id: pipeline.name for pipeline in found}, crm.deal_url


def table_rows(data: dict[str, Any], language: str) -> dict[str, tuple[str, list[str], list[list[Any]]]]:
    """The three tables (title, columns, rows) for the page and the CSV."""
    t = lambda key: i18n.translate(key, language)  # noqa: E731
    return {
        "comment_terms": (
            t("reports_comment_terms"),
            [t("col_reason"), t("col_comments"), t("col_terms")],
            [
                [row["name"], row["comments"], ", ".join(f"{item['term']} ({item['count']})" for item in row["terms"])]
                for row in data.get("comment_terms", [])
            ],
        ),
        "comments": (
            t("reports_comments"),
            [t("col_date"), t("col_manager"), t("col_reason"), t("col_deal"), t("col_comment"), t("col_state")],
            [
                [
                    row["at_text"],
                    row["manager"],
                    row["reason_name"],
                    row["title"],
                    row["comment"],
                    row["state"],
                ]
                for row in data.get("comments", [])
            ],
        ),
        "stages": (
            t("reports_stages"),
            [t("col_pipeline"), t("col_stage"), t("col_claimed"), t("col_confirmed"), t("col_share_claimed")],
            [
                [row["pipeline"], row["stage"], row["claimed"], row["confirmed"], row["share"]]
                for row in data.get("stages", [])
            ],
        ),
    }
