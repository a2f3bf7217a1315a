"""A small client for Airflow's REST API (v2), used by the demo and the end-to-end tests.

It drives Airflow the way an operator's tooling does: log in, wait for a DAG to be parsed,
create a backfill or trigger a run, and wait for the runs to finish.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"success", "failed"})
BUSY_WAIT_SECONDS = 180.0
SCHEDULER_DOWN_SECONDS = 90.0


class AirflowApiError(RuntimeError):
    """Airflow answered with an error; the message carries the status and body."""


class AirflowClient:
    """Airflow REST API v2 with a token from the simple auth manager.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080``.
        username: an Airflow user.
        password: that user's password.
    """

    def __init__(self, base_url: str, username: str, password: str) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Airflow URL must be http(s), got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        url = self.base_url + path  # http(s) only: checked in __init__
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - configured URL
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {path} -> HTTP {error.code}: {detail}") from error
        return json.loads(payload) if payload else None

    def token(self) -> str:
        if self._token is None:
            answer = self._request("POST", "/auth/token", self._credentials, auth=False)
            self._token = str(answer["access_token"])
        return self._token

    def get_dag(self, dag_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}")

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id`` without import errors."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get_dag(dag_id)
            except AirflowApiError as error:
                if "404" not in str(error) or time.monotonic() > deadline:
                    errors = self._request("GET", "/api/v2/importErrors")
                    raise AirflowApiError(f"DAG {dag_id} not available: {error}; import errors: {errors}") from error
            time.sleep(2.0)

    def ensure_pool(self, name: str, slots: int, description: str) -> None:
        """Create a pool, or set its slots and description if it exists."""
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        try:
            self._request("POST", "/api/v2/pools", body)
        except AirflowApiError as error:
            if "HTTP 409" not in str(error):
                raise
            self._request("PATCH", f"/api/v2/pools/{urllib.parse.quote(name, safe='')}", body)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def create_backfill(
        self,
        dag_id: str,
        start: dt.date,
        end: dt.date,
        *,
        max_active_runs: int = 3,
        reprocess: str = "completed",
        conf: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Create runs for every logical date from ``start`` to ``end`` (inclusive).

        Retried for a bounded time while Airflow is busy: 503 while another component holds
        SQLite's write lock (the embedded default), 409 while an earlier backfill of the DAG is
        still open (the scheduler closes it on a later loop once its runs have finished). Returns
        None when every date already has a run that the reprocess behaviour keeps.
        """
        body = {
            "dag_id": dag_id,
            "from_date": f"{start.isoformat()}T00:00:00Z",
            "to_date": f"{end.isoformat()}T00:00:00Z",
            "reprocess_behavior": reprocess,
            "max_active_runs": max_active_runs,
            "dag_run_conf": conf or {},
        }
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                return self._request("POST", "/api/v2/backfills", body)
            except AirflowApiError as error:
                if "No runs to create" in str(error):
                    log.info("%s: every date in [%s, %s] already has a run; nothing to backfill", dag_id, start, end)
                    return None
                busy = "HTTP 503" in str(error) or "already a running backfill" in str(error)
                if not busy or time.monotonic() > deadline:
                    raise
                log.info("Airflow busy (%s), retrying backfill creation", str(error)[:80])
                time.sleep(3.0)

    def wait_for_backfill(self, backfill_id: int, timeout: float = 1800.0) -> dict[str, Any]:
        """Wait until the scheduler marks a backfill complete (all its runs finished)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                backfill = self._request("GET", f"/api/v2/backfills/{backfill_id}")
            except AirflowApiError as error:
                # On SQLite a just-created backfill can be invisible to the next read for a moment.
                if "HTTP 404" not in str(error) or time.monotonic() > deadline:
                    raise
                backfill = {}
            if backfill.get("completed_at"):
                return backfill
            if time.monotonic() > deadline:
                raise AirflowApiError(f"backfill {backfill_id} not complete after {timeout:.0f}s")
            time.sleep(3.0)

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's backfills, oldest first (from the API, the CLI or the UI's "Run Backfill")."""
        query = urllib.parse.urlencode({"dag_id": dag_id, "limit": 100, "order_by": "id"})
        return list(self._request("GET", f"/api/v2/backfills?{query}")["backfills"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """One try's log of a task as text (what the UI's log tab shows)."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/logs/{try_number}?full_content=true"
        )
        content = self._request("GET", path).get("content")
        if isinstance(content, list):  # structured log: one event per line
            return "\n".join(json.dumps(e) if isinstance(e, dict) else str(e) for e in content)
        return str(content)

    def trigger_day(self, dag_id: str, day: dt.date, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """Trigger one run that processes ``day``, as the UI's trigger form does.

        A manual run processes the last complete interval before its logical date (data-interval
        semantics), so the run for ``day`` is triggered at the start of the next day.
        """
        logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        return self._request(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            {
                "logical_date": logical.isoformat(),
                "conf": conf or {},
            },
        )

    def clear_run(self, dag_id: str, run_id: str) -> None:
        """Rerun every task of one run (the UI's "Clear" on a run), which goes back to queued."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/clear"
        self._request("POST", path, {"dry_run": False, "only_failed": False})

    def dag_runs(self, dag_id: str, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
        """Runs that process a day within [start, end]: their data interval starts on that day.

        Scheduled and backfill runs have that day as logical date; a manual run has a moment of the
        next day (when it was triggered: it processes the last complete day before it).
        """
        query = urllib.parse.urlencode(
            {
                "logical_date_gte": f"{start.isoformat()}T00:00:00Z",
                "logical_date_lt": f"{(end + dt.timedelta(days=2)).isoformat()}T00:00:00Z",
                "order_by": "logical_date",
                "limit": 100,
            }
        )
        runs = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}")["dag_runs"]
        return [r for r in runs if start <= dt.date.fromisoformat(str(r["data_interval_start"])[:10]) <= end]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        return list(self._request("GET", path)["task_instances"])

    def wait_for_runs(
        self, dag_id: str, start: dt.date, end: dt.date, expected: int, timeout: float = 1800.0
    ) -> list[dict[str, Any]]:
        """Wait until ``expected`` runs in [start, end] have finished; returns them.

        Gives up early, saying so, when the scheduler has reported unhealthy for
        ``SCHEDULER_DOWN_SECONDS``: queued runs cannot start without it.
        """
        deadline = time.monotonic() + timeout
        last = ""
        unhealthy_since: float | None = None
        while True:
            runs = self.dag_runs(dag_id, start, end)
            states = [r["state"] for r in runs]
            summary = ", ".join(f"{s}={states.count(s)}" for s in sorted(set(states)))
            if summary != last:
                log.info("%s runs: %s", dag_id, summary or "none yet")
                last = summary
            if len(runs) >= expected and all(s in TERMINAL_STATES for s in states):
                return runs
            now = time.monotonic()
            scheduler = self.component_status("scheduler")
            if scheduler == "healthy":
                unhealthy_since = None
            elif unhealthy_since is None:
                unhealthy_since = now
            elif now - unhealthy_since > SCHEDULER_DOWN_SECONDS:
                raise AirflowApiError(
                    f"{dag_id}: the scheduler has been {scheduler} for {now - unhealthy_since:.0f}s, "
                    f"runs cannot progress ({summary}); see the scheduler's log"
                )
            if now > deadline:
                raise AirflowApiError(f"{dag_id}: runs not finished after {timeout:.0f}s ({summary})")
            time.sleep(3.0)

    def component_status(self, component: str) -> str:
        """``healthy``, ``unhealthy`` or ``unknown`` for a component of the health endpoint."""
        try:
            health = self._request("GET", "/api/v2/monitor/health", auth=False)
        except (AirflowApiError, OSError):  # an API server that is down is also "unknown"
            return "unknown"
        return str((health.get(component) or {}).get("status") or "unknown")
