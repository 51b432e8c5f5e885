"""`flask db-upgrade` / `flask db-downgrade`: Alembic migrations (app.core.db runs them)."""

from __future__ import annotations

import click

from app.core import db as database


@click.command("db-upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Apply database migrations."""
    database.upgrade(revision)
    click.echo(f"database upgraded to {revision}")


@click.command("db-downgrade")
@click.argument("revision")
def downgrade_command(revision: str) -> None:
    """Revert database migrations."""
    database.downgrade(revision)
    click.echo(f"database downgraded to {revision}")
