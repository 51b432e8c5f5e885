"""Strings of the page details found in the walk through every page (issue #20): month names for the rota's
month picker, the note a chart shows when the period has nothing to draw, the settings' group of rules."""

from __future__ import annotations

from app.core import i18n

i18n.register(
    {
        "months_full": (
            "Январь Февраль Март Апрель Май Июнь Июль Август Сентябрь Октябрь Ноябрь Декабрь",
            "January February March April May June July August September October November December",
        ),
        "settings_rules": ("Правила контроля", "Control rules"),
        "pb_preset_show": ("Стадии шаблона, шаги и критерии", "The preset's stages, steps and criteria"),
        "chart_empty": (
            "За период нечего показать: график появится, когда в периоде будут отказы.",
            "Nothing to show for the period: the chart appears once the period has refusals.",
        ),
    }
)
