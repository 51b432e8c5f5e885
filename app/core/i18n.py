"""Interface strings in Russian (first) and English, chosen by the portal's language; numbers and money
are formatted with Babel in the portal's locale, dates as dd.MM.yyyy (HH:mm) in the portal's time zone.

Feature modules keep their own strings and add them with `register()`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.numbers import format_decimal
from flask import Flask

STRINGS: dict[str, tuple[str, str]] = {
    "app_name": ("Контроль отказов", "Refusal Control"),
    "install_title": ("Установка приложения", "Installing the app"),
    "install_intro": (
        "Добавляем в CRM стадию «Условный отказ», поля, подписки на события, вкладку в карточке сделки и роботов.",
        "Adding the Conditional refusal stage, fields, event bindings, the deal-card tab and robots to the CRM.",
    ),
    "step_stages": ("Стадия «Условный отказ» во всех воронках", "Conditional refusal stage in every pipeline"),
    "step_fields": (
        "Поля: причина, комментарий, вердикт ОКК, CPL, квалификация ABC",
        "Fields: reason, comment, QA verdict, CPL, ABC qualification",
    ),
    "step_events": ("Подписки на события сделок", "Deal event bindings"),
    "step_placement": ("Вкладка «Проверка отказа» в карточке сделки", "Refusal review tab in the deal card"),
    "step_robots": ("Роботы для автоматизации", "Automation robots"),
    "state_waiting": ("ожидание", "waiting"),
    "state_running": ("выполняется…", "in progress…"),
    "state_done": ("готово", "done"),
    "state_failed": ("ошибка", "failed"),
    "install_done": ("Готово. Приложение установлено.", "Done. The app is installed."),
    "install_failed": ("Установка не удалась:", "Installation failed:"),
    "install_retry": ("Повторить", "Try again"),
    "install_lost": ("Нет связи с сервером приложения, повторяем…", "Lost contact with the app server, retrying…"),
    "install_admin_only_title": ("Нужен администратор портала", "A portal administrator is needed"),
    "install_admin_only": (
        "Установить или восстановить приложение может только администратор портала. Ничего не изменено: "
        "попросите администратора открыть приложение в Маркете.",
        "Only a portal administrator can install or repair the app. Nothing was changed: "
        "ask an administrator to open the app in the Market.",
    ),
    "needs_reinstall": (
        "Доступ приложения к порталу утерян. Переустановите приложение из Маркета.",
        "The app has lost access to the portal. Reinstall it from the Market.",
    ),
    "status_installed": ("Приложение установлено и работает.", "The app is installed and working."),
    "status_installing": ("Установка ещё идёт.", "Installation is still in progress."),
    "status_install_failed": ("Установка не завершена:", "Installation did not finish:"),
    "status_uninstalled": ("Приложение удалено с портала.", "The app was removed from the portal."),
    "tab_status": ("Состояние", "Status"),
    "tab_my_cases": ("Мои отказы", "My refusals"),
    "health_title": ("Состояние приложения на портале", "The app on this portal"),
    "health_install": ("Установка", "Installation"),
    "health_events": ("События CRM", "CRM events"),
    "health_install_retry": (
        "откройте приложение из Маркета ещё раз — установка повторится и дойдёт до конца.",
        "open the app from the Market again: the installation is repeated and finished.",
    ),
    "health_last_event": ("последнее получено {when}", "last received {when}"),
    "health_no_events": ("ещё не приходили", "none received yet"),
    "health_backlog": ("Обработка событий", "Event processing"),
    "health_backlog_value": (
        "ждут обработки: {waiting}, не обработаны из-за ошибки: {failed}",
        "waiting: {waiting}, given up after errors: {failed}",
    ),
    "health_qa": ("Сотрудники ОКК", "QA staff"),
    "health_heads": ("Руководители продаж", "Heads of sales"),
    "health_pipelines": ("Контролируемые воронки", "Guarded pipelines"),
    "health_pipelines_count": ("выбрано: {count}", "chosen: {count}"),
    "health_yes": ("назначены", "assigned"),
    "health_qa_missing": (
        "не назначены — проверки отказов некому проводить (вкладка «Настройки»)",
        "none — nobody reviews refusals (the Settings tab)",
    ),
    "health_heads_missing": (
        "не назначены — отчёты и решения по недоступным клиентам некому получать",
        "none — nobody gets the reports and decides unreachable clients",
    ),
    "health_ok": ("Всё в порядке.", "Everything is fine."),
    "tc_refreshed": ("Проверка закончена, отчёт обновлён.", "The scan is done; the report is up to date."),
    "tc_still_running": (
        "Проверка ещё идёт: отчёт обновится при следующем открытии вкладки.",
        "The scan is still running: the report will update the next time you open the tab.",
    ),
    "rota_saved": (
        "График сохранён: дежурных дней в месяце — {days}.",
        "The rota is saved: duty days this month: {days}.",
    ),
    "exchange_saved": ("Маршрутизация сохранена для всех воронок.", "Routing is saved for every pipeline."),
    "weekdays_short": ("Пн Вт Ср Чт Пт Сб Вс", "Mon Tue Wed Thu Fri Sat Sun"),
    "rota_today": ("сегодня", "today"),
    "weekdays_full": (
        "понедельник вторник среда четверг пятница суббота воскресенье",
        "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    ),
    "exchange_group_routing": ("Раздача новых сделок", "Routing new deals"),
    "exchange_group_routing_hint": (
        "Биржа: новые сделки ждут у пользователя «Биржа лидов», менеджеры берут их сами. "
        "Дежурный: сделки сразу получает дежурный менеджер дня.",
        "Exchange: new deals wait with the pool user and managers take them. Duty: the manager on duty gets them.",
    ),
    "exchange_group_limits": ("Ограничения", "Limits"),
    "exchange_group_large": ("Крупные сделки", "Large deals"),
    "exchange_group_large_hint": (
        "От этой суммы сделка идёт в коммерческий отдел, минуя биржу. Пусто — не разделять.",
        "From this amount a deal goes to the commercial department, not the exchange. Empty: no split.",
    ),
    "health_attention": ("Требует внимания:", "Needs attention:"),
    "tab_settings": ("Настройки", "Settings"),
    "settings_pipelines": ("Контролируемые воронки", "Guarded pipelines"),
    "settings_all_pipelines": ("Все воронки", "All pipelines"),
    "settings_qa_users": ("Сотрудники ОКК", "QA staff"),
    "settings_qa_departments": ("Отделы ОКК", "QA departments"),
    "settings_heads": ("Руководители продаж", "Heads of sales"),
    "settings_head_departments": ("Отделы руководителей", "Heads' departments"),
    "settings_exempt_users": ("Исключения: могут закрывать сделки", "Exempt: may close deals"),
    "settings_fine_deletions": (
        "Штрафовать менеджера за удаление сделки (CPL, как за утечку)",
        "Fine a manager who deletes a deal (the CPL, like a leak)",
    ),
    "settings_exempt_automation": (
        "Разрешить роботам и бизнес-процессам закрывать сделки",
        "Allow robots and workflows to close deals",
    ),
    "settings_reasons": ("Причины отказа", "Refusal reasons"),
    "settings_sla": ("Срок проверки ОКК, часов", "QA review deadline, hours"),
    "settings_search": ("Найти по имени…", "Search by name…"),
    "settings_save": ("Сохранить", "Save"),
    "settings_saved": ("Настройки сохранены.", "Settings saved."),
    "settings_invalid": ("Исправьте ошибки:", "Please fix:"),
    "settings_admin_only": (
        "Настройки доступны только администратору портала.",
        "Only a portal administrator can change the settings.",
    ),
    "settings_loading": ("Загрузка…", "Loading…"),
    "settings_load_failed": ("Не удалось загрузить настройки:", "Could not load the settings:"),
    "reports_load_failed": ("Не удалось построить отчёт:", "Could not build the report:"),
    # what an empty table of the reports says (each its own: never a bare «данных нет» beside a full table)
    "reports_empty_managers": ("За период отказов на проверке не было.", "No refusals were reviewed in this period."),
    "reports_empty_analytics": (
        "Подтверждённых отказов нет ни в этом, ни в предыдущем периоде.",
        "No refusal was confirmed in this period or the one before.",
    ),
    "reports_empty_reasons": ("За период отказов с причиной не было.", "No refusals with a reason in this period."),
    "reports_empty_sources": ("За период отказов по источникам не было.", "No refusals by lead source in this period."),
    "reports_empty_weeks": ("В периоде нет ни одной недели.", "The period has no weeks."),
    "reports_empty_deletions": ("За период сделки не удаляли.", "No deals were deleted in this period."),
    "reports_empty_ledger": ("За период штрафов не было.", "No fines in this period."),
    "reports_empty_missing_fields": (
        "За период переходов, отклонённых из-за незаполненных полей, не было.",
        "No moves were refused for missing fields in this period.",
    ),
    "reports_empty_comment_terms": (
        "За период комментариев к отказам не было.",
        "No refusal comments in this period.",
    ),
    "reports_empty_stages": (
        "За период отказов ни с одной стадии не было.",
        "No refusals from any stage in this period.",
    ),
    "reports_empty_recovered": (
        "За период сделки после ложных отказов в продажи не возвращали.",
        "No deals were returned to sales after a false refusal in this period.",
    ),
    "reports_empty_recovered_deals": (
        "Возвращённых в продажи сделок за период нет.",
        "No deals returned to sales in this period.",
    ),
    "reports_empty_comments": ("Комментариев к отказам за период нет.", "No refusal comments in this period."),
    "reports_empty_exchange": (
        "За период сделки с биржи лидов не брали.",
        "No deals were taken from the lead exchange in this period.",
    ),
    # a frame the page cannot be shown for (handlers.bitrix24.frame_refused)
    "frame_bad_frame": (
        "Страница открыта не из CRM или с неполными данными.",
        "The page was not opened from the CRM, or its data is incomplete.",
    ),
    "frame_unknown_portal": (
        "Приложение не установлено на этом портале.",
        "The app is not installed on this portal.",
    ),
    "frame_not_installed": (
        "Приложение удалено с этого портала.",
        "The app was removed from this portal.",
    ),
    "frame_token_mismatch": (
        "Не удалось подтвердить, что страницу открыл ваш портал.",
        "We could not confirm that your portal opened this page.",
    ),
    "frame_user_unconfirmed": (
        "Портал не подтвердил, кто открыл страницу: сеанс Битрикс24 мог истечь.",
        "The portal did not confirm who opened the page: the Bitrix24 session may have expired.",
    ),
    "frame_install_unconfirmed": (
        "Битрикс24 не подтвердил эту установку.",
        "Bitrix24 did not confirm this installation.",
    ),
    "frame_wrong_placement": (
        "Эта вкладка открывается только из карточки сделки.",
        "This tab opens only from a deal card.",
    ),
    "frame_what_to_do": (
        "Обновите страницу Битрикс24 и откройте приложение снова. Если не помогло — установите приложение "
        "заново из Маркета или обратитесь к администратору портала.",
        "Reload the Bitrix24 page and open the app again. If that does not help, install the app again from "
        "the Market or ask the portal administrator.",
    ),
}


def register(strings: dict[str, tuple[str, str]]) -> None:
    """Add a feature's strings; a key defined twice is a programming error."""
    clash = set(strings) & set(STRINGS)
    if clash:
        raise KeyError(f"interface strings defined twice: {sorted(clash)}")
    STRINGS.update(strings)


