"""Kubernetes ``batch/v1`` CronJobs -> tasks (several YAML documents per file).

Kubernetes semantics followed (the CronJob and Job references): the controller
computes times with the robfig/cron library in ``spec.timeZone`` (the controller
manager's local zone when unset); after downtime it starts only the most recent
missed time, and only within ``startingDeadlineSeconds``; it gives up with "too many
missed start times" past 100 of them; a Job's failed pods are retried up to
``backoffLimit`` (default 6) with a delay of 10 s doubling up to 6 min, and
``activeDeadlineSeconds`` bounds the whole Job. Tasks run where the daemon runs, so
everything about the pod (image, resources, volumes, service account) is reported.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from reconciler.importers.report import ImportedTask, SourceImport, checked_schedule

K8S_BACKOFF_LIMIT = 6
K8S_HISTORY = {"successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1}
_HISTORY_FIELD = {"successfulJobsHistoryLimit": "successful", "failedJobsHistoryLimit": "failed"}
_POD_MAPPED = {"containers", "restartPolicy"}
_CONTAINER_MAPPED = {"name", "command", "args", "env", "workingDir", "image"}
_VAR_REF = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")


class CronJobError(ValueError):
    """The file is not YAML a CronJob can be read from."""


def import_cronjobs(source: str, text: str, *, time_zone: str | None = None) -> SourceImport:
    """Every CronJob document of one file; other documents are reported."""
    result = SourceImport("cronjob", source)
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise CronJobError(f"{source}: not valid YAML: {exc}") from None
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict) or doc.get("kind") != "CronJob":
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            result.note_file("not mapped", f"document {index}", f"kind {kind}, not a CronJob")
            continue
        result.tasks.append(_cronjob(doc, index, time_zone))
    return result


def _get(data: Any, *path: str) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _cronjob(doc: dict[str, Any], index: int, time_zone: str | None) -> ImportedTask:
    metadata = doc.get("metadata") or {}
    task = ImportedTask(str(metadata.get("name") or f"cronjob-{index}"), None, None)
    if doc.get("apiVersion") != "batch/v1":
        task.note("approximate", f"apiVersion {doc.get('apiVersion')}", "read as batch/v1")
    if metadata.get("namespace"):
        task.note("not mapped", f"namespace {metadata['namespace']}", "tasks have no namespace")
    spec = doc.get("spec") or {}
    schedule = _schedule(task, spec.get("schedule"))
    container = _container(task, _get(spec, "jobTemplate", "spec", "template", "spec"))
    if schedule is None or container is None:
        return task
    run = _run(task, container)
    if run is None:
        return task
    out: dict[str, Any] = {"schedule": schedule}
    _zone(task, out, spec.get("timeZone"), time_zone)
    out["suspend"] = bool(spec.get("suspend", False))
    out["run"] = run
    task.note("exact", "suspend", str(out["suspend"]).lower())
    _policies(task, out, spec)
    _job(task, out, _get(spec, "jobTemplate", "spec") or {})
    _history(task, out, spec)
    task.spec = out
    _labels(task, metadata)
    return task


def _schedule(task: ImportedTask, schedule: object) -> str | None:
    if not isinstance(schedule, str) or not schedule.strip():
        task.note("not mapped", "schedule", "missing")
        return None
    fields = schedule.split()
    if len(fields) == 5:
        fields = _robfig_days(task, fields)
    return checked_schedule(task, " ".join(fields), schedule)


def _robfig_days(task: ImportedTask, fields: list[str]) -> list[str]:
    """robfig/cron reads ``?`` as ``*`` and a stepped ``*/N`` day field as restricted."""
    dom, dow = fields[2], fields[4]
    new = []
    for text, first in ((dom, "1"), (dow, "0")):
        if text == "?":
            text = "*"
        elif re.fullmatch(r"\*/\d+", text) and int(text[2:]) > 1:
            text = first + text[1:]
        new.append(text)
    if (new[0], new[1]) != (dom, dow):
        task.note("exact", "day-of-month and day-of-week", f"Kubernetes reads {dom!r} "
                  f"{dow!r} as {new[0]!r} {new[1]!r} (robfig/cron: '?' is '*', a stepped "
                  "'*/N' is restricted and ORs with the other day field); written that way")
    elif dom != "*" and dow != "*":
        task.note("exact", "day-of-month and day-of-week", f"runs when day-of-month {dom!r} "
                  f"OR day-of-week {dow!r} matches, as in Kubernetes")
    return [fields[0], fields[1], new[0], fields[3], new[1]]


def _zone(task: ImportedTask, out: dict[str, Any], zone: object, default: str | None) -> None:
    if isinstance(zone, str):
        out["timeZone"] = zone
        task.note("exact", "timeZone", zone)
        if zone not in ("UTC", "Etc/UTC"):
            task.note("approximate", "daylight saving time", "robfig/cron's handling of "
                      "skipped and repeated local times is not the reconciler's rule "
                      "(docs/schedules.md): runs in a DST gap or repeat may move")
    else:
        out["timeZone"] = default or "UTC"
        task.note("approximate", "timeZone", f"unset: Kubernetes uses the controller "
                  f"manager's local time zone; timeZone: {out['timeZone']}")


def _policies(task: ImportedTask, out: dict[str, Any], spec: dict[str, Any]) -> None:
    policy = spec.get("concurrencyPolicy", "Allow")
    if policy in ("Allow", "Forbid", "Replace"):
        out["concurrencyPolicy"] = policy
        task.note("exact", "concurrencyPolicy", f"{policy} (unset: the Kubernetes default)"
                  if "concurrencyPolicy" not in spec else str(policy))
    else:
        task.note("not mapped", f"concurrencyPolicy {policy}", "unknown policy")
    deadline = spec.get("startingDeadlineSeconds")
    if isinstance(deadline, int) and deadline > 0:
        out["startingDeadline"] = f"{deadline}s"
        task.note("exact", "startingDeadlineSeconds", f"startingDeadline: {deadline}s")
    elif deadline is not None:
        task.note("not mapped", f"startingDeadlineSeconds {deadline}", "not a positive number")
    out["catchUp"] = "Latest"
    task.note("approximate", "missed start times", "catchUp: Latest runs the most recent "
              "missed time, as Kubernetes does; Kubernetes also stops starting the CronJob "
              "when it counts more than 100 missed times, the reconciler never does")


def _job(task: ImportedTask, out: dict[str, Any], job: dict[str, Any]) -> None:
    limit = job.get("backoffLimit", K8S_BACKOFF_LIMIT)
    if isinstance(limit, int) and limit >= 0:
        kept = min(limit, 100)
        out["retries"] = {"limit": kept, "backoff": "10s", "maxBackoff": "6m"}
        task.note("approximate", "backoffLimit", f"retries: limit {kept}, 10s doubling up to "
                  "6m as Kubernetes; Kubernetes counts failed pods (restartPolicy OnFailure "
                  "restarts count too), the reconciler counts failed runs"
                  + ("" if kept == limit else f"; {limit} is above the maximum 100"))
    deadline = job.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline > 0:
        out["timeout"] = f"{deadline}s"
        task.note("approximate", "activeDeadlineSeconds", f"timeout: {deadline}s bounds each "
                  "attempt; in Kubernetes it bounds the whole Job, retries included")
    for key in sorted(set(job) - {"backoffLimit", "activeDeadlineSeconds", "template"}):
        task.note("not mapped", f"jobTemplate.spec.{key}", "no equivalent for a task")


def _history(task: ImportedTask, out: dict[str, Any], spec: dict[str, Any]) -> None:
    history = {}
    for key, default in K8S_HISTORY.items():
        value = spec.get(key, default)
        if isinstance(value, int) and value >= 0:
            history[_HISTORY_FIELD[key]] = value
            task.note("approximate", key, f"history.{_HISTORY_FIELD[key]}: {value}"
                      + ("" if key in spec else " (the Kubernetes default)")
                      + "; keeps run records where Kubernetes keeps Jobs")
    out["history"] = history


def _container(task: ImportedTask, pod: object) -> dict[str, Any] | None:
    if not isinstance(pod, dict) or not isinstance(pod.get("containers"), list):
        task.note("not mapped", "jobTemplate", "no containers in jobTemplate.spec.template.spec")
        return None
    containers = [c for c in pod["containers"] if isinstance(c, dict)]
    if not containers:
        task.note("not mapped", "containers", "empty")
        return None
    for key in sorted(set(pod) - _POD_MAPPED):
        task.note("not mapped", f"pod {key}", "tasks run where the daemon runs")
    for extra in containers[1:]:
        task.note("not mapped", f"container {extra.get('name')}", "only the first container "
                  "becomes the task")
    first = containers[0]
    if first.get("image"):
        task.note("not mapped", f"image {first['image']}", "the command runs on the daemon's "
                  "host, not in this image")
    for key in sorted(set(first) - _CONTAINER_MAPPED):
        task.note("not mapped", f"container {key}", "tasks run where the daemon runs")
    return first


def _run(task: ImportedTask, container: dict[str, Any]) -> dict[str, Any] | None:
    command = [str(a) for a in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if not command and not args:
        task.note("not mapped", "command", "no command or args: the image's default command "
                  "is not known here")
        return None
    if command:
        task.note("exact", "command and args", "run.command: command + args")
    else:
        task.note("approximate", "args", "no command: the image's ENTRYPOINT is not known, "
                  "run.command is the args alone")
    if any(_VAR_REF.search(a) for a in command + args):
        task.note("not mapped", "$(VAR) references", "Kubernetes expands them from the "
                  "container's env; run.command passes them as written")
    run: dict[str, Any] = {"command": command + args}
    env = _env(task, container.get("env"))
    if env:
        run["env"] = env
    if isinstance(container.get("workingDir"), str):
        run["workingDir"] = container["workingDir"]
        task.note("exact", "workingDir", container["workingDir"])
    return run


def _env(task: ImportedTask, env: object) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in env if isinstance(env, list) else []:
        if not isinstance(item, dict):
            continue
        name = str(item.get("name"))
        if "value" in item:
            out[name] = str(item["value"])
            task.note("exact", f"env {name}", "value")
            continue
        ref = _get(item, "valueFrom", "secretKeyRef") or _get(item, "valueFrom", "configMapKeyRef")
        if isinstance(ref, dict):
            kind = "Secret" if _get(item, "valueFrom", "secretKeyRef") else "ConfigMap"
            out[name] = {"fromEnv": name}
            task.note("not mapped", f"env {name}", f"from {kind} {ref.get('name')} key "
                      f"{ref.get('key')}: written as fromEnv: {name}; set {name} in the "
                      "daemon's environment (or use fromFile with a mounted file)")
        else:
            task.note("not mapped", f"env {name}", "valueFrom other than a Secret or "
                      "ConfigMap key")
    return out


def _labels(task: ImportedTask, metadata: dict[str, Any]) -> None:
    labels = metadata.get("labels")
    if isinstance(labels, dict) and labels:
        task.labels = {str(k): str(v) for k, v in labels.items()}
        task.note("exact", "labels", ", ".join(f"{k}={v}" for k, v in task.labels.items()))
    if metadata.get("annotations"):
        task.note("not mapped", "annotations", "not carried over")
