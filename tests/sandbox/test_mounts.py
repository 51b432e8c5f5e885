"""Both ways to reach the sandbox: `responses` in-process (as b24pysdk calls it) and HTTPS on a local port."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from b24pysdk.api.callers import call_method
from b24pysdk.errors import BitrixAPIExpiredToken

from sandbox import Sandbox, responses_sandbox, serve_tls

from .conftest import DOMAIN


def test_b24pysdk_call_method_through_responses(sandbox: Sandbox, portal, mounted) -> None:
    token = sandbox.issue_tokens(portal)["access_token"]
    answer = call_method(
        domain=DOMAIN,
        auth_token=token,
        is_webhook=False,
        api_method="crm.deal.list",
        params={"filter": {">ID": 10}, "order": {"ID": "ASC"}, "select": ["ID", "STAGE_ID"]},
    )
    assert answer["result"][0]["ID"] == "11"
    assert answer["total"] == 20
    batch = call_method(
        domain=DOMAIN,
        auth_token=token,
        is_webhook=False,
        api_method="batch",
        params={"halt": False, "cmd": {"a": "crm.deal.get?id=1", "b": "user.current"}},
    )
    assert batch["result"]["result"]["a"]["ID"] == "1"
    assert batch["result"]["result"]["b"]["ID"] == "1"
    sandbox.expire_access_tokens(portal)
    with pytest.raises(BitrixAPIExpiredToken):
        call_method(domain=DOMAIN, auth_token=token, is_webhook=False, api_method="profile", params={})


def test_form_encoded_bodies_and_query_auth(sandbox: Sandbox, portal, mounted) -> None:
    token = sandbox.issue_tokens(portal, 3)["access_token"]
    form = requests.post(
        f"https://{DOMAIN}/rest/crm.deal.list.json",
        data={"auth": token, "filter[>ID]": "28", "select[0]": "ID", "order[ID]": "DESC"},
        timeout=5,
    )
    assert [r["ID"] for r in form.json()["result"]] == ["30", "29"]
    query = requests.get(f"https://{DOMAIN}/rest/user.current?auth={token}", timeout=5)
    assert query.json()["result"]["ID"] == "3"
    no_auth = requests.post(f"https://{DOMAIN}/rest/profile", json={}, timeout=5)
    assert no_auth.status_code == 401 and no_auth.json()["error"] == "NO_AUTH_FOUND"


def test_recordings_are_served(sandbox: Sandbox, portal, mounted) -> None:
    token = sandbox.issue_tokens(portal)["access_token"]
    calls = requests.post(
        f"https://{DOMAIN}/rest/crm.activity.list",
        json={"auth": token, "filter": {"OWNER_TYPE_ID": 2, "TYPE_ID": 2}, "select": ["ID", "OWNER_ID", "FILES"]},
        timeout=5,
    ).json()["result"]
    with_files = [c for c in calls if c["FILES"]]
    assert with_files
    url = with_files[0]["FILES"][0]["url"]
    assert url.startswith(f"https://{DOMAIN}/bitrix/tools/crm_show_file.php?fileId=")
    audio = requests.get(url, timeout=5)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"


def test_other_hosts_are_not_served(sandbox: Sandbox, portal) -> None:
    with responses_sandbox(sandbox), pytest.raises(requests.exceptions.ConnectionError):
        requests.get("https://elsewhere.example/rest/profile", timeout=5)


def test_tls_server(sandbox: Sandbox, tmp_path: Path) -> None:
    server = serve_tls(sandbox, tmp_path / "tls")
    try:
        portal = sandbox.seed_portal(domain=server.portal_domain)
        tokens = sandbox.issue_tokens(portal, 2)
        answer = requests.post(
            f"https://{server.portal_domain}/rest/user.current.json",
            json={"auth": tokens["access_token"]},
            verify=server.ca_file,
            timeout=5,
        )
        assert answer.json()["result"]["ID"] == "2"
        assert tokens["server_endpoint"] == f"https://localhost:{server.port}/rest/"
        refreshed = requests.get(
            f"https://{server.oauth_host}/oauth/token/",
            params={"grant_type": "refresh_token", "client_id": portal.client_id,
                    "client_secret": portal.client_secret, "refresh_token": tokens["refresh_token"]},
            verify=server.ca_file,
            timeout=5,
        )  # fmt: skip
        assert (
            refreshed.status_code == 200
            and refreshed.json()["client_endpoint"] == f"https://{server.portal_domain}/rest/"
        )
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://{server.portal_domain}/rest/profile", timeout=5, verify=True)
    finally:
        server.shutdown()


def test_concurrent_writes_over_tls(sandbox: Sandbox, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = serve_tls(sandbox, tmp_path / "tls")
    try:
        portal = sandbox.seed_portal(domain=server.portal_domain, deals=0)
        sandbox.set_rate_limit(portal, enabled=False)
        token = sandbox.issue_tokens(portal)["access_token"]

        def add(n: int) -> int:
            answer = requests.post(
                f"https://{server.portal_domain}/rest/crm.deal.add.json",
                json={"auth": token, "fields": {"TITLE": f"deal {n}"}},
                verify=server.ca_file,
                timeout=10,
            )
            return answer.json()["result"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(add, range(40)))
        assert sorted(ids) == list(range(1, 41))
    finally:
        server.shutdown()