def translate(key: str, language: str) -> str:
    """The string in the portal's language; Russian unless English is asked for."""
    ru, en = STRINGS[key]
    return en if language == "en" else ru


def when(moment: datetime | None, language: str, timezone: str) -> str:
    """A moment in the portal's time zone as dd.MM.yyyy HH:mm, e.g. «08.12.2026 18:48»; «—» for none.

    Russian and English pages use the same day-first form (no seconds), so one portal reads one way.
    """
    if moment is None:
        return "—"
    return format_datetime(moment, DATETIME_PATTERN, tzinfo=ZoneInfo(timezone), locale=_locale(language))


def day(value: date | datetime | None, language: str, timezone: str | None = None) -> str:
    """A calendar day as dd.MM.yyyy, e.g. «08.12.2026», in both languages; «—» for none.

    A datetime is first moved to the portal's `timezone` (when given), so the day is the portal's day.
    """
    if value is None:
        return "—"
    if isinstance(value, datetime) and timezone:
        value = value.astimezone(ZoneInfo(timezone))
    return value.strftime("%d.%m.%Y")


def _locale(language: str) -> str:
    return "en" if language == "en" else "ru"


def number(value: Decimal | float | int, language: str) -> str:
    """A number with the locale's separators, e.g. «1 500,5»."""
    return format_decimal(value, locale=_locale(language))


