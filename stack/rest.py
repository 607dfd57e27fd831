"""A small client of Airflow's REST API (standard library only), as a user's script would drive it.

Authentication is SimpleAuthManager's (the stack's and the compose file's): ``POST /auth/token`` with the
login, then ``Authorization: Bearer <token>`` (renewed once on a 401). Used by ``make stack`` for its
health checks and by the system tests::

    api = AirflowApi("http://127.0.0.1:8080")
    run = api.trigger("retraining_chain")            # unpauses first; no logical date, like the UI
    run = api.wait_for_run("retraining_chain", run["dag_run_id"])
    assert run["state"] == "success"
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import StackError

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_UNSET: Any = object()


class ApiError(StackError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class AirflowApi:
    def __init__(
        self, base_url: str, username: str = "airflow", password: str = "airflow", timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    # ---------------------------------------------------------------------------------------------
    # transport

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        url = self.base_url + path
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            url += "?" + urllib.parse.urlencode(
                [(k, str(x).lower() if isinstance(x, bool) else x) for k, v in pairs for x in _listify(v)]
            )
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def request(
        self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None
    ) -> Any:
        """``method path`` (``/api/v2/...``) as JSON; the decoded answer, or :class:`ApiError`."""
        try:
            return self._send(method, path, body, query)
        except ApiError as exc:
            if exc.status != 401:
                raise
            self._token = None  # expired: log in again, once
            return self._send(method, path, body, query)

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any, **query: Any) -> Any:
        return self.request("PATCH", path, body, query=query)

    def token(self) -> str:
        if self._token is None:
            answer = self._send(
                "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
            )
            self._token = str(answer["access_token"])
        return self._token

    def paginate(self, path: str, key: str, page_size: int = 100, **query: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint (``offset``/``limit`` paging), ``key`` naming the list."""
        offset = 0
        while True:
            page = self.get(path, limit=page_size, offset=offset, **query)
            items = page[key]
            yield from items
            offset += len(items)
            if not items or offset >= page.get("total_entries", 0):
                return

    # ---------------------------------------------------------------------------------------------
    # monitoring

    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no login needed)."""
        return self._send("GET", "/api/v2/monitor/health", auth=False)  # type: ignore[no-any-return]

    def alive_jobs(self, job_type: str, hostname: str | None = None) -> list[dict[str, Any]]:
        """Running jobs of ``job_type`` (``TriggererJob``, ``DagProcessorJob``, ``SchedulerJob``) whose
        heartbeat is recent — what ``airflow jobs check --job-type X --hostname H`` tests."""
        answer = self.get(
            "/api/v2/jobs", job_type=job_type, hostname=hostname, is_alive=True, job_state="running"
        )
        return list(answer["jobs"])

    # ---------------------------------------------------------------------------------------------
    # DAGs and runs

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{_q(dag_id)}")  # type: ignore[no-any-return]

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """The DAG once the dag-processor has parsed it (404 until then)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.dag(dag_id)
            except ApiError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(1.0)

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.patch(f"/api/v2/dags/{_q(dag_id)}", {"is_paused": paused})  # type: ignore[no-any-return]

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        logical_date: str | None = None,
        run_id: str | None = None,
        unpause: bool = True,
    ) -> dict[str, Any]:
        """Create a manual run as the UI's Trigger button does: ``logical_date`` null unless given (an
        ISO 8601 string). Waits for the DAG to be parsed and unpauses it first (unless ``unpause=False``)."""
        self.wait_for_dag(dag_id)
        if unpause:
            self.set_paused(dag_id, False)
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        return self.post(f"/api/v2/dags/{_q(dag_id)}/dagRuns", body)  # type: ignore[no-any-return]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")  # type: ignore[no-any-return]

    def dag_runs(self, dag_id: str, **query: Any) -> list[dict[str, Any]]:
        return list(self.paginate(f"/api/v2/dags/{_q(dag_id)}/dagRuns", "dag_runs", **query))

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 600.0, poll: float = 1.0
    ) -> dict[str, Any]:
        """The run once it is ``success`` or ``failed``; :class:`StackError` naming its unfinished task
        instances when ``timeout`` passes first (a safety net, not a measurement)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                pending = {
                    ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): ti[
                        "state"
                    ]
                    for ti in self.task_instances(dag_id, run_id)
                    if ti["state"] not in ("success", "skipped", "failed", "upstream_failed")
                }
                raise StackError(
                    f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f}s: {pending}"
                )
            time.sleep(poll)

    def wait_until_idle(self, dag_id: str, timeout: float = 600.0, poll: float = 1.0) -> list[dict[str, Any]]:
        """Every run of the DAG, once none is queued or running (unpausing a DAG with a schedule makes
        the scheduler create its latest run beside a triggered one)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.dag_runs(dag_id)
            busy = [r["dag_run_id"] for r in runs if r["state"] not in TERMINAL_RUN_STATES]
            if not busy:
                return runs
            if time.monotonic() > deadline:
                raise StackError(f"{dag_id}: runs {busy} still unfinished after {timeout:.0f}s")
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        return list(self.paginate(path, "task_instances"))

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
        if map_index >= 0:
            path += f"/{map_index}"
        return self.get(path)  # type: ignore[no-any-return]

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        path = (
            f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
            f"/xcomEntries/{_q(key)}"
        )
        return self.get(path, map_index=map_index, deserialize=True)["value"]

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """The whole log of one try (``GET .../taskInstances/{task}/logs/{try}``, ``full_content``): its
        structured lines (``event``, ``level``, ``timestamp``, and ``error_detail`` on an exception)."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
        answer = self.get(path, full_content=True, map_index=map_index)
        return [line if isinstance(line, dict) else {"event": line} for line in answer["content"]]

    def task_instance_links(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, str | None]:
        """The extra links of a task instance (``GET .../taskInstances/{task}/links``): name -> URL."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/links"
        return dict(self.get(path, map_index=map_index)["extra_links"])

    def clear_task_instances(
        self, dag_id: str, run_id: str, task_ids: list[str], **options: Any
    ) -> dict[str, Any]:
        """``POST /api/v2/dags/{dag}/clearTaskInstances`` for tasks of one run (``dry_run`` False unless
        given; other options as in the API: ``include_downstream``, ``only_failed`` ...)."""
        body = {"dag_run_id": run_id, "task_ids": task_ids, "dry_run": False, **options}
        return self.post(f"/api/v2/dags/{_q(dag_id)}/clearTaskInstances", body)  # type: ignore[no-any-return]

    # ---------------------------------------------------------------------------------------------
    # pools and assets

    def ensure_pool(self, name: str, slots: int, description: str, include_deferred: bool) -> dict[str, Any]:
        """Create the pool, or update it to these settings."""
        body = {
            "name": name,
            "slots": slots,
            "description": description,
            "include_deferred": include_deferred,
        }
        try:
            current = self.get(f"/api/v2/pools/{_q(name)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return self.post("/api/v2/pools", body)  # type: ignore[no-any-return]
        if all(current.get(k) == v for k, v in body.items()):
            return current  # type: ignore[no-any-return]
        return self.patch(f"/api/v2/pools/{_q(name)}", body)  # type: ignore[no-any-return]

    def asset_events(self, **query: Any) -> list[dict[str, Any]]:
        """``GET /api/v2/assets/events`` (filters: ``asset_id``, ``source_dag_id``, ``source_run_id`` ...)."""
        return list(self.paginate("/api/v2/assets/events", "asset_events", **query))

    def assets(self, **query: Any) -> list[dict[str, Any]]:
        return list(self.paginate("/api/v2/assets", "assets", **query))


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _listify(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
