"""Loads every kind of response a Wharf node gives into marathon-python's
model classes, the way that client does (`Model.from_json(body)`; it passes
every field to the constructor and fails on any it does not know), and checks
that what a user reads survives. Usage: shapes_check.py URL.
Exits non-zero with a message on the first thing that does not work."""

import collections
import collections.abc
import json
import sys
import threading
import time

# marathon-python predates Python 3.10, which removed these aliases.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence", "Callable"):
    setattr(collections, _name, getattr(collections.abc, _name))

import requests  # noqa: E402
from marathon import MarathonClient  # noqa: E402
from marathon.models import MarathonApp, MarathonDeployment, MarathonGroup, MarathonInfo  # noqa: E402
from marathon.models import MarathonQueueItem, MarathonTask  # noqa: E402
from marathon.models.events import EventFactory  # noqa: E402

APP_EMBEDS = ["tasks", "counts", "deployments", "readiness", "lastTaskFailure", "failures", "taskStats"]

# Every event type Wharf sends, and what makes it happen below.
EVENT_TYPES = {
    "event_stream_attached",
    "api_post_event",
    "status_update_event",
    "health_status_changed_event",
    "failed_health_check_event",
    "unhealthy_instance_kill_event",
    "deployment_info",
    "deployment_step_success",
    "deployment_success",
    "deployment_step_failure",
    "deployment_failed",
    "group_change_success",
    "app_terminated_event",
    "instance_changed_event",
}


def wait(what, cond, timeout=40):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def check(what, ok):
    if not ok:
        raise SystemExit(f"check failed: {what}")
    print(f"ok: {what}")


def load(what, make):
    """Builds model objects from a response; a field the model does not
    know makes its constructor raise, which is the failure we look for."""
    try:
        out = make()
    except Exception as e:  # noqa: BLE001 - any failure to build is the finding
        raise SystemExit(f"{what}: marathon-python could not load it: {type(e).__name__}: {e}")
    print(f"ok: {what} loads")
    return out


class Events:
    """The raw event stream, each event built with EventFactory as the
    client's event_stream() does, per type: the first failure is kept."""

    def __init__(self, client):
        self.seen = {}
        self.failures = {}
        self.lock = threading.Lock()
        self.stream = client.event_stream(raw=True)
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        factory = EventFactory()
        for raw in self.stream:
            data = json.loads(raw.strip())
            kind = data.get("eventType")
            try:
                obj = factory.process(data)
                with self.lock:
                    self.seen.setdefault(kind, obj)
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.failures.setdefault(kind, f"{type(e).__name__}: {e}: {json.dumps(data)[:400]}")

    def has(self, kind):
        with self.lock:
            return kind in self.seen or kind in self.failures


def app_def(id, **kw):
    d = {"id": id, "cmd": "exec sleep 1000", "cpus": 0.02, "mem": 16, "instances": 1}
    d.update(kw)
    return d


