"""Drives a Wharf node with the `marathon` client library from PyPI
(marathon-python), as a Marathon user would. Usage: client_check.py URL.
Exits non-zero with a message on the first thing that does not work."""

import collections
import collections.abc
import sys
import time

# marathon-python predates Python 3.10, which removed these aliases.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence", "Callable"):
    setattr(collections, _name, getattr(collections.abc, _name))

from marathon import MarathonClient  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402
from marathon.models.group import MarathonGroup  # noqa: E402


def wait(what, cond, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def check(what, ok):
    if not ok:
        raise SystemExit(f"check failed: {what}")
    print(f"ok: {what}")


def main(url):
    c = MarathonClient(url)
    info = c.get_info()
    check("info names marathon", info.name == "marathon")

    app = c.create_app("pyapp", MarathonApp(cmd="exec sleep 1000", cpus=0.05, mem=16, instances=1))
    check("create_app returns the app", app.id == "/pyapp")
    running = lambda n: lambda: c.get_app("pyapp").tasks_running == n  # noqa: E731
    wait("1 running task", running(1))
    check("list_apps lists it", "/pyapp" in [a.id for a in c.list_apps()])
    got = c.get_app("pyapp")
    check("get_app", got.cmd == "exec sleep 1000" and got.instances == 1)
    wait("deployments done", lambda: not c.list_deployments())

    c.scale_app("pyapp", instances=2)
    wait("2 running tasks", running(2))
    check("list_deployments works", isinstance(c.list_deployments(), list))
    wait("deployments done", lambda: not c.list_deployments())
    tasks = c.list_tasks("pyapp")
    check("list_tasks", len(tasks) == 2 and all(t.app_id == "/pyapp" for t in tasks))

    c.kill_given_tasks([tasks[0].id], scale=True)
    wait("scaled down to 1 by killing a task", lambda: c.get_app("pyapp").instances == 1 and running(1)())
    wait("deployments done", lambda: not c.list_deployments())
    before = {t.id for t in c.list_tasks("pyapp")}
    c.kill_tasks("pyapp")
    wait("killed task replaced", lambda: running(1)() and not ({t.id for t in c.list_tasks("pyapp")} & before))
    wait("deployments done", lambda: not c.list_deployments())

    before = {t.id for t in c.list_tasks("pyapp")}
    dep = c.restart_app("pyapp")
    check("restart_app returns a deployment", "deploymentId" in dep)
    wait("restarted", lambda: running(1)() and not ({t.id for t in c.list_tasks("pyapp")} & before))
    wait("deployments done", lambda: not c.list_deployments())
    check("app versions", len(c.list_versions("pyapp")) >= 4)

    check("list_queue", isinstance(c.list_queue(), list))

    group = MarathonGroup(
        id="/pygroup",
        apps=[MarathonApp(id="/pygroup/one", cmd="exec sleep 1000", cpus=0.05, mem=16, instances=1)],
    )
    c.create_group(group)
    wait("group app running", lambda: c.get_app("pygroup/one").tasks_running == 1)
    check("list_groups", "/pygroup" in [g.id for g in c.list_groups()])
    check("get_group", [a.id for a in c.get_group("pygroup").apps] == ["/pygroup/one"])
    wait("deployments done", lambda: not c.list_deployments())
    c.delete_group("pygroup")
    wait("group deleted", lambda: "/pygroup/one" not in [a.id for a in c.list_apps()])

    c.delete_app("pyapp")
    wait("app deleted", lambda: "/pyapp" not in [a.id for a in c.list_apps()])
    print("all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
