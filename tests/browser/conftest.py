"""Browser tests: the app served on a local port, driven by the system Chromium through Playwright."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Use the system Chromium; Playwright must never download a browser."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install the system package 'chromium' (CI does this)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--disable-background-networking", "--disable-component-update", "--no-first-run"],
    }


class LiveServer:
    """A running app on 127.0.0.1 with its base URL."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Pages run on SQLite only: what they show does not depend on the database, which the other suites
    cover on both kinds (the demo-story test runs the real `make run` stack)."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'browser.sqlite3'}"


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    """The test app served over HTTP in a background thread."""
    with LiveServer(app) as server:
        yield server


def post_frame(page: object, url: str, fields: dict[str, str]) -> None:
    """Open `url` the way Bitrix24 opens an app page in its iframe: a form POST."""
    inputs = "".join(f'<input type="hidden" name="{key}" value="{value}">' for key, value in fields.items())
    page.set_content(  # type: ignore[attr-defined]
        f'<form id="f" method="post" action="{url}">{inputs}</form>'
        '<script>document.getElementById("f").submit()</script>'
    )
