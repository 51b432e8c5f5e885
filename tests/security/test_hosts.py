"""The one decision "may our credentials go to this URL": every trick a host string can play is refused."""

from __future__ import annotations

import pytest

from app.crm.hosts import ForeignHost, amo_account_host, require_amo_host, require_same_origin, same_origin

SUFFIXES = (".amocrm.ru", ".amocrm.com", ".kommo.com")


@pytest.mark.parametrize(
    "raw",
    [
        "acme.amocrm.ru",
        "ACME.amocrm.ru",
        "my-shop.kommo.com",
        "a.b.amocrm.com",
        "xn--80ak6aa92e.amocrm.ru",  # an IDNA name reaches us as punycode
    ],
)
def test_a_bare_account_host_under_an_allowed_suffix_is_accepted(raw: str) -> None:
    assert amo_account_host(raw, SUFFIXES) == raw.lower()


@pytest.mark.parametrize(
    "raw",
    [
        # the attacks of the review: the raw string ends in .amocrm.ru, the parsed host is evil.example
        "evil.example?.amocrm.ru",
        "evil.example#.amocrm.ru",
        "evil.example\\.amocrm.ru",
        "evil.example/.amocrm.ru",
        "evil.example?x=.amocrm.ru",
        # userinfo
        "acme.amocrm.ru@evil.example",
        "evil.example@acme.amocrm.ru",
        "user:pass@acme.amocrm.ru",
        # unicode dots and look-alikes (IDNA would fold them into "."), full-width letters
        "evil.example。amocrm.ru",
        "evil.example．amocrm.ru",
        "evil.example｡amocrm.ru",
        "аcme.amocrm.ru",  # Cyrillic а
        # trailing dots, empty labels, the bare suffix
        "acme.amocrm.ru.",
        "acme..amocrm.ru",
        ".amocrm.ru",
        "amocrm.ru",
        "-acme.amocrm.ru",
        "acme-.amocrm.ru",
        # suffix not at a label boundary
        "evilamocrm.ru",
        "acme.amocrm.ru.evil.example",
        # addresses, IPv6, ports
        "127.0.0.1",
        "[::1]",
        "[::1].amocrm.ru",
        "acme.amocrm.ru:8443",
        "acme.amocrm.ru:",
        "acme.amocrm.ru:99999",
        # percent-encoding, whitespace, NUL, control characters
        "evil.example%2f.amocrm.ru",
        "evil.example%00.amocrm.ru",
        "acme.amocrm%2eru",
        " acme.amocrm.ru",
        "acme.amocrm.ru ",
        "acme.amocrm.ru\n",
        "acme.amocrm.ru\x00.evil.example",
        "evil.example\x00.amocrm.ru",
        "acme.amocrm.ru\t",
        # schemes and paths
        "https://acme.amocrm.ru",
        "acme.amocrm.ru/api",
        "",
        "a" * 64 + ".amocrm.ru",
    ],
)
def test_a_host_that_is_not_a_bare_allowed_name_is_refused(raw: str) -> None:
    assert amo_account_host(raw, SUFFIXES) is None
    with pytest.raises(ForeignHost):
        require_amo_host(raw, SUFFIXES)


def test_a_port_is_accepted_only_where_configuration_allows_it() -> None:
    assert amo_account_host("acme.amocrm.ru:8443", SUFFIXES) is None
    assert amo_account_host("acme.amocrm.ru:8443", SUFFIXES, allow_port=True) == "acme.amocrm.ru:8443"
    assert amo_account_host("acme.amocrm.ru:0", SUFFIXES, allow_port=True) is None


def test_a_non_string_host_is_refused() -> None:
    assert amo_account_host(None, SUFFIXES) is None  # type: ignore[arg-type]


BASE = "https://portal.bitrix24.ru/rest/"


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.bitrix24.ru/rest/crm.deal.get.json",
        "https://PORTAL.bitrix24.ru/rest/batch.json",
        "https://portal.bitrix24.ru:443/rest/x",
    ],
)
def test_a_url_on_the_verified_host_may_carry_credentials(url: str) -> None:
    assert same_origin(url, BASE)
    assert require_same_origin(url, BASE) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://portal.bitrix24.ru/rest/x",  # not TLS
        "https://portal.bitrix24.ru.evil.example/rest/x",
        "https://evil.example/portal.bitrix24.ru/rest/x",
        "https://portal.bitrix24.ru@evil.example/rest/x",
        "https://evil.example@portal.bitrix24.ru/rest/x",  # userinfo is never sent with credentials
        "https://portal.bitrix24.ru:8443/rest/x",
        "https://portal.bitrix24.ru./rest/x",
        "https://portal.bitrix24.ru%2f@evil.example/",
        "https://portal.bitrix24.ru\\@evil.example/",
        "https://portal.bitrix24.ru\x00.evil.example/",
        " https://portal.bitrix24.ru/rest/x",
        "https://portal.bitrix24.ru /rest/x",
        "https://portal。bitrix24.ru/rest/x",
        "https://[::1]/rest/x",
        "https://127.0.0.1/rest/x",
        "https://169.254.169.254/latest/meta-data/",
        "//portal.bitrix24.ru/rest/x",
        "portal.bitrix24.ru/rest/x",
        "",
    ],
)
def test_a_url_elsewhere_never_gets_credentials(url: str) -> None:
    assert not same_origin(url, BASE)
    with pytest.raises(ForeignHost):
        require_same_origin(url, BASE)


def test_nothing_is_verified_when_no_base_was_verified() -> None:
    with pytest.raises(ForeignHost):
        require_same_origin("https://portal.bitrix24.ru/rest/x", "")


def test_a_local_sandbox_portal_with_a_port_is_its_own_origin() -> None:
    base = "https://127.0.0.1:8443/rest/"
    assert same_origin("https://127.0.0.1:8443/rest/batch.json", base)
    assert not same_origin("https://127.0.0.1:8444/rest/batch.json", base)
    assert same_origin("https://[::1]:8443/rest/x", "https://[::1]:8443/rest/")
