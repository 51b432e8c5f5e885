"""Bitrix24: the app's page opens for a portal whose zone was never read while the portal cannot tell it: the page
still opens (on Moscow time, said so), the next pages do not keep asking, and a page after the pause reads it."""

from __future__ import annotations

from app.core.db import db
from app.core.queue import get_redis
from app.domain import timezones
from tests.integration.b24 import B24

ADMIN = 1


def open_app(b24: B24, user_id: int = ADMIN) -> str:
    page = b24.client.post(f"/b24/app?DOMAIN={b24.portal.domain}&LANG=ru", data=b24.frame(user_id))
    assert page.status_code == 200, page.get_data(as_text=True)
    return page.get_data(as_text=True)


def test_a_portal_that_cannot_tell_its_zone_still_opens_and_is_asked_again_later(installed: B24):
    installed.portal.time_zone = "Asia/Novosibirsk"
    installed.portal.users[ADMIN]["TIME_ZONE"] = "Asia/Novosibirsk"
    ours = installed.our_portal()
    ours.settings = {key: value for key, value in ours.settings.items() if key != timezones.SECTION}
    ours.timezone = "Europe/Moscow"
    db.session.commit()
    installed.sandbox.force_error(installed.portal, "server.time", 500, "INTERNAL_SERVER_ERROR", times=-1)

    page = open_app(installed)
    assert '<strong id="rc-tz-current" title="Europe/Moscow">МСК (UTC+3)</strong>' in page
    assert installed.our_portal().timezone == "Europe/Moscow"
    asked = installed.sandbox.rest_calls(installed.portal, "server.time")
    assert asked >= 1

    installed.sandbox.force_error(installed.portal, "server.time", 500, "INTERNAL_SERVER_ERROR", times=0)
    open_app(installed)
    assert installed.sandbox.rest_calls(installed.portal, "server.time") == asked, "not again within the pause"
    assert installed.our_portal().timezone == "Europe/Moscow"

    get_redis().delete(timezones.FIRST_READ_KEY.format(portal_id=ours.id))  # the pause is over
    page = open_app(installed)
    assert '<strong id="rc-tz-current" title="Asia/Novosibirsk">Новосибирск (UTC+7)</strong>' in page
    assert installed.our_portal().timezone == "Asia/Novosibirsk"
