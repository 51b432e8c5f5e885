"""`flask inbox failed` / `flask inbox retry`: inbound CRM deliveries the app gave up on."""

from __future__ import annotations

import click
import sqlalchemy as sa

from app.core import inbox
from app.core.db import db
from app.core.models import InboxItem


@click.group("inbox")
def inbox_command() -> None:
    """Inbound CRM deliveries: list the ones given up on, queue them again."""


@inbox_command.command("failed")
@click.option("--limit", default=50, show_default=True, help="Show at most this many, oldest first.")
def inbox_failed_command(limit: int) -> None:
    """List deliveries the app gave up on, with the last error of each."""
    rows = db.session.scalars(
        sa.select(InboxItem).where(InboxItem.status == InboxItem.FAILED).order_by(InboxItem.id).limit(limit)
    ).all()
    if not rows:
        click.echo("No failed deliveries.")
        return
    for row in rows:
        click.echo(
            f"{row.id}\tportal {row.portal_id}\t{row.source}/{row.kind}\t{row.attempts} attempts\t"
            f"{row.received_at.isoformat(timespec='seconds')}\t{row.last_error[:200]}"
        )


@inbox_command.command("retry")
@click.argument("inbox_ids", nargs=-1, type=int)
@click.option("--all", "all_failed", is_flag=True, help="Every failed delivery.")
def inbox_retry_command(inbox_ids: tuple[int, ...], all_failed: bool) -> None:
    """Queue failed deliveries again with a fresh set of attempts (once their cause is fixed)."""
    if bool(inbox_ids) == all_failed:
        raise click.UsageError("name the deliveries to retry by id, or pass --all")
    queued = inbox.retry_failed(None if all_failed else list(inbox_ids))
    missing = sorted(set(inbox_ids) - set(queued))
    if missing:
        click.echo(f"Not failed or not found, left as they are: {', '.join(map(str, missing))}")
    click.echo(f"Queued again: {len(queued)}" + (f" ({', '.join(map(str, queued))})" if queued else ""))
