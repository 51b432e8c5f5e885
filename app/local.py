"""The run command on embedded defaults: Redis, web and worker (and the sandbox portal) in one go.

`python -m app.local` starts an embedded Redis on a unix socket unless REDIS_URL is set, applies
migrations, then runs gunicorn and `flask worker` (the supervised workers: the events jobs in-process,
the other queues forking, with the scheduler) until interrupted.

With SANDBOX_ENABLED (what `make run` sets) it also runs the demo (sandbox.demo): a sandbox Bitrix24
portal served over TLS from this process, the web and worker pointed at it, its events delivered to
the app, and the app installed into it; the kanban is then at {PUBLIC_URL}/sandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app import create_app
from app.core import embedded_redis
from app.core.config import parse_int
from sandbox import demo


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own session: Ctrl+C reaches only this launcher, which then stops the children in order.
    return subprocess.Popen(args, env=env, start_new_session=True)


def gunicorn_command(port: str) -> list[str]:
    """The web process: gunicorn with the app's settings (app/core/gunicorn_conf.py: the access log is redacted)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:app.core.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "wsgi:app",
    ]


def main() -> int:
    """Run the whole stack in the foreground; Ctrl+C stops everything it started."""
    app = create_app()
    instance = Path(app.instance_path)
    env = dict(os.environ, INSTANCE_PATH=str(instance))
    port = env.get("PORT", "5000")
    children: list[subprocess.Popen[bytes]] = []
    redis_process = None
    sandbox_demo: demo.Demo | None = None
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def alive() -> bool:
        return not stopping and all(child.poll() is None for child in children)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if not app.config["REDIS_URL"]:
            redis_process = embedded_redis.start(Path(app.config["EMBEDDED_REDIS_SOCKET"]))
        from app.core import db

        with app.app_context():
            db.upgrade()
        if app.config["SANDBOX_ENABLED"]:
            public_url = (os.environ.get("PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/")
            sandbox_demo = demo.start(instance, public_url, parse_int(env.get("SANDBOX_PORT"), 0))
            env.update(sandbox_demo.child_env())
            print(f"Sandbox Bitrix24 portal on {sandbox_demo.url}/ (CA {sandbox_demo.ca_bundle})", flush=True)
        children.append(_spawn(gunicorn_command(port), env))
        children.append(_spawn([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], env))
        print(f"Refusal Control is running on http://127.0.0.1:{port}/ (Ctrl+C stops it)", flush=True)
        if sandbox_demo is not None:
            demo.forget_previous_portals(app, sandbox_demo)
            try:
                demo.install(app, sandbox_demo, alive)
            except demo.DemoError as error:
                if stopping:
                    return 0
                print(f"the demo could not be set up: {error}", file=sys.stderr, flush=True)
                return 1
            print(
                f"Demo ready: the app is installed in the sandbox portal. Open {sandbox_demo.public_url}/sandbox",
                flush=True,
            )
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("a process of the stack exited; stopping", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        if sandbox_demo is not None:
            sandbox_demo.sandbox.stop_delivery_thread()
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if sandbox_demo is not None:
            sandbox_demo.server.shutdown()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
