"""Infrastructure: configuration, database, Redis and the queue, the inbox, logs, security."""
