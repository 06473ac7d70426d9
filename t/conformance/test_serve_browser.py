"""llm-serve's chat page (GET /, tools/serve/chat.html) in a real browser:
headless Chromium driven by selenium through chromedriver (Debian's chromium
and chromium-driver packages; scripts/deps).

A small model trained by llm-train is served with --chat-template chatml;
the page is loaded, a message typed and sent, and the answer must stream in
(several content chunks, then data: [DONE]) with no error; a second turn
(sent with Enter) must carry the first turn in its messages. The server must
then exit 0 on SIGTERM.
"""
import json
import os
import re

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from serve_common import Server, chat_model
from test_train_torch import data  # noqa: F401  the module-scoped fixture

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 60

# the state of the last assistant message, as the page keeps it
LAST = """
const all = document.querySelectorAll('.msg.assistant');
const e = all[all.length - 1];
return {count: all.length, done: e ? e.getAttribute('data-done') : null,
        error: e ? e.getAttribute('data-error') : null, chunks: e ? e.getAttribute('data-chunks') : null,
        text: e ? e.textContent : null, status: document.getElementById('status').textContent,
        sendDisabled: document.getElementById('send').disabled};
"""

# records the bodies the page POSTs, to check what the second turn sends
RECORD = """
window.__bodies = [];
const orig = window.fetch;
window.fetch = function (url, opts) {
  if (opts && opts.method === 'POST') window.__bodies.push({url: String(url), body: opts.body});
  return orig.apply(this, arguments);
};
"""


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian's chromium and chromium-driver; scripts/deps)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def console(driver):
    try:
        return "\n".join(f"{e.get('level')}: {e.get('message')}" for e in driver.get_log("browser"))
    except Exception as e:  # noqa: BLE001  diagnostics only
        return f"(no browser log: {e})"


def wait_answer(driver, server, count):
    """Waits until there are COUNT assistant messages and the last one has
    data-done or data-error; returns its state."""
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(
            lambda d: (lambda s: s if s["count"] == count and (s["done"] or s["error"] is not None) else None)(
                d.execute_script(LAST)))
    except TimeoutException:
        raise AssertionError(f"answer {count} not done within {WAIT} s: {driver.execute_script(LAST)}\n"
                             f"--- browser console ---\n{console(driver)}\n"
                             f"--- llm-serve stderr ---\n{server.stderr_text()}") from None


def check_answer(state, server, driver):
    where = f"{state}\n--- browser console ---\n{console(driver)}\n--- llm-serve stderr ---\n{server.stderr_text()}"
    assert state["error"] is None, f"the page shows an error: {where}"
    assert state["done"] == "1", where
    assert state["text"], f"empty answer: {where}"
    assert int(state["chunks"]) >= 2, f"the answer did not stream (fewer than 2 content chunks): {where}"
    assert not state["sendDisabled"], f"send still disabled after the answer: {where}"
    m = re.search(r"(\d+) prompt \+ (\d+) completion tokens, [\d.]+ tokens/s", state["status"])
    assert m, f"no usage in the status line: {where}"
    prompt, completion = int(m.group(1)), int(m.group(2))
    assert int(state["chunks"]) <= completion, where
    return prompt, completion


def type_into(driver, id_, text):
    el = driver.find_element(By.ID, id_)
    el.clear()
    el.send_keys(text)
    return el


def test_chat_page_streams_two_turns(browser, data):  # noqa: F811
    model = chat_model(data, "llama")
    driver = browser
    with Server(model, "--chat-template", "chatml") as s:
        # the page itself, as a browser gets it
        status, headers, body = s.request("GET", "/")
        assert status == 200, (status, body[:200])
        assert headers.get("content-type", "").startswith("text/html"), headers
        assert b'id="input"' in body and b'id="send"' in body
        status, _, body = s.request("GET", "/v1/models")
        assert status == 200, body
        name = json.loads(body)["data"][0]["id"]

        driver.get(s.url + "/")
        WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, "model").text == name,
                                          f"the page did not show the model name {name!r} from /v1/models")
        driver.execute_script(RECORD)
        type_into(driver, "temperature", "0")
        type_into(driver, "max-tokens", "16")

        # turn 1: typed, sent with the button
        type_into(driver, "input", "In the beginning")
        driver.find_element(By.ID, "send").click()
        first = wait_answer(driver, s, 1)
        p1, _ = check_answer(first, s, driver)

        # turn 2: sent with Enter; its request carries turn 1
        type_into(driver, "input", "And God said").send_keys(Keys.ENTER)
        second = wait_answer(driver, s, 2)
        p2, _ = check_answer(second, s, driver)
        assert p2 > p1, (p1, p2)

        bodies = driver.execute_script("return window.__bodies")
        assert [b["url"] for b in bodies] == ["/v1/chat/completions"] * 2, bodies
        reqs = [json.loads(b["body"]) for b in bodies]
        for r in reqs:
            assert r["model"] == name and r["stream"] is True, r
            assert r["temperature"] == 0 and r["max_tokens"] == 16, r
            assert r["stream_options"] == {"include_usage": True}, r
        assert reqs[0]["messages"] == [{"role": "user", "content": "In the beginning"}], reqs[0]
        assert reqs[1]["messages"] == [{"role": "user", "content": "In the beginning"},
                                       {"role": "assistant", "content": first["text"]},
                                       {"role": "user", "content": "And God said"}], reqs[1]
        assert driver.find_element(By.ID, "input").get_attribute("value") == ""

        rc = s.stop()
        assert rc == 0, f"llm-serve exited with {rc} after SIGTERM\n{s.stderr_text()}"