def main(url):
    c = MarathonClient(url)
    events = Events(c)
    wait("the event stream", lambda: events.has("event_stream_attached"))
    post = lambda path, body: requests.post(url + path, json=body, timeout=10)  # noqa: E731

    # A healthy, ready web server; an app that keeps failing (lastTaskFailure);
    # one whose health check fails (unhealthy kill); one that cannot be
    # placed twice on one node (waits in the queue on its constraint).
    web = app_def(
        "/shapes/web",
        cmd="exec python3 -m http.server $PORT0",
        cpus=0.1,
        mem=64,
        portDefinitions=[{"port": 0, "name": "http"}],
        healthChecks=[{"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 2,
                       "gracePeriodSeconds": 10, "timeoutSeconds": 1}],
        readinessChecks=[{"name": "ready", "protocol": "HTTP", "path": "/", "portName": "http",
                          "intervalSeconds": 2, "timeoutSeconds": 1}],
    )
    for body in [
        web,
        app_def("/shapes/fail", cmd="exit 3"),
        app_def("/shapes/sick", portDefinitions=[{"port": 0}],
                healthChecks=[{"protocol": "TCP", "portIndex": 0, "intervalSeconds": 2, "timeoutSeconds": 1,
                               "gracePeriodSeconds": 0, "maxConsecutiveFailures": 1}]),
        app_def("/shapes/unique", instances=2, constraints=[["hostname", "UNIQUE"]]),
    ]:
        r = post("/v2/apps", body)
        check(f"create {body['id']} ({r.status_code})", r.status_code == 201)
    r = post("/v2/groups", {"id": "/shapes-group", "apps": [
        app_def("db"),
        app_def("api", dependencies=["/shapes-group/db"]),
    ]})
    check(f"create group with dependencies ({r.status_code})", r.status_code == 201)

    wait("web healthy and ready", lambda: c.get_app("shapes/web").tasks_healthy == 1
         and not [d for d in c.list_deployments() if "/shapes/web" in d.affected_apps])
    wait("a recorded task failure", lambda: c.get_app("shapes/fail", embed_last_task_failure=True).last_task_failure)
    wait("the group's apps running", lambda: c.get_app("shapes-group/api").tasks_running == 1)
    wait("an unhealthy kill", lambda: events.has("unhealthy_instance_kill_event"))

    # Apps, with every embed, through the client and as raw bodies.
    apps = load("list_apps with every embed", lambda: c.list_apps(
        embed_tasks=True, embed_counts=True, embed_deployments=True, embed_readiness=True,
        embed_last_task_failure=True, embed_failures=True, embed_task_stats=True))
    check("list_apps lists every app", {"/shapes/web", "/shapes/fail", "/shapes/unique"} <= {a.id for a in apps})
    query = "&".join(f"embed=apps.{e}" for e in APP_EMBEDS)
    raw_apps = requests.get(f"{url}/v2/apps?{query}", timeout=10).json()["apps"]
    load("GET /v2/apps?embed=<all> into MarathonApp", lambda: [MarathonApp.from_json(a) for a in raw_apps])
    for a in raw_apps:
        one = requests.get(f"{url}/v2/apps{a['id']}?" + query.replace("apps.", "app."), timeout=10).json()["app"]
        load(f"GET /v2/apps{a['id']} with every embed", lambda: MarathonApp.from_json(one))
        versions = c.list_versions(a["id"])
        load(f"a stored version of {a['id']}", lambda: c.get_version(a["id"], versions[0]))
    got = load("get_app with every embed", lambda: c.get_app(
        "shapes/web", embed_tasks=True, embed_counts=True, embed_deployments=True, embed_readiness=True,
        embed_last_task_failure=True, embed_failures=True, embed_task_stats=True))
    check("web's embedded task is a MarathonTask on a port",
          len(got.tasks) == 1 and isinstance(got.tasks[0], MarathonTask) and got.tasks[0].ports)
    check("web's health check result reads alive", got.tasks[0].health_check_results
          and got.tasks[0].health_check_results[0].alive is True)
    check("web's counts", (got.tasks_running, got.tasks_healthy, got.tasks_unhealthy) == (1, 1, 0))
    check("web's health and readiness checks", got.health_checks[0].protocol == "HTTP"
          and got.readiness_checks[0].name == "ready")
    failed = c.get_app("shapes/fail", embed_last_task_failure=True)
    check("fail's lastTaskFailure reads its state and app",
          failed.last_task_failure.state == "TASK_FAILED" and failed.last_task_failure.app_id == "/shapes/fail")
    unique = c.get_app("shapes/unique", embed_deployments=True)
    check("unique's constraint", [(x.field, x.operator) for x in unique.constraints] == [("hostname", "UNIQUE")])

    # Tasks.
    tasks = load("list_tasks", lambda: c.list_tasks())
    check("tasks name their apps", {"/shapes/web", "/shapes/unique"} <= {t.app_id for t in tasks})
    raw_tasks = requests.get(f"{url}/v2/tasks", timeout=10).json()["tasks"]
    load("GET /v2/tasks into MarathonTask", lambda: [MarathonTask.from_json(t) for t in raw_tasks])
    load("GET /v2/apps/shapes/web/tasks", lambda: c.list_tasks("shapes/web"))

    # Deployments: unique's stays in flight (its second instance cannot be placed).
    deps = load("list_deployments", lambda: c.list_deployments())
    inflight = [d for d in deps if "/shapes/unique" in d.affected_apps]
    check("unique's deployment is in flight", len(inflight) == 1)
    check("its steps and current actions read",
          inflight[0].steps and inflight[0].current_actions and inflight[0].current_actions[0].app == "/shapes/unique")
    raw_deps = requests.get(f"{url}/v2/deployments", timeout=10).json()
    load("GET /v2/deployments into MarathonDeployment", lambda: [MarathonDeployment.from_json(d) for d in raw_deps])

    # Groups, with embeds.
    groups = load("list_groups", lambda: c.list_groups())
    check("list_groups has the group", "/shapes-group" in [g.id for g in groups])
    group = load("get_group", lambda: c.get_group("shapes-group"))
    check("the group's apps and dependencies",
          sorted(a.id for a in group.apps) == ["/shapes-group/api", "/shapes-group/db"]
          and [a.dependencies for a in group.apps if a.id.endswith("/api")] == [["/shapes-group/db"]])
    gq = "&".join(["embed=group.groups", "embed=group.apps"] + [f"embed=group.apps.{e}" for e in APP_EMBEDS])
    root = requests.get(f"{url}/v2/groups?{gq}", timeout=10).json()
    load("GET /v2/groups with every embed into MarathonGroup", lambda: MarathonGroup.from_json(root))
    one = requests.get(f"{url}/v2/groups/shapes-group?{gq}", timeout=10).json()
    load("GET /v2/groups/shapes-group with every embed", lambda: MarathonGroup.from_json(one))

    # The queue, with a waiting item.
    queue = load("list_queue", lambda: c.list_queue())
    item = [q for q in queue if q.app.id == "/shapes/unique"]
    check("unique waits in the queue for one instance", len(item) == 1 and item[0].count == 1)
    summary = item[0].processed_offers_summary
    last = {s["reason"]: s for s in summary["rejectSummaryLastOffers"]}
    check("its processedOffersSummary says the node declined on the constraint",
          last["UnfulfilledConstraint"]["declined"] == 1 and summary["unusedOffersCount"] >= 1)
    check("the delay reads", item[0].delay.overdue is True and item[0].delay.time_left_seconds == 0)
    load("list_queue(embed_last_unused_offers=True)", lambda: c.list_queue(embed_last_unused_offers=True))
    raw_queue = requests.get(f"{url}/v2/queue", timeout=10).json()["queue"]
    load("GET /v2/queue into MarathonQueueItem", lambda: [MarathonQueueItem.from_json(q) for q in raw_queue])
    why = requests.get(f"{url}/wharf/v1/queue", timeout=10).json()["queue"]
    mine = [q for q in why if q["app"] == "/shapes/unique"]
    check("/wharf/v1/queue explains it in words",
          len(mine) == 1 and "constraint hostname" in mine[0]["reason"]
          and mine[0]["declined"] == {"UnfulfilledConstraint": 1})

    # Info and leader.
    info = load("get_info", lambda: c.get_info())
    # (MarathonConfig drops framework_name; local_port_min is kept.)
    check("info names marathon and its service ports",
          info.name == "marathon" and info.marathon_config.local_port_min == 10000)
    load("GET /v2/info into MarathonInfo", lambda: MarathonInfo.from_json(requests.get(f"{url}/v2/info", timeout=10).json()))
    leader = c.get_leader()
    check("leader names this node", leader.get("leader", "").endswith(url.rsplit(":", 1)[1]))

    # Deployment failures: cancel unique's deployment (force, no rollback).
    r = requests.delete(f"{url}/v2/deployments/{inflight[0].id}?force=true", timeout=10)
    check(f"cancel unique's deployment ({r.status_code})", r.status_code in (200, 202))
    wait("deployment_failed", lambda: events.has("deployment_failed"))
    for path in ["/v2/apps/shapes/sick", "/v2/apps/shapes/fail", "/v2/apps/shapes/unique"]:
        requests.delete(f"{url}{path}?force=true", timeout=10)
    wait("app_terminated_event", lambda: events.has("app_terminated_event"))

    wait("every event type", lambda: all(events.has(k) for k in EVENT_TYPES), timeout=20)
    with events.lock:
        if events.failures:
            raise SystemExit("events marathon-python could not load:\n" + "\n".join(
                f"{k}: {v}" for k, v in sorted(events.failures.items())))
        check("every event type loads: " + ", ".join(sorted(events.seen)), EVENT_TYPES <= set(events.seen))
        status = events.seen["status_update_event"]
        check("a status update reads its app and task", status.app_id.startswith("/") and status.task_id)
        plan = events.seen["deployment_info"].plan
        check("a deployment_info plan reads its id and steps", plan.id and plan.steps and plan.steps[0].actions)
        # (the event model leaves out falsy attributes, so alive=False is absent)
        change = events.seen["health_status_changed_event"]
        check("a health change reads its app", change.app_id.startswith("/shapes/")
              and getattr(change, "alive", False) in (True, False))
    print("all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
