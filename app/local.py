"""The run command on embedded defaults: Redis, web and worker (and the sandbox portal) in one go.

`python -m app.local` starts an embedded Redis on a unix socket unless REDIS_URL is set, applies
migrations, then runs gunicorn and an RQ worker with its scheduler until interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app import create_app, embedded_redis


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own session: Ctrl+C reaches only this launcher, which then stops the children in order.
    return subprocess.Popen(args, env=env, start_new_session=True)


def main() -> int:
    """Run the whole stack in the foreground; Ctrl+C stops everything it started."""
    app = create_app()
    instance = Path(app.instance_path)
    env = dict(os.environ, INSTANCE_PATH=str(instance))
    port = env.get("PORT", "5000")
    children: list[subprocess.Popen[bytes]] = []
    redis_process = None
    if not app.config["REDIS_URL"]:
        redis_process = embedded_redis.start(Path(app.config["EMBEDDED_REDIS_SOCKET"]))
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        from app import db

        with app.app_context():
            db.upgrade()
        children.append(
            _spawn([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "wsgi:app"], env)
        )
        children.append(_spawn([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], env))
        print(f"Refusal Control is running on http://127.0.0.1:{port}/ (Ctrl+C stops it)", flush=True)
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("a process of the stack exited; stopping", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
