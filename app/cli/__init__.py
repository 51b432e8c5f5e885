"""Flask CLI commands for operators (`flask --app wsgi ...`); create_app registers them (app._wire).

- worker.py: `worker` (migrations, periodic jobs, an RQ worker)
- inbox.py: `inbox failed`, `inbox retry`
- db.py: `db-upgrade`, `db-downgrade`
- settings.py: `settings show`, `settings set`
"""
