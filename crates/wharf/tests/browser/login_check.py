"""Logs in to the web UI of a node that asks for credentials, in headless
Chromium, as a user would.

usage: login_check.py BASE_URL SCREENSHOT_DIR USER PASSWORD

Run by tests/ui.rs. Exits 0 after printing "all checks passed".
"""

import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE, SHOTS, USER, PASSWORD = sys.argv[1:5]
os.makedirs(SHOTS, exist_ok=True)

opts = webdriver.ChromeOptions()
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,900"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
wait = WebDriverWait(driver, 40, poll_frequency=0.1)


def css(sel):
    return driver.find_element(By.CSS_SELECTOR, sel)


def wait_text(sel, text):
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, sel), text), f"waiting for {text!r} in {sel}")


try:
    driver.get(BASE + "/ui/")
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#login")), "the login dialog")
    print("ok: the page asks to log in")
    driver.save_screenshot(os.path.join(SHOTS, "login.png"))
    assert not driver.find_elements(By.CSS_SELECTOR, ".node"), "no cluster data before logging in"

    css("#login-user").send_keys(USER)
    css("#login-pass").send_keys(PASSWORD + "x", Keys.ENTER)
    wait_text("#login-message", "wrong user or password")
    print("ok: a wrong password is refused")

    css("#login-pass").clear()
    css("#login-pass").send_keys(PASSWORD, Keys.ENTER)
    wait.until(EC.invisibility_of_element_located((By.CSS_SELECTOR, "#login")), "the dialog to close")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".node .bar[data-resource=cpus]")), "the cluster page")
    wait_text("#live", "live")
    print("ok: logged in, the cluster page and the event stream work")

    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#logout")))
    assert css("#logout").is_displayed(), "a log out button once logged in"
    css("#logout").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#login")), "the login dialog after logging out")
    print("ok: logging out asks to log in again")
    print("all checks passed")
except Exception:
    for entry in driver.get_log("browser"):
        print("browser:", entry, file=sys.stderr)
    print("login message:", css("#login-message").text, file=sys.stderr)
    raise
finally:
    driver.quit()
