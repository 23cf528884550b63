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
    "--window-size=1280,900",
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


def test_a_reader_answers_three_cases_in_the_browser(browser, study, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder = _study_folder(study, tmp_path)
    wait = WebDriverWait(browser, 20)

    def element(element_id: str):
        return browser.find_element(By.ID, element_id)

    def slices_loaded() -> bool:
        return browser.execute_script(
            "return ['axial', 'coronal', 'sagittal'].every(v => { const i = document.getElementById('img-' + v);"
            " return i.complete && i.naturalWidth > 0; });"
        )

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
            if position == 1 and os.environ.get("SYNTHBRAIN_SCREENSHOT"):
                element("slider-coronal").send_keys(Keys.ARROW_LEFT)
                wait.until(lambda d: slices_loaded())
                browser.save_screenshot(os.environ["SYNTHBRAIN_SCREENSHOT"])
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
