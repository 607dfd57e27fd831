"""Outcomes of Glue job runs and ECS tasks that moto cannot produce: failures, and containers that stop
with their task. :class:`JobOutcomes` rewrites moto's decoded answers to :data:`ACTIONS`; the server feeds
it those answers and knows nothing of Glue or ECS. The contract (rules, stop codes, exit codes, timing):
docs/local-endpoint.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTIONS",
    "DEFAULT_JOB_FAILURE",
    "SERVICES",
    "USER_STOP_EXIT_CODE",
    "JobOutcomes",
    "release_ecs_task_capacity",
]

SERVICES = ("glue", "ecs")
#: The failure reason ``set_job_outcome`` uses when none is given.
DEFAULT_JOB_FAILURE = "failed by the local endpoint (set_job_outcome)"
#: Exit code of the containers of a task stopped with StopTask (128 + SIGTERM).
USER_STOP_EXIT_CODE = 143
NORMAL_STOP_REASON = "Essential container in task exited"
USER_STOP_REASON = "Task stopped by user"

#: The moto responses :meth:`JobOutcomes.rewrite` must see, by SigV4 service name.
ACTIONS: dict[str, frozenset[str]] = {
    "glue": frozenset({"StartJobRun", "GetJobRun", "GetJobRuns"}),
    "ecs": frozenset({"RunTask", "StartTask", "StopTask", "DescribeTasks"}),
}

_PENDING_TASK_STATES = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
_STOPPED_TASK_STATES = frozenset({"DEPROVISIONING", "STOPPED"})


@dataclass
class _Rule:
    service: str
    name: str
    fail: str
    exit_code: int
    fail_runs: int | None
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        remaining = None if self.fail_runs is None else max(self.fail_runs - self.failed, 0)
        return {
            "service": self.service,
            "name": self.name,
            "fail": self.fail,
            "exit_code": self.exit_code,
            "fail_runs": self.fail_runs,
            "failed": self.failed,
            "remaining": remaining,
        }


@dataclass(frozen=True)
class _Failure:
    reason: str
    exit_code: int


@dataclass(frozen=True)
class _TaskEnd:
    exit_code: int
    stop_code: str
    reason: str


def validate(service: str, name: str, fail: Any, exit_code: Any, fail_runs: Any) -> None:
    """Raise ``ValueError`` naming the bad value and the valid choices."""
    if service not in SERVICES:
        raise ValueError(f"service must be one of {list(SERVICES)}, got {service!r}")
    if not isinstance(name, str) or not name:
        what = "the Glue job name" if service == "glue" else "the ECS task definition family"
        raise ValueError(f"name must be {what} (a non-empty string), got {name!r}")
    if fail is not None and (not isinstance(fail, str) or not fail):
        raise ValueError(f"fail must be a non-empty failure reason, or None to clear the rule; got {fail!r}")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or exit_code == 0:
        raise ValueError(f"exit_code must be a non-zero integer (0 is the normal outcome), got {exit_code!r}")
    if fail_runs is not None and (
        isinstance(fail_runs, bool) or not isinstance(fail_runs, int) or fail_runs < 1
    ):
        raise ValueError(f"fail_runs must be an integer >= 1, or None for every run; got {fail_runs!r}")


def _family(task_definition_arn: str) -> str:
    """``arn:...:task-definition/<family>:<revision>`` -> family."""
    return task_definition_arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


class JobOutcomes:
    """Failure rules and per-run decisions; rewrites moto's Glue and ECS responses. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[tuple[str, str], _Rule] = {}
        self._failures: dict[str, _Failure] = {}  # Glue run id or ECS task ARN -> its failure
        self._user_stopped: dict[str, str] = {}  # ECS task ARN -> StopTask reason
        self._task_ends: dict[str, _TaskEnd] = {}  # ECS task ARN -> how it ended, once reported

    # -- rules -------------------------------------------------------------------------------------------

    def set(
        self,
        service: str,
        name: str,
        fail: str | None = DEFAULT_JOB_FAILURE,
        exit_code: int = 1,
        fail_runs: int | None = None,
    ) -> dict[str, Any] | None:
        """Replace the rule for ``(service, name)`` (``fail=None`` removes it); return it as a dict."""
        validate(service, name, fail, exit_code, fail_runs)
        with self._lock:
            if fail is None:
                self._rules.pop((service, name), None)
                return None
            rule = _Rule(service, name, fail, exit_code, fail_runs)
            self._rules[(service, name)] = rule
            return rule.as_dict()

    def clear(self) -> None:
        """Remove every rule (runs already decided keep their outcome)."""
        with self._lock:
            self._rules.clear()

    def reset(self) -> None:
        """Forget rules and decisions (with moto's reset, which forgets the runs themselves)."""
        with self._lock:
            self._rules.clear()
            self._failures.clear()
            self._user_stopped.clear()
            self._task_ends.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.as_dict() for rule in self._rules.values()]

    # -- responses ---------------------------------------------------------------------------------------

    @staticmethod
    def handles(service: str, action: str) -> bool:
        return action in ACTIONS.get(service, ())

    def rewrite(
        self, service: str, action: str, request: dict[str, Any], response: dict[str, Any]
    ) -> list[str]:
        """Record starts and rewrite ``response`` (moto's successful answer to ``action``) in place.

        Returns the ARNs of the ECS tasks reported stopped for the first time here that stopped by
        themselves (not by ``StopTask``): moto frees their container instance's capacity only on
        ``StopTask``, so the caller frees it (:func:`release_ecs_task_capacity`).
        """
        with self._lock:
            if service == "glue":
                self._glue(action, request, response)
                return []
            if service == "ecs":
                return self._ecs(action, request, response)
            return []

    def _decide(self, service: str, name: str, run_id: str) -> None:
        rule = self._rules.get((service, name))
        if rule is None or run_id in self._failures:
            return
        if rule.fail_runs is not None and rule.failed >= rule.fail_runs:
            return
        rule.failed += 1
        self._failures[run_id] = _Failure(rule.fail, rule.exit_code)

    def _glue(self, action: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        if action == "StartJobRun":
            run_id, job = response.get("JobRunId"), request.get("JobName")
            if isinstance(run_id, str) and isinstance(job, str):
                self._decide("glue", job, run_id)
            return
        runs = (
            [response["JobRun"]]
            if isinstance(response.get("JobRun"), dict)
            else response.get("JobRuns") or []
        )
        for run in runs:
            failure = self._failures.get(str(run.get("Id")))
            if failure is not None and run.get("JobRunState") == "SUCCEEDED":
                run["JobRunState"] = "FAILED"
                run["ErrorMessage"] = failure.reason

    def _ecs(self, action: str, request: dict[str, Any], response: dict[str, Any]) -> list[str]:
        tasks = [response["task"]] if isinstance(response.get("task"), dict) else response.get("tasks") or []
        ended: list[str] = []
        for task in tasks:
            arn = str(task.get("taskArn"))
            if action in ("RunTask", "StartTask"):
                self._decide("ecs", _family(str(task.get("taskDefinitionArn", ""))), arn)
            elif action == "StopTask" and arn not in self._task_ends:
                self._user_stopped.setdefault(arn, str(request.get("reason") or USER_STOP_REASON))
            if self._ecs_task(arn, task) and arn not in self._user_stopped:
                ended.append(arn)
        return ended

    def _ecs_task(self, arn: str, task: dict[str, Any]) -> bool:
        """Rewrite one task; True when its end is reported for the first time."""
        status = task.get("lastStatus")
        if status in _PENDING_TASK_STATES:
            container_status = "PENDING"
        elif status in _STOPPED_TASK_STATES:
            container_status = "STOPPED"
        else:
            container_status = "RUNNING"
        if status not in _PENDING_TASK_STATES and status != "RUNNING":
            task["desiredStatus"] = "STOPPED"  # moto leaves RUNNING; ECS sets STOPPED once stopping starts
        end: _TaskEnd | None = None
        first_end = False
        if container_status == "STOPPED":
            end = self._task_ends.get(arn)
            if end is None:
                end = self._task_end(arn)
                self._task_ends[arn] = end
                first_end = True
            task["stopCode"] = end.stop_code
            task["stoppedReason"] = end.reason
        for container in task.get("containers") or []:
            container["lastStatus"] = container_status
            if end is not None:
                container["exitCode"] = end.exit_code
            else:
                container.pop("exitCode", None)
        return first_end

    def _task_end(self, arn: str) -> _TaskEnd:
        if arn in self._user_stopped:
            return _TaskEnd(USER_STOP_EXIT_CODE, "UserInitiated", self._user_stopped[arn])
        failure = self._failures.get(arn)
        if failure is not None:
            return _TaskEnd(failure.exit_code, "EssentialContainerExited", failure.reason)
        return _TaskEnd(0, "EssentialContainerExited", NORMAL_STOP_REASON)


def release_ecs_task_capacity(task_arn: str) -> None:
    """Give back the CPU, memory and ports an ECS task held on its container instance (EC2 launch type).

    moto does it only on ``StopTask``: a task that ends by itself keeps them, so an instance would refuse
    new tasks ("no capacity") after a dozen runs. Called once per task, when its end is first reported.
    """
    parts = task_arn.split(":")
    if len(parts) < 6 or not parts[5].startswith("task/"):
        return
    region, account = parts[3], parts[4]
    from moto.backends import get_backend

    backend: Any = get_backend("ecs")[account][region]  # type: ignore[call-overload]
    for cluster_name, tasks in list(backend.tasks.items()):
        task = tasks.get(task_arn)
        if task is None or not task.container_instance_arn:
            continue
        instance = backend.container_instances.get(cluster_name, {}).get(
            task.container_instance_arn.rsplit("/", 1)[-1]
        )
        cluster = backend.clusters.get(cluster_name)
        if instance is not None and cluster is not None:
            backend.update_container_instance_resources(instance, task.resource_requirements, removing=True)
            backend.update_cluster_resources(cluster, -1, task_state="RUNNING")
