"""marathon-python (PyPI) against a node with --http-credentials, as a
Marathon user with HTTP Basic auth would use it.
Usage: auth_check.py URL USER PASSWORD VIEWER_TOKEN.
Exits non-zero with a message on the first thing that does not work."""

import collections
import collections.abc
import sys
import time

# marathon-python predates Python 3.10, which removed these aliases.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence", "Callable"):
    setattr(collections, _name, getattr(collections.abc, _name))

from marathon import MarathonClient  # noqa: E402
from marathon.exceptions import MarathonHttpError  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402


def check(what, ok):
    if not ok:
        raise SystemExit(f"check failed: {what}")
    print(f"ok: {what}")


def refused(what, call):
    try:
        call()
    except MarathonHttpError as e:
        return e.status_code, e.error_message
    raise SystemExit(f"check failed: {what} was not refused")


def wait(what, cond, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def main(url, user, password, viewer_token):
    anonymous = MarathonClient(url)
    status, message = refused("listing apps without credentials", anonymous.list_apps)
    check(f"no credentials: 401 ({message})", status == 401 and message)

    wrong = MarathonClient(url, username=user, password=password + "x")
    status, _ = refused("listing apps with a wrong password", wrong.list_apps)
    check("a wrong password: 401", status == 401)

    c = MarathonClient(url, username=user, password=password)
    check("info with Basic auth", c.get_info().name == "marathon")
    app = c.create_app("authapp", MarathonApp(cmd="exec sleep 1000", cpus=0.05, mem=16, instances=1))
    check("create_app with Basic auth", app.id == "/authapp")
    wait("the task to run", lambda: c.get_app("authapp").tasks_running == 1)
    check("list_apps with Basic auth", [a.id for a in c.list_apps()] == ["/authapp"])

    viewer = MarathonClient(url, auth_token=viewer_token)
    check("a viewer token reads apps", [a.id for a in viewer.list_apps()] == ["/authapp"])
    status, message = refused("a viewer scaling", lambda: viewer.scale_app("authapp", instances=2))
    check(f"a viewer cannot scale: 403 ({message})", status == 403)
    check("the refused scale changed nothing", c.get_app("authapp").instances == 1)

    c.delete_app("authapp", force=True)
    wait("the app to be gone", lambda: not c.list_apps())
    print("all checks passed")


if __name__ == "__main__":
    main(*sys.argv[1:5])
