#!/usr/bin/env python3
"""The web page in a real browser (Debian's chromium + chromium-driver, Selenium, headless).

Usage: test_web.py BASE_URL ALICE_TOKEN BOB_TOKEN SCREENSHOT_DIR
Run by Tests/APITests/WebPageTests.swift against an agent on the simulated apu2. Prints one line
per step and "web page: all steps passed" at the end; exits non-zero on the first failure.
"""
import statistics
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

BASE, ALICE, BOB, SHOTS = sys.argv[1:5]


def browser(width=1280, height=1000):
    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        o.add_argument(a)
    o.binary_location = "/usr/bin/chromium"
    d = webdriver.Chrome(options=o, service=Service("/usr/bin/chromedriver"))
    d.set_page_load_timeout(30)
    d.set_script_timeout(30)
    return d


def wait(what, condition, timeout=30.0):
    """Polls `condition` until it is truthy; fails with `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(0.05)


def text(d, element_id):
    return d.find_element(By.ID, element_id).text


def console(d):
    """What the xterm.js terminal holds (scrollback and screen), as text."""
    return d.execute_script("""
        const b = window.rteTerm ? window.rteTerm.buffer.active : null;
        if (!b) return '';
        let out = [];
        for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
        return out.join('\\n');""")


def sign_in(d, token):
    d.get(BASE + "/")
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.ID, "signin-button").click()
    wait("signed in", lambda: d.find_element(By.ID, "who").is_displayed())


def step(message):
    print("web page:", message, flush=True)


a = browser()
b = browser()
try:
    # Not signed in: the page says so and shows nothing of the board.
    a.get(BASE + "/")
    wait("the sign-in request", lambda: "sign in" in text(a, "message"))
    sign_in(a, ALICE)
    wait("alice's name", lambda: text(a, "user") == "alice")
    wait("the board free", lambda: text(a, "holder") == "Free")
    step("alice signed in; the board is free")

    a.find_element(By.ID, "purpose").send_keys("web test")
    a.find_element(By.ID, "reserve-button").click()
    wait("alice's lease", lambda: "Held by alice — web test" in text(a, "holder") and "(you)" in text(a, "holder"))
    # The buttons follow the lease on the page's next render, not necessarily the same one.
    wait("power buttons enabled", lambda: not a.find_element(By.CSS_SELECTOR, '[data-power="on"]').get_attribute("disabled"), 10)
    step("alice reserved the board")

    a.find_element(By.CSS_SELECTOR, '[data-power="on"]').click()
    wait("power on", lambda: text(a, "power") == "on")
    wait("the LED lit", lambda: "on" in a.find_element(By.ID, "led").get_attribute("class"))
    wait("iPXE's Ctrl-B prompt in the console", lambda: "Press Ctrl-B for the iPXE command line" in console(a), 30)
    # Early output came from the capture: the firmware banner printed before the prompt is there too.
    assert "coreboot" in console(a) or "SeaBIOS" in console(a), console(a)[-500:]
    step("powered on; the console shows the firmware and iPXE's Ctrl-B prompt")

    keys = a.find_element(By.CSS_SELECTOR, "#console .xterm-helper-textarea")
    keys.send_keys(Keys.CONTROL, "b")
    wait("iPXE>", lambda: "iPXE>" in console(a), 15)
    step("Ctrl-B typed in the browser; iPXE> appeared")

    # Keystroke to echo: one key at a time, each waited for (iPXE echoes what it is typed).
    a.execute_script("window.rteEcho = []")
    for ch in "echo typed-in-the-browser":
        before = a.execute_script("return window.rteEcho.length")
        keys.send_keys(ch)
        wait(f"the echo of {ch!r}", lambda: a.execute_script("return window.rteEcho.length") > before, 10)
    keys.send_keys(Keys.ENTER)
    wait("the command's output", lambda: console(a).count("typed-in-the-browser") >= 2, 10)
    echo = a.execute_script("return window.rteEcho")
    step(f"keystroke to echo over {len(echo)} keys: p50 {statistics.median(echo):.1f} ms, "
         f"max {max(echo):.1f} ms (browser key → POST /serial/input → simulated apu2 → SSE → xterm.js)")
    a.save_screenshot(SHOTS + "/console.png")

    # Another user sees the board held and can neither type nor press.
    sign_in(b, BOB)
    wait("bob sees alice's lease", lambda: "Held by alice" in text(b, "holder") and "(you)" not in text(b, "holder"))
    wait("bob's console", lambda: "iPXE>" in console(b), 15)
    assert b.find_element(By.CSS_SELECTOR, '[data-power="off"]').get_attribute("disabled"), "bob may press power"
    assert b.find_element(By.ID, "release").get_attribute("disabled"), "bob may release"
    toggles = b.find_elements(By.CSS_SELECTOR, "#lines button")
    assert toggles and all(t.get_attribute("disabled") for t in toggles), "bob may drive a line"
    assert "read-only" in text(b, "console-mode")
    before = console(a)
    b.find_element(By.CSS_SELECTOR, "#console .xterm-helper-textarea").send_keys("x")
    wait("bob told to reserve", lambda: "reserve the board to type" in text(b, "message"))
    # Nothing he typed reached the board (the holder's console did not change).
    bytes_written = a.execute_script("return fetch('/api/v1/status', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('rte-token')}}).then(r => r.json()).then(j => j.serial.bytes_written)")
    refused = b.execute_script("""return fetch('/api/v1/serial/input', {method: 'POST',
        headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('rte-token'), 'Content-Type': 'application/json'},
        body: JSON.stringify({text: 'x'})}).then(r => r.status)""")
    assert refused in (401, 403, 409, 423), f"bob's input got HTTP {refused}"
    after_written = a.execute_script("return fetch('/api/v1/status', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('rte-token')}}).then(r => r.json()).then(j => j.serial.bytes_written)")
    assert after_written == bytes_written, f"bytes written went {bytes_written} → {after_written}"
    step(f"bob sees the board held, buttons disabled, typing refused (HTTP {refused} from the API)")
    # Bob queues; alice sees him waiting.
    wait("bob's queue button", lambda: b.find_element(By.ID, "reserve-button").text == "Wait in queue")
    b.find_element(By.ID, "purpose").send_keys("after alice")
    b.find_element(By.ID, "reserve-button").click()
    wait("bob in alice's queue", lambda: "bob — after alice (waiting)" in text(a, "queue"))
    step("bob waits in the queue; alice sees him")
    b.save_screenshot(SHOTS + "/second-user.png")

    # A run from a shipped spec, on alice's lease, watched to the end.
    Select(a.find_element(By.ID, "spec-list")).select_by_value("xen-dev.yaml")
    wait("the spec loaded", lambda: "menu_entry" in a.find_element(By.ID, "spec").get_attribute("value"))
    a.find_element(By.ID, "start-button").click()
    wait("the run listed", lambda: a.find_elements(By.CSS_SELECTOR, "#runs tbody tr"))
    wait("a stage finished", lambda: a.find_elements(By.CSS_SELECTOR, "#stages .bar"), 60)
    wait("the run passed", lambda: "passed" in text(a, "run-title"), 120)
    stages = [e.get_attribute("data-stage") for e in a.find_elements(By.CSS_SELECTOR, "#stages .bar")]
    for wanted in ("power", "ipxe_menu", "hypervisor", "kernel", "login"):
        assert any(wanted in s for s in stages), f"no {wanted} stage in {stages}"
    # What booted, from the boot log (the simulated apu2's Xen entry boots Xen).
    wait("the facts", lambda: a.find_elements(By.CSS_SELECTOR, "#facts dd[data-fact='xen_version']"))
    facts = {e.get_attribute("data-fact"): e.text for e in a.find_elements(By.CSS_SELECTOR, "#facts dd")}
    assert facts.get("hypervisor") == "xen" and facts.get("xen_version") == "4.17.7", f"facts {facts}"
    assert facts.get("firmware") == "coreboot" and facts.get("iommu") == "enabled", f"facts {facts}"
    a.find_element(By.ID, "show-transcript").click()
    wait("the transcript", lambda: "login:" in text(a, "transcript"))
    step(f"run passed; stages {', '.join(stages)}; facts {facts}; transcript shown")
    a.save_screenshot(SHOTS + "/run.png")
    b.save_screenshot(SHOTS + "/run-second-user.png")

    a.find_element(By.ID, "release").click()
    wait("bob's lease", lambda: "Held by bob — after alice" in text(b, "holder") and "(you)" in text(b, "holder"))
    wait("alice sees bob holding", lambda: "Held by bob" in text(a, "holder") and "(you)" not in text(a, "holder"))
    assert not b.find_element(By.CSS_SELECTOR, '[data-power="off"]').get_attribute("disabled"), "bob cannot press now"
    b.find_element(By.ID, "release").click()
    wait("the board free", lambda: text(a, "holder") == "Free" and text(b, "holder") == "Free")
    step("alice released the board; the queued bob got it, then released it")

    # A phone-sized screen: the panels stack, nothing wider than the screen.
    a.set_window_size(390, 844)
    overflow = wait("the narrow layout", lambda: a.execute_script("return document.documentElement.scrollWidth") <= 390 + 1 or None, 5)
    a.save_screenshot(SHOTS + "/phone.png")
    step("phone-sized: no horizontal overflow")
    print("web page: all steps passed", flush=True)
finally:
    for d in (a, b):
        for entry in d.get_log("browser"):
            # Refusals the test asks for (401 before sign-in, 423 for bob's keys) are logged by
            # the browser as failed loads; a script error is what must not happen.
            if entry["level"] == "SEVERE" and entry.get("source") != "network":
                print("browser console:", entry["message"], flush=True)
        d.quit()
