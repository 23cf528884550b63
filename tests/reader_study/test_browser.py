"""A real headless browser reads three cases: the page loads, slices show and scroll, answers are
given with the mouse and the keyboard, and the database holds them; then the reader stops and
continues where they were.

Needs Chromium and its driver from the system's packages (Debian: ``apt-get install -y chromium
chromium-driver``) and the ``selenium`` package; skips with the reason otherwise. No browser is
ever downloaded.

``SYNTHBRAIN_SCREENSHOT=docs/reader-study.png`` saves a screenshot of the first case with an
answer chosen; ``SYNTHBRAIN_READER_STUDY=STUDY`` runs on (a copy of) that study instead of the tiny
one (how docs/reader-study.png was made).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the reader-study server needs Flask: pip install 'synthbrain[reader-study]'")
pytest.importorskip("waitress", reason="the reader-study server needs waitress: pip install 'synthbrain[reader-study]'")

from synthbrain.reader_study.server import LOCAL_HOSTS, create_app  # noqa: E402
from tests.reader_study.live import live_server  # noqa: E402

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1920,1080",  # a common screen; the page fits its frames to the window
)


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if path:
            return path
    return None


@pytest.fixture
def browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("no browser test: the selenium package is not installed (pip install -e '.[test]')")
    chromium, driver_path = _find("chromium", "chromium-browser"), _find("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "no browser test: Chromium or chromedriver is not installed "
            f"(found browser {chromium}, driver {driver_path}); on Debian: apt-get install -y chromium chromium-driver"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    except Exception as err:  # a browser that does not start here (no display libraries, ...) is a skip, not a failure
        pytest.skip(f"no browser test: Chromium did not start ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _study_folder(study: Path, tmp_path: Path) -> Path:
    chosen = os.environ.get("SYNTHBRAIN_READER_STUDY")
    if not chosen:
        return study
    copy = tmp_path / "chosen-study"
    shutil.copytree(chosen, copy, ignore=shutil.ignore_patterns("answers.sqlite*", "analysis"))
    return copy


def _helpers(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def element(element_id: str):
        return browser.find_element(By.ID, element_id)

    def slices_loaded() -> bool:
        return browser.execute_script(
            "return ['axial', 'coronal', 'sagittal'].every(v => { const i = document.getElementById('img-' + v);"
            " return i.complete && i.naturalWidth > 0; });"
        )

    return WebDriverWait(browser, 20), element, slices_loaded


def _chosen(element) -> tuple[list[str], list[str]]:
    """The label and confidence buttons shown as chosen."""
    labels = [name for name in ("real", "synthetic", "unsure") if "selected" in element(f"label-{name}").get_attribute("class")]
    levels = [str(c) for c in range(1, 6) if "selected" in element(f"confidence-{c}").get_attribute("class")]
    return labels, levels


def _with_modifier(browser, modifier, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).key_down(modifier).send_keys(key).key_up(modifier).perform()


def _stored(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "answers.sqlite") as db:
        return db.execute(
            "SELECT r.name, a.case_id, a.label, a.confidence FROM answers a JOIN readers r USING (reader_id) ORDER BY a.answered_at"
        ).fetchall()


def _log_in(browser, element, wait, name: str) -> None:
    element("name").clear()
    element("name").send_keys(name)
    element("start").click()
    wait.until(lambda d: not element("login").is_displayed())


def test_a_reader_answers_three_cases_in_the_browser(browser, study, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    folder = _study_folder(study, tmp_path)
    wait, element, slices_loaded = _helpers(browser)

    with live_server(create_app(folder, trusted_hosts=LOCAL_HOSTS)) as base:
        browser.get(base + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert element("login").is_displayed() and not element("reading").is_displayed()
        element("name").send_keys("Dr Browser")
        element("start").click()
        wait.until(lambda d: element("reading").is_displayed())
        given = []
        for position, (label, confidence) in enumerate([("real", 4), ("synthetic", 2), ("unsure", None)], start=1):
            wait.until(lambda d: element("reading").get_attribute("data-position") == str(position))
            wait.until(lambda d: slices_loaded())
            case_id = element("reading").get_attribute("data-case")
            before = element("idx-axial").text
            element("slider-axial").send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # scroll the axial view
            wait.until(lambda d: element("idx-axial").text != before and slices_loaded())
            assert element("submit").get_attribute("disabled") is not None  # nothing chosen yet
            if position == 2:  # by keyboard: S, 2, Enter
                browser.find_element(By.TAG_NAME, "body").send_keys("s", "2")
            else:
                element(f"label-{label}").click()
                if confidence is not None:
                    element(f"confidence-{confidence}").click()
            if position == 1:
                # Ctrl+S, Alt+U, Meta+R belong to the browser: the chosen answer stays as it is
                for modifier, key in ((Keys.CONTROL, "s"), (Keys.ALT, "u"), (Keys.META, "r"), (Keys.CONTROL, "2")):
                    _with_modifier(browser, modifier, key)
                    assert _chosen(element) == (["real"], ["4"]), key
                # Enter on a focused button other than Submit presses that button, and submits nothing
                element("brightness").send_keys(Keys.ARROW_RIGHT)
                element("reset-display").send_keys(Keys.ENTER)
                time.sleep(0.5)  # time enough for an answer to reach the server, were one sent
                assert element("reading").get_attribute("data-position") == "1" and _stored(folder) == []
                assert element("brightness").get_attribute("value") == "100"
            if position == 1 and os.environ.get("SYNTHBRAIN_SCREENSHOT"):
                element("slider-coronal").send_keys(Keys.ARROW_LEFT)
                wait.until(lambda d: slices_loaded())
                browser.save_screenshot(os.environ["SYNTHBRAIN_SCREENSHOT"])
            if position == 1:  # + zooms every view around the point last clicked; 0 shows the whole view again
                element("img-axial").click()
                browser.find_element(By.TAG_NAME, "body").send_keys("+", "+")
                assert element("reading").get_attribute("data-zoom") == "2"
                assert "scale(2)" in element("img-coronal").get_attribute("style")
                browser.find_element(By.TAG_NAME, "body").send_keys("0")
                assert element("reading").get_attribute("data-zoom") == "1" and "scale" not in element("img-coronal").get_attribute("style")
            if position == 2:
                browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
            else:
                element("submit").click()
            given.append((case_id, label, confidence))
        wait.until(lambda d: element("reading").get_attribute("data-position") == "4")
        with sqlite3.connect(folder / "answers.sqlite") as db:
            stored = db.execute("SELECT case_id, label, confidence FROM answers ORDER BY position").fetchall()
        assert stored == given

        element("stop").click()  # stop for now, continue later with the same name
        wait.until(lambda d: element("login").is_displayed())
        element("name").clear()
        element("name").send_keys("dr browser")
        element("start").click()
        wait.until(lambda d: element("reading").is_displayed() and element("reading").get_attribute("data-position") == "4")
        assert "4 of" in element("progress").text
        severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []  # no script error, no Content-Security-Policy violation


def test_refused_answers_are_shown_and_readers_switch(browser, study, tmp_path):
    """An answer refused because another tab answered the case first, or because another tab
    logged someone else in, or logged out, is not saved and the page says so and stays; a reader
    who has finished hands the computer over with the log-out button of the last page."""
    from selenium.webdriver.common.by import By

    from synthbrain.reader_study.store import AnswerStore
    from synthbrain.reader_study.study import load_study

    wait, element, slices_loaded = _helpers(browser)

    def answer(label: str, confidence: int) -> None:
        wait.until(lambda d: slices_loaded())
        element(f"label-{label}").click()
        element(f"confidence-{confidence}").click()
        element("submit").click()

    def refused(position: str) -> str:
        wait.until(lambda d: element("refusal").is_displayed())
        assert element("reading").get_attribute("data-position") == position  # not advanced as if saved
        assert element("submit").get_attribute("disabled") is not None and element("label-real").get_attribute("disabled") is not None
        return element("refusal-text").text

    meta = load_study(study)
    store = AnswerStore(meta.database, meta.study_id, meta.case_ids, meta.order_seed)
    token, done = store.start_session("Dr Done")
    for case_id in done.case_order:
        store.record_answer(token, case_id, "real", 3)

    with live_server(create_app(study, trusted_hosts=LOCAL_HOSTS)) as base:
        browser.get(base + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        _log_in(browser, element, wait, "Dr One")
        first = browser.current_window_handle
        first_case = element("reading").get_attribute("data-case")
        browser.switch_to.new_window("tab")  # the same reader in a second tab answers the case first
        browser.get(base + "/")
        wait.until(lambda d: element("reading").is_displayed() and element("reading").get_attribute("data-case") == first_case)
        second = browser.current_window_handle
        answer("synthetic", 5)
        wait.until(lambda d: element("reading").get_attribute("data-position") == "2")

        browser.switch_to.window(first)  # still showing case 1
        answer("real", 3)
        text = refused("1")
        assert "Your answer to case 1 was NOT saved" in text and "already answered" in text
        assert _stored(study)[-1] == ("Dr One", first_case, "synthetic", 5) and len(_stored(study)) == 9
        element("resync").click()
        wait.until(lambda d: element("reading").get_attribute("data-position") == "2" and not element("refusal").is_displayed())

        browser.switch_to.window(second)  # there: stop, and another reader logs in
        element("stop").click()
        wait.until(lambda d: element("login").is_displayed())
        _log_in(browser, element, wait, "Dr Two")
        browser.switch_to.window(first)  # still Dr One's case 2
        answer("real", 2)
        text = refused("2")
        assert "reading as 'Dr One', but this browser is now logged in as 'Dr Two'" in text
        assert len(_stored(study)) == 9  # nothing saved for either reader

        element("resync").click()  # this tab now reads as Dr Two, and says so
        wait.until(lambda d: element("who").text == "Reader: Dr Two" and not element("refusal").is_displayed())
        browser.switch_to.window(second)
        element("stop").click()  # logged out there: no session left
        wait.until(lambda d: element("login").is_displayed())
        browser.switch_to.window(first)
        wait.until(lambda d: slices_loaded())
        element("label-unsure").click()
        element("submit").click()
        wait.until(lambda d: element("login").is_displayed())
        assert "Your answer to case 1 was NOT saved: no reader session" in element("login-message").text
        assert len(_stored(study)) == 9

        _log_in(browser, element, wait, "dr done")  # a reader who has answered everything
        assert element("done").is_displayed() and element("stop").is_displayed() and "Dr Done" in element("done").text
        element("next-reader").click()
        wait.until(lambda d: element("login").is_displayed())
        assert element("who").text == "" and "next reader" in element("login-message").text
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly anyway; nothing left for the next reader
        _log_in(browser, element, wait, "Dr Three")
        assert element("who").text == "Reader: Dr Three" and element("reading").get_attribute("data-position") == "1"
        severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert all("409" in m or "401" in m for m in severe), severe  # the refused requests, logged by the browser; no script error
