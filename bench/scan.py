"""Benchmark of the task-control scan against an emulated CRM (figures only, no assertions).

    TEST_REDIS_URL=redis://127.0.0.1:6379/10 .venv/bin/python -m bench.scan [--sizes 10000:20000,100000:200000]
    TEST_REDIS_URL=redis://127.0.0.1:6379/10 .venv/bin/python -m bench.scan --crm amocrm [--sizes 10000:20000]

Bitrix24 (the default): for each size (open + closed deals : tasks) it prints the CRM requests against
the floor (list pages of open tasks, open to-dos and open deals, 50 pages to a batch), wall time against
the rate-limit floor (Bitrix24: 2 requests/s, burst 50), QUERY_LIMIT_EXCEEDED answers, and the scan's
peak memory (tracemalloc, above what the emulated portal itself holds). The portal enforces the real
limit and the app paces itself through its shared limiter, so the wall time includes the limiter's waits.

amoCRM (``--crm amocrm``): the sizes are leads : tasks. The sandbox account enforces 7 requests/s (429
above) and the app runs with its production budget (AMO_RATE 7, AMO_BURST 7). It prints the requests
against the floor (pages of 250 open lead tasks, pages of 250 open leads in working statuses, and the
one pipelines read that names those statuses), the peak request rate over any one-second window as the
account saw it, 429 answers, wall time against the rate floor and the scan's peak memory: tracemalloc,
above what was allocated when the scan started, with the emulated account's request handling left out
(`ScanMeter`; the body each request answers is counted, as the app would hold it off the wire), and in
brackets everything traced in the process, the emulator's per-request work included. The locale data
babel loads once per process (about 3.7 MiB, on the first overdue notice's date) is loaded before the scan,
like the people directory.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import tracemalloc
from array import array
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import responses

from app import create_app
from app.core import db as database
from app.core import i18n
from app.core.models import Portal, utcnow
from app.crm.factory import client_for
from app.domain import directory, taskcontrol
from sandbox import Sandbox, generate_bulk
from sandbox.amocrm import AmoSandbox, api, responses_amo
from sandbox.amocrm.account import LOST, WON, ApiError
from sandbox.amocrm.seed import generate_bulk as generate_amo_bulk
from sandbox.mount import responses_sandbox

RATE, BURST = 2.0, 50
AMO_RATE, AMO_BURST, AMO_PAGE = 7.0, 7, 250


def floor_pages(portal: Any) -> int:
    """List pages the scan cannot do without: open tasks, open deal to-dos, open deals (at least one each)."""
    tasks = sum(1 for task in portal.tasks.values() if task["STATUS"] != 5)
    todos = sum(1 for a in portal.activities.values() if a["COMPLETED"] == "N" and a["OWNER_TYPE_ID"] == 2)
    deals = sum(1 for deal_id in portal.deal_ids if portal.semantic(portal.deals[deal_id].stage_id) == "P")
    return sum(max(1, math.ceil(count / 50)) for count in (tasks, todos, deals))


def run(deals: int, tasks: int, redis_url: str) -> dict[str, Any]:
    """One scan of a fresh portal of the given size."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
                "REDIS_URL": redis_url,
                "INSTANCE_PATH": tmp,
                "SECRET_KEY": "bench",
                "B24_RATE": RATE,
                "B24_BURST": BURST,
            }
        )
        with app.app_context():
            database.upgrade()
            from app.core.queue import get_redis

            get_redis().flushdb()
            sandbox = Sandbox()
            sb_portal = sandbox.seed_portal(domain="bench.bitrix24.test", deals=0)
            generate_bulk(sb_portal, deals=deals, tasks=tasks)
            sandbox.set_rate_limit(sb_portal, rate=RATE, burst=BURST)
            sandbox.call_log = deque(maxlen=100)  # the emulator's own log must not count as our memory
            refused = {"count": 0}
            log_call = sandbox._log

            def counting_log(ctx: Any, params: dict[str, Any], status: int) -> None:
                refused["count"] += status == 503
                log_call(ctx, params, status)

            sandbox._log = counting_log  # type: ignore[method-assign]
            tokens = sandbox.issue_tokens(sb_portal)
            portal = Portal(
                crm=Portal.BITRIX24,
                external_id=sb_portal.member_id,
                domain=sb_portal.domain,
                rest_base=tokens["client_endpoint"],
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                status="installed",
                installed_at=utcnow(),
                settings={"guard": {"heads": ["9"]}},
            )
            database.db.session.add(portal)
            database.db.session.commit()
            pages = floor_pages(sb_portal)
            with responses_sandbox(sandbox) as mock:
                handle_rest = sandbox.handle_rest

                def forgetful(host: str | None, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                    # `responses` keeps every request and body (globally and per route): not our memory.
                    mock.calls.reset()
                    for route in mock.registered():
                        route.calls.reset()
                    return handle_rest(host, method, params)

                sandbox.handle_rest = forgetful  # type: ignore[method-assign]
                crm = client_for(portal)
                # The people directory is a shared 10-minute cache the guard keeps warm; it is read
                # (one user.get request) outside the measured scan and reported on its own.
                before = sandbox.rest_calls(sb_portal)
                directory.users(portal.id, crm)
                directory_requests = sandbox.rest_calls(sb_portal) - before
                tracemalloc.start()
                baseline = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                counts = taskcontrol.Scanner(portal, crm).collect()
                elapsed = time.perf_counter() - started
                peak = tracemalloc.get_traced_memory()[1] - baseline
                tracemalloc.stop()
            requests = sandbox.rest_calls(sb_portal) - directory_requests
            limited = refused["count"]
            database.db.session.remove()
            database.db.engine.dispose()
    return {
        "deals": deals,
        "tasks": tasks,
        "open_deals": counts["deals"],
        "without_tasks": counts["without_tasks"],
        "overdue": counts["overdue"],
        "pages": pages,
        "floor_requests": pages / 50,
        "requests": requests,
        "directory_requests": directory_requests,
        "wall_seconds": elapsed,
        "rate_floor_seconds": max(0.0, (requests - BURST) / RATE),
        "query_limit_exceeded": limited,
        "peak_mib": peak / 2**20,
    }


def amo_floor(account: Any) -> tuple[int, int, int]:
    """(open lead tasks, open leads in working statuses, floor requests): a page of 250 each (at least one
    each) plus the pipelines read."""
    tasks = sum(1 for t in account.tasks.values() if not t["is_completed"] and t["entity_type"] == "leads")
    incoming = {
        status["id"]
        for pipeline in account.pipelines.values()
        for status in pipeline["statuses"].values()
        if status["type"] == 1
    }
    leads = sum(1 for lead in account.leads.values() if lead["status_id"] not in (WON, LOST, *incoming))
    return tasks, leads, sum(max(1, math.ceil(count / AMO_PAGE)) for count in (tasks, leads)) + 1


def peak_rate(stamps: array) -> int:
    """The most requests in any one-second window."""
    ordered = sorted(stamps)
    peak, start = 0, 0
    for end, stamp in enumerate(ordered):
        while ordered[start] <= stamp - 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


class ScanMeter:
    """The traced peak of a scan, with and without the in-process emulated CRM's request handling.

    The emulator answers inside `responses` callbacks, synchronously: while one runs, the app waits and
    holds what it held on entry, so a callback's own peak is dropped (reset on the way out) from the
    scan's figure. What a callback returns (the answer's body) and anything the emulator keeps stay
    counted; the bench keeps the emulator's request log bounded."""

    def __init__(self) -> None:
        self.baseline = 0
        self.scan = 0
        self.total = 0

    def start(self) -> None:
        """Start tracing; the baseline is what is allocated now."""
        tracemalloc.start()
        self.baseline = tracemalloc.get_traced_memory()[0]

    def stop(self) -> tuple[int, int]:
        """Stop tracing; (the scan's peak, the peak of everything traced), in bytes above the baseline."""
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.scan, self.total = max(self.scan, peak), max(self.total, peak)
        return self.scan - self.baseline, self.total - self.baseline

    def wrap(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The callback, with its own peak left out of the scan's."""

        def served(request: Any) -> Any:
            if not tracemalloc.is_tracing():
                return callback(request)
            self.scan = max(self.scan, tracemalloc.get_traced_memory()[1])
            try:
                return callback(request)
            finally:
                self.total = max(self.total, tracemalloc.get_traced_memory()[1])
                tracemalloc.reset_peak()

        return served

    def mount(self, mock: responses.RequestsMock) -> None:
        """Wrap every emulator route of the mock."""
        for route in mock.registered():
            if isinstance(route, responses.CallbackResponse):
                route.callback = self.wrap(route.callback)


def run_amo(leads: int, tasks: int, redis_url: str) -> dict[str, Any]:
    """One scan of a fresh amoCRM sandbox account of the given size."""
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = AmoSandbox()
        account = sandbox.seed_account(subdomain="bench")
        app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
                "REDIS_URL": redis_url,
                "INSTANCE_PATH": tmp,
                "SECRET_KEY": "bench",
                "AMO_CLIENT_ID": account.client_id,
                "AMO_CLIENT_SECRET": account.client_secret,
                "AMO_REDIRECT_URI": account.redirect_uri,
                "AMO_RATE": AMO_RATE,
                "AMO_BURST": AMO_BURST,
            }
        )
        with app.app_context():
            database.upgrade()
            from app.core.queue import get_redis

            get_redis().flushdb()
            generate_amo_bulk(sandbox, account, leads=leads, tasks=tasks)
            open_tasks, open_leads, floor = amo_floor(account)
            account.rate_limit = int(AMO_RATE)
            tokens = sandbox.issue_tokens(account)
            portal = Portal(
                crm=Portal.AMOCRM,
                external_id=str(account.id),
                domain=account.domain,
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                token_expires_at=datetime.now(UTC) + timedelta(days=1),
                status="installed",
                installed_at=utcnow(),
                settings={"guard": {"heads": ["9"]}},
            )
            database.db.session.add(portal)
            database.db.session.commit()
            stamps = array("d")
            throttled = 0
            handle = api.handle
            account.calls = deque(maxlen=100)  # type: ignore[assignment]  # the emulator's log is not the scan's
            meter = ScanMeter()
            with responses_amo(sandbox) as mock:

                def timed(*args: Any) -> tuple[int, Any]:
                    # When the account answered each request (429s included). `responses` keeps every
                    # request it served, globally and per route: not the scan's memory, so forget them.
                    nonlocal throttled
                    mock.calls.reset()
                    for route in mock.registered():
                        route.calls.reset()
                    stamps.append(time.monotonic())
                    try:
                        return handle(*args)
                    except ApiError as error:
                        throttled += error.status == 429
                        raise

                api.handle = timed  # type: ignore[assignment]
                meter.mount(mock)
                try:
                    crm = client_for(portal)
                    directory.users(portal.id, crm)  # the shared 10-minute people cache, outside the scan
                    i18n.when(utcnow(), portal.language, portal.timezone)  # babel's locale data, once a process
                    directory_requests = len(stamps)
                    del stamps[:]
                    throttled = 0
                    meter.start()
                    started = time.perf_counter()
                    counts = taskcontrol.Scanner(portal, crm).collect()
                    elapsed = time.perf_counter() - started
                    peak, peak_total = meter.stop()
                finally:
                    api.handle = handle  # type: ignore[assignment]
            requests = len(stamps) - throttled
            database.db.session.remove()
            database.db.engine.dispose()
    return {
        "leads": leads,
        "tasks": tasks,
        "open_tasks": open_tasks,
        "open_leads": open_leads,
        "open_deals": counts["deals"],
        "without_tasks": counts["without_tasks"],
        "overdue": counts["overdue"],
        "floor_requests": floor,
        "requests": requests,
        "directory_requests": directory_requests,
        "throttled": throttled,
        "peak_rate": peak_rate(stamps),
        "wall_seconds": elapsed,
        "rate_floor_seconds": max(0.0, (requests - AMO_BURST) / AMO_RATE),
        "peak_mib": peak / 2**20,
        "peak_total_mib": peak_total / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crm", choices=("bitrix24", "amocrm"), default="bitrix24")
    parser.add_argument("--sizes", default="10000:20000,100000:200000", help="deals:tasks pairs, comma-separated")
    parser.add_argument("--redis", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = parser.parse_args()
    results = []
    for pair in args.sizes.split(","):
        deals, tasks = (int(part) for part in pair.split(":"))
        if args.crm == "amocrm":
            result = run_amo(deals, tasks, args.redis)
            results.append(result)
            print(
                f"{deals:>7} leads {tasks:>7} tasks | open lead tasks {result['open_tasks']:>6}, "
                f"open leads {result['open_leads']:>6}, without tasks {result['without_tasks']:>6}, "
                f"overdue {result['overdue']:>6} | requests {result['requests']:>4} vs floor "
                f"{result['floor_requests']} ({result['requests'] / result['floor_requests']:.2f}x; "
                f"+{result['directory_requests']} directory) | peak {result['peak_rate']} req/s "
                f"(limit {AMO_RATE:g}), 429 answers {result['throttled']} | wall {result['wall_seconds']:.1f}s "
                f"vs rate floor {result['rate_floor_seconds']:.1f}s | peak {result['peak_mib']:.1f} MiB "
                f"({result['peak_total_mib']:.1f} MiB with the emulator)",
                flush=True,
            )
            continue
        result = run(deals, tasks, args.redis)
        results.append(result)
        print(
            f"{deals:>7} deals {tasks:>7} tasks | open deals {result['open_deals']:>6}, "
            f"without tasks {result['without_tasks']:>6}, overdue {result['overdue']:>6} | "
            f"requests {result['requests']:>4} vs floor {result['floor_requests']:.2f} "
            f"({result['requests'] / result['floor_requests']:.2f}x; {result['pages']} pages; "
            f"+{result['directory_requests']} directory) | "
            f"wall {result['wall_seconds']:.1f}s vs rate floor {result['rate_floor_seconds']:.1f}s | "
            f"QUERY_LIMIT_EXCEEDED {result['query_limit_exceeded']} | peak {result['peak_mib']:.1f} MiB",
            flush=True,
        )
    if len(results) > 1:
        print(f"peak memory ratio largest/smallest: {results[-1]['peak_mib'] / results[0]['peak_mib']:.2f}")
        if "peak_total_mib" in results[0]:
            ratio = results[-1]["peak_total_mib"] / results[0]["peak_total_mib"]
            print(f"with the emulator: {ratio:.2f}")


if __name__ == "__main__":
    main()
