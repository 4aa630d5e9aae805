"""Drives the web UI of a running Wharf node in headless Chromium, as a user
would, and saves a screenshot of each page.

usage: ui_check.py BASE_URL SCREENSHOT_DIR

Run by tests/ui.rs. Exits 0 after printing "all checks passed". Midway it
prints STOP_NODE and waits for "stopped" on stdin, then START_NODE and waits
for "started": the runner stops and restarts the node meanwhile.
"""

import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE, SHOTS = sys.argv[1], sys.argv[2]
T0 = time.monotonic()
os.makedirs(SHOTS, exist_ok=True)

opts = webdriver.ChromeOptions()
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,900"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
wait = WebDriverWait(driver, 40, poll_frequency=0.1)


def shot(name):
    """The whole page, not only what fits in the window."""
    path = os.path.join(SHOTS, name + ".png")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1440, min(max(height, 900), 4000))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(path)
    driver.set_window_size(1440, 900)
    print(f"screenshot {path} at {time.monotonic() - T0:.1f} s")


def css(sel):
    return driver.find_element(By.CSS_SELECTOR, sel)


def wait_css(sel, text=None):
    """The element `sel`, once present (and containing `text`, if given)."""
    if text is None:
        return wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, sel)), f"waiting for {sel}")
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, sel), text), f"waiting for {text!r} in {sel}")
    return css(sel)


def click(sel):
    """Clicks `sel`, finding it again if the page redrew it meanwhile."""
    for _ in range(50):
        try:
            wait_css(sel)
            css(sel).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{sel} kept being redrawn")


def press(key):
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def set_editor(text):
    area = css("#app-json")
    area.click()
    area.send_keys(Keys.CONTROL, "a")
    area.send_keys(Keys.DELETE)
    # send_keys types each character; the browser's own auto-indent does not
    # apply to a textarea, so the text arrives as written.
    area.send_keys(text)


def post(path, body):
    req = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


