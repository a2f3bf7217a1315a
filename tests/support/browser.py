"""Airflow's UI in a real browser: headless Chromium logged in, and the trigger dialog driven as a
person drives it (the "Trigger" button, the single-run and backfill forms, their fields)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHOTS = Path(__file__).resolve().parents[2] / ".local" / "test-artifacts"


@contextmanager
def logged_in_browser(airflow, *, offline: bool = False) -> Iterator[tuple[Any, Any]]:
    """Headless Chromium (Debian's, through chromedriver) logged in to Airflow: (driver, wait).

    ``offline``: no host name but localhost resolves (as on a machine without internet)."""
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from include.preference.services import ADMIN_USER

    SHOTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(argument)
    if offline:
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    # React re-renders replace elements while a condition looks at them: look again, not fail.
    wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))
    try:
        driver.get(f"{airflow.airflow_url}/")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(ADMIN_USER)
        driver.find_element(By.NAME, "password").send_keys(airflow.admin_password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: any(c["name"] == "_token" for c in d.get_cookies()))
        yield driver, wait
    finally:
        driver.quit()


def open_trigger_dialog(driver: Any, wait: Any, airflow_url: str, dag_id: str) -> Any:
    """The DAG's page, then its "Trigger" button: the dialog (single run selected)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(f"{airflow_url}/dags/{dag_id}")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"))).click()
    dialog = wait.until(
        lambda d: next((x for x in d.find_elements(By.CSS_SELECTOR, "[role=dialog]") if x.is_displayed()), None)
    )
    wait.until(lambda d: d.find_elements(By.ID, "element_input_path"))  # the params' form has rendered
    return dialog


def choose(driver: Any, wait: Any, param: str, option: str, label: str | None = None) -> None:
    """Pick ``option`` in the select box of an enum param (shown as ``label`` when it has one)."""
    from selenium.webdriver.common.by import By

    hidden = driver.find_element(By.CSS_SELECTOR, f"input[name=element_{param}]")
    hidden.find_element(By.XPATH, "./preceding::input[@role='combobox'][1]").click()
    options = wait.until(
        lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]") if o.is_displayed()] or None
    )
    next(o for o in options if o.text.strip() == (label or option)).click()
    wait.until(lambda d: hidden.get_attribute("value") == option)


def submit_button(driver: Any, text: str) -> Any:
    """The dialog's button labelled ``text``."""
    from selenium.webdriver.common.by import By

    dialog = next(x for x in driver.find_elements(By.CSS_SELECTOR, "[role=dialog]") if x.is_displayed())
    buttons = [b for b in dialog.find_elements(By.TAG_NAME, "button") if b.is_displayed() and b.text.strip() == text]
    assert len(buttons) == 1, f"one {text!r} button expected, found {len(buttons)}"
    return buttons[0]


def submit_and_wait_closed(driver: Any, wait: Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    button = submit_button(driver, text)
    assert button.is_enabled(), f"{text!r} is disabled"
    button.click()
    wait.until(lambda d: not any(x.is_displayed() for x in d.find_elements(By.CSS_SELECTOR, "[role=dialog]")))


def set_datetime(driver: Any, wait: Any, index: int, moment: dt.datetime) -> None:
    """Fill the ``index``-th date-and-time field of the dialog (its popover's date and time inputs)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_elements(By.CSS_SELECTOR, "[data-testid=datetime-input]")[index].click()
    popover = wait.until(lambda d: next(iter(_open_popovers(d)), None))
    for placeholder, value in (("YYYY/MM/DD", moment.strftime("%Y/%m/%d")), ("HH:mm", moment.strftime("%H:%M"))):
        field = popover.find_element(By.CSS_SELECTOR, f"input[placeholder='{placeholder}']")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value)
    popover.find_element(By.CSS_SELECTOR, "input[placeholder='HH:mm']").send_keys(Keys.ESCAPE)
    wait.until(lambda d: not _open_popovers(d))


def _open_popovers(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, "[data-scope=popover][data-part=content][data-state=open]")
    return [p for p in found if p.is_displayed()]


def fill_backfill(driver: Any, wait: Any, first: dt.date, last: dt.date, reprocess: str) -> None:
    """Switch the open dialog to "Backfill" and fill its range (midnight UTC of ``first`` to
    ``last``) and reprocess behaviour (``none``, ``failed`` or ``completed``)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "input[value=backfill]").find_element(By.XPATH, "..").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=datetime-input]"))
    for index, day in enumerate((first, last)):
        set_datetime(driver, wait, index, dt.datetime.combine(day, dt.time()))
    driver.find_element(By.CSS_SELECTOR, f"input[value={reprocess}]").find_element(By.XPATH, "..").click()
