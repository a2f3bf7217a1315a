"""Connection arguments for Airflow's metadata database in the embedded (SQLite) profile.

Airflow's scheduler, DAG processor, triggerer and API server share one SQLite file. SQLite lets one
writer in at a time; the driver's default wait for the lock is 5 s, after which the statement fails
with "database is locked" and the component that hit it may exit (Airflow standalone does not
restart it). A longer wait turns a slow moment on a busy machine into a pause instead of a crash.
Referenced by ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS``; the production profile uses PostgreSQL.
"""

from __future__ import annotations

SQLITE_BUSY_TIMEOUT_SECONDS = 120.0

SQLITE_CONNECT_ARGS = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