CURRENCY_SIGNS = {"RUB": "₽", "RUR": "₽", "USD": "$", "EUR": "€"}
DATETIME_PATTERN = "dd.MM.yyyy HH:mm"


def money(amount: Decimal | float | int | None, currency: str, language: str) -> str:
    """An amount with the locale's grouping and the currency after it: «1 200 000 ₽» (ru), «1,200,000 ₽» (en).

    Roubles, dollars and euros show their sign («₽», «$», «€»), any other currency its ISO code
    («1 500 KZT»); whole amounts have no kopecks, others two decimals («1 500,50 ₽»). «—» for none.
    """
    if amount is None:
        return "—"
    value = Decimal(str(amount))
    pattern = "#,##0" if value == value.to_integral_value() else "#,##0.00"
    text = format_decimal(value, format=pattern, locale=_locale(language))
    sign = currency_sign(currency)
    return f"{text}\u00a0{sign}" if sign else text


def currency_sign(currency: str) -> str:
    """«₽», «$» or «€» for roubles, dollars and euros; any other currency its ISO code («KZT»)."""
    code = (currency or "").strip().upper()
    return CURRENCY_SIGNS.get(code, code)


def init_app(app: Flask) -> None:
    """Expose `translate`, `when`, `day`, `number` and `money` to templates (views pass `lang`)."""

    @app.context_processor
    def inject_translate() -> dict[str, object]:
        return {"translate": translate, "when": when, "day": day, "number": number, "money": money}