try:
    # Cluster: the first page, reached through the / redirect.
    started = time.monotonic()
    driver.get(BASE + "/")
    wait_css(".node .bar[data-resource=cpus]")
    wait_css("#cluster-head", "term")
    rendered_ms = (time.monotonic() - started) * 1000
    assert driver.current_url.endswith("/ui/") or "/ui/#" in driver.current_url, driver.current_url
    node = css(".node")
    assert "leader" in node.text and "voter" in node.text and "up" in node.text, node.text
    assert "rack: r1" in node.text, node.text  # attributes
    for r in ("cpus", "mem", "disk", "ports"):
        css(f".node .bar[data-resource={r}] .track")
    assert "0 / 2" in css(".node .bar[data-resource=cpus]").text, css(".node .bar[data-resource=cpus]").text
    wait_css("#live", "live")
    sizes = driver.execute_script(
        "return performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))"
        ".filter(e => /\\/ui\\//.test(e.name)).map(e => [e.name, e.transferSize, e.decodedBodySize]);")
    total = sum(s[2] for s in sizes)
    print(f"measure: first load {total} bytes of HTML+JS+CSS ({len(sizes)} files), cluster page rendered in {rendered_ms:.0f} ms")
    shot("cluster")

    # Apps: create through the form; a validation error shows beside its field.
    press("2")
    wait_css("#apps .empty", "No apps yet")
    press("n")
    wait_css("#app-json")
    bad = {"id": "/ui/web", "cmd": "echo hello from $MESOS_TASK_ID; exec python3 -m http.server $PORT0",
           "cpus": -1, "mem": 32, "instances": 2,
           "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 1,
                             "gracePeriodSeconds": 10, "timeoutSeconds": 2}]}
    set_editor(json.dumps(bad, indent=1))
    click("#app-submit")
    err = wait_css('[data-field="cpus"] .field-error', "expected 0.001 or more")
    assert "invalid" in css('[data-field="cpus"]').get_attribute("class")
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-field="mem"] .field-error')
    assert "422" in css("#form-message").text, css("#form-message").text
    shot("apps-validation")

    good = dict(bad, cpus=0.1)
    set_editor(json.dumps(good, indent=1))
    assert not driver.find_elements(By.CSS_SELECTOR, ".field-error"), "errors cleared on edit"
    click("#app-submit")
    wait_css("#form-message", "Created /ui/web")
    # Live: no reload; the row turns healthy from the event stream.
    wait_css('tr[data-app="/ui/web"] .badge', "healthy")
    wait_css('tr[data-app="/ui/web"]', "2 running")
    wait_css('tr[data-app="/ui/web"]', "2 healthy")
    css(".tree-group")  # the /ui group above the app
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    shot("apps")

    # App: tasks with node and ports, then a task's log, live.
    click('tr[data-app="/ui/web"] a')
    wait_css("#app-tasks tr[data-task] td.health .badge.ok", "healthy")
    # Read in one go: the table is redrawn when the data changes.
    tasks = driver.execute_script(
        "return [...document.querySelectorAll('#app-tasks tr[data-task]')].map(r => [r.dataset.task, r.innerText])")
    assert len(tasks) == 2, tasks
    task_id, row = tasks[0]
    assert "127.0.0.1:" in row and "healthy" in row, row
    click(f'tr[data-task="{task_id}"] button[data-log="stdout"]')
    wait_css("#task-log", "hello from " + task_id)
    # stderr carries http.server's access log: the health checks keep it growing.
    click(f'tr[data-task="{task_id}"] button[data-log="stderr"]')
    wait_css("#log-title", "stderr")
    wait_css("#task-log", '"GET / HTTP/1.1" 200')
    n = len(css("#task-log").text)
    wait.until(lambda d: len(css("#task-log").text) > n, "stderr grows while shown")
    shot("app")

    # Scale through the dialog; the new version shows in the list with a diff.
    click('#app-head button[data-action="scale"]')
    box = wait_css("#confirm-input")
    box.clear()
    box.send_keys("1")
    click("#confirm-ok")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#app-tasks tr[data-task]")) == 1, "scaled to 1")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#app-versions tr[data-version]")) == 2, "two versions")
    click("#app-versions tr[data-version]:last-child button")
    wait_css("#app-diff .diff", '"instances": 1')
    assert '"instances": 2' in css("#app-diff .del").text + "".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "#app-diff .del"))
    wait_css("#app-events", "status_update_event")
    shot("app-versions")

    # Kill the last task through its button: a replacement takes its place.
    (old_task,) = driver.execute_script(
        "return [...document.querySelectorAll('#app-tasks tr[data-task]')].map(r => r.dataset.task)")
    click(f'#app-tasks button[data-kill="{old_task}"]')
    wait_css("#confirm-text", "Kill task " + old_task)
    click("#confirm-ok")
    wait.until(lambda d: d.execute_script(
        "const ids = [...document.querySelectorAll('#app-tasks tr[data-task]')].map(r => r.dataset.task);"
        f"return ids.length === 1 && ids[0] !== '{old_task}';"), "a replacement task")

    # Deployments and queue: an app no node can take waits, and says why.
    post("/v2/apps", {"id": "/ui/huge", "cmd": "sleep 1000", "cpus": 64, "mem": 16, "instances": 1})
    press("3")
    wait_css("#deployments", "/ui/huge")
    wait_css('#deployments tr[data-deployment]', "ScaleApplication /ui/huge")
    wait_css('#deployments tr[data-deployment]', "2 / 2")  # step 2 of 2: started, now scaling
    wait_css('#deployments tr[data-deployment] td.waiting', "insufficient cpus")  # and why it waits
    shot("deployments")
    press("4")
    wait_css('#queue tr[data-queued="/ui/huge"]', "InsufficientCpus")
    shot("queue")

    # A task that fails: the app page shows its last failure and the message.
    post("/v2/apps", {"id": "/ui/crash", "cmd": "echo boom >&2; exit 3", "cpus": 0.05, "mem": 16, "instances": 1,
                      "backoffSeconds": 30})
    driver.get(BASE + "/ui/#/app/ui/crash")
    wait_css("#app-failure", "Last failure: TASK_FAILED")
    assert "exited with status 3" in css("#app-failure").text, css("#app-failure").text
    click('#app-failure button[data-failure-log="stderr"]')
    wait_css("#task-log", "boom")
    shot("app-failure")

    # A lost event stream: a banner says so, and the page reconnects by itself
    # when the node is back. The test runner stops and restarts the node.
    press("1")
    wait_css("#live", "live")
    print("STOP_NODE", flush=True)
    assert sys.stdin.readline().strip() == "stopped"
    wait.until(EC.visibility_of_element_located((By.ID, "banner")), "banner shown")
    assert "Lost the connection" in css("#banner").text, css("#banner").text
    assert css("#live").text == "offline"
    shot("disconnected")
    print("START_NODE", flush=True)
    assert sys.stdin.readline().strip() == "started"
    wait.until(EC.invisibility_of_element_located((By.ID, "banner")), "banner gone after reconnecting")
    wait_css("#live", "live")
    wait_css(".node .badge.leader", "leader")

    # Destroy with a confirmation.
    press("2")
    wait_css('tr[data-app="/ui/huge"]')
    click('tr[data-app="/ui/huge"] button[data-action="destroy"]')
    wait_css("#confirm-text", "Destroy /ui/huge")
    click("#confirm-ok")
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-app="/ui/huge"]'), "destroyed app gone")
    print("all checks passed")
except Exception:
    shot("failure")
    print("page text at failure:\n" + driver.find_element(By.TAG_NAME, "body").text, file=sys.stderr)
    print("browser console:", driver.get_log("browser") if hasattr(driver, "get_log") else "", file=sys.stderr)
    raise
finally:
    driver.quit()
