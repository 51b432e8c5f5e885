"""gunicorn settings of the web process (Procfile and `make run`: `--config python:app.core.gunicorn_conf`).

The access log goes through app.core.logs.AccessLogger: request paths without their query strings (OAuth codes,
uninstall signatures), the amoCRM webhook secret masked, and no credential headers.
"""

logger_class = "app.core.logs.AccessLogger"
# The combined log format, with the request line built by AccessLogger from the safe path.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
