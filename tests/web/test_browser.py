"""Browser tests: headless Chromium against a real threaded werkzeug server, CSRF on.

Skipped when /usr/bin/chromium or /usr/bin/chromedriver is missing (``apt-get install chromium chromium-driver``),
except under CI (CI=true), where .ci/run installs them and a missing browser is a failure.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading

import pytest

from tests.conftest import require_service
from tests.factories import make_user

from . import factories as f

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [pytest.mark.browser]

WAIT_S = 15


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        require_service("headless Chromium", FileNotFoundError(
            f"browser tests need {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"))
    profile = tempfile.mkdtemp(prefix="bertqueue-chrome-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:  # noqa: BLE001 - a broken browser install is an environment problem, not a bug here
        shutil.rmtree(profile, ignore_errors=True)
        require_service("headless Chromium", exc)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def web_user(settings):
    """The (non-admin) user the browser logs in as."""
    return make_user("webuser", password="browser-pass")


@pytest.fixture
def server(settings, browser, web_user):
    """The app on a real threaded werkzeug server at 127.0.0.1:<free port>, the browser logged in through the
    login form; yields its base URL."""
    from selenium.webdriver.common.by import By
    from werkzeug.serving import make_server

    from web import create_app

    app = create_app({"SETTINGS": settings, "WTF_CSRF_ENABLED": True})
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    # leave the previous test's page first (its timers may still reload it and bring a session cookie back), then
    # clear every cookie whatever page is open
    browser.get("about:blank")
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.get(f"{base}/datasets")  # not logged in: sent to the login page, which brings us back
    wait(browser, lambda d: "/login" in d.current_url)
    browser.find_element(By.ID, "username").send_keys("webuser")
    browser.find_element(By.ID, "password").send_keys("browser-pass")
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(browser, lambda d: d.current_url == f"{base}/datasets")
    yield base
    httpd.shutdown()
    thread.join(timeout=10)


def wait(driver, condition, timeout=WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def test_upload_a_dataset_through_the_form(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    csv = tmp_path / "tweets.csv"
    csv.write_bytes(b"text,label\nso good,pos\nso bad,neg\nfine,pos\n")
    browser.get(f"{server}/datasets")
    assert "No datasets yet" in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(csv))
    browser.find_element(By.ID, "name").send_keys("Browser upload")
    browser.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    wait(browser, lambda d: "/datasets/" in d.current_url)
    assert "Browser upload" in browser.find_element(By.TAG_NAME, "h1").text
    assert "3 rows" in browser.page_source
    browser.get(f"{server}/datasets")
    table = browser.find_element(By.ID, "datasets-table")
    assert "Browser upload" in table.text and "tweets.csv" in table.text


def test_train_form_shows_families_and_their_options(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    dataset_id = f.make_dataset(shared=True)
    browser.get(f"{server}/train")
    family = Select(browser.find_element(By.ID, "family"))
    assert [o.get_attribute("value") for o in family.options] == ["bert", "distilbert", "bert_lstm", "multitask"]
    assert Select(browser.find_element(By.ID, "dataset_id")).first_selected_option.get_attribute("value") == str(
        dataset_id
    )
    # columns filled from GET /api/v1/datasets/<id>, with label counts
    wait(browser, lambda d: "pos 2" in d.find_element(By.ID, "label-counts").text)
    columns = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "text_column")).options]
    assert columns == ["text", "label", "topic"]
    # every option field is generated from core.options and shown only for the families it applies to
    lstm = browser.find_element(By.ID, "field-lstm_hidden")
    pooling = browser.find_element(By.ID, "field-pooling")
    multi_label = browser.find_element(By.ID, "field-multi_label")
    multitask = browser.find_element(By.ID, "field-label_columns")
    assert not lstm.is_displayed() and not multitask.is_displayed() and pooling.is_displayed()
    browser.find_element(By.ID, "multi_label").click()  # multi-label: several 0/1 label columns may be chosen
    assert multitask.is_displayed()
    browser.find_element(By.ID, "multi_label").click()
    assert not multitask.is_displayed()
    family.select_by_value("bert_lstm")
    assert lstm.is_displayed() and browser.find_element(By.ID, "lstm_hidden").is_displayed()
    assert not pooling.is_displayed() and multi_label.is_displayed()
    family.select_by_value("multitask")
    assert multitask.is_displayed() and not lstm.is_displayed() and not multi_label.is_displayed()
    assert not browser.find_element(By.ID, "field-label_column").is_displayed()
    # submit a multitask job with both label columns: redirected to the job page
    labels = Select(browser.find_element(By.ID, "label_columns"))
    labels.select_by_value("label")
    labels.select_by_value("topic")
    browser.find_element(By.CSS_SELECTOR, "#train-form button[type=submit]").click()
    wait(browser, lambda d: "/jobs/" in d.current_url)
    assert "queued" in browser.find_element(By.ID, "job-status-badge").text


def test_job_page_progress_updates_while_running(browser, server, web_user, tmp_path):
    from selenium.webdriver.common.by import By

    job_id = f.make_train_job(f.make_dataset(shared=True), owner_id=web_user.id)
    f.start(job_id)
    f.progress(job_id, 0.1)
    browser.get(f"{server}/jobs/{job_id}")
    bar = browser.find_element(By.ID, "job-progress")
    assert bar.get_attribute("aria-valuenow") == "10"
    assert browser.find_element(By.ID, "job-status-badge").text == "running"

    f.progress(job_id, 0.6)  # the worker reports progress: the page picks it up by polling the API
    wait(browser, lambda d: d.find_element(By.ID, "job-progress").get_attribute("aria-valuenow") == "60")
    assert browser.find_element(By.ID, "job-progress-text").text == "60%"
    width = browser.find_element(By.CSS_SELECTOR, "#job-progress .progress-fill").get_attribute("style")
    assert "60" in width
    browser.save_screenshot(str(tmp_path / "job-running.png"))

    f.succeed(job_id, metrics={"accuracy": 0.875, "macro_f1": 0.8, "history": [{"epoch": 1, "loss": 0.4}]})
    # reloaded once finished: the server-rendered page of a finished job, with its metrics
    wait(browser, lambda d: 'data-terminal="true"' in d.page_source and "macro_f1" in d.page_source)
    assert browser.find_element(By.ID, "job-status-badge").text == "succeeded"
    assert "0.875" in browser.page_source


def test_classify_a_dataset_through_the_form(browser, server, web_user, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from core.db import db
    from core.schema import Job

    model_id = f.make_model(owner_id=web_user.id, params={"text_column": "body"})
    first = f.make_dataset(shared=True)
    other = f.make_dataset(b"tweet_id,body,label\n1,hello,a\n2,world,b\n", name="tweets", shared=True)
    browser.get(f"{server}/classify")
    text_column = browser.find_element(By.ID, "text_column")
    assert not browser.find_element(By.ID, "field-text_column").is_displayed()  # no dataset chosen: texts mode
    datasets = Select(browser.find_element(By.ID, "dataset_id"))
    datasets.select_by_value(str(first))
    wait(browser, lambda d: [o.get_attribute("value") for o in Select(text_column).options] == [
        "", "text", "label", "topic"])
    datasets.select_by_value(str(other))
    # columns filled from GET /api/v1/datasets/<id>; first and chosen by default (and kept across a change of
    # dataset): read the text as the model was trained
    wait(browser, lambda d: [o.get_attribute("value") for o in Select(text_column).options] == [
        "", "tweet_id", "body", "label"])
    assert text_column.is_displayed() and Select(text_column).first_selected_option.get_attribute("value") == ""
    id_column = Select(browser.find_element(By.ID, "id_column"))
    assert [o.get_attribute("value") for o in id_column.options] == ["", "tweet_id", "body", "label"]
    id_column.select_by_value("tweet_id")
    browser.save_screenshot(str(tmp_path / "classify-dataset.png"))
    browser.find_element(By.CSS_SELECTOR, "#classify-form button[type=submit]").click()
    wait(browser, lambda d: "/jobs/" in d.current_url)
    assert "queued" in browser.find_element(By.ID, "job-status-badge").text
    assert "2 row(s) of dataset tweets" in browser.page_source
    with db.session() as session:
        job = session.get(Job, browser.current_url.rsplit("/", 1)[1])
        assert job.params == {"model_id": model_id, "dataset_id": other, "text_column": "body",
                              "id_column": "tweet_id", "text_count": 2}


def test_classify_typed_pairs_through_the_form(browser, server, web_user, tmp_path):
    """The second-texts box shows only while a sentence-pair model is chosen; its lines pair with the texts."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from core.db import db
    from core.schema import Job

    single = f.make_model(owner_id=web_user.id, name="plain")
    pair_model = f.make_model(owner_id=web_user.id, name="nli", params={"text_pair_column": "hypothesis"})
    browser.get(f"{server}/classify")
    model = Select(browser.find_element(By.ID, "model_id"))
    pairs_field = browser.find_element(By.ID, "field-text_pairs")
    model.select_by_value(str(single))
    wait(browser, lambda d: not pairs_field.is_displayed())
    model.select_by_value(str(pair_model))
    wait(browser, lambda d: pairs_field.is_displayed())
    browser.find_element(By.ID, "texts").send_keys("a man sings\nit rains")
    browser.find_element(By.ID, "text_pairs").send_keys("someone makes music\nthe street is wet")
    browser.save_screenshot(str(tmp_path / "classify-pairs.png"))
    browser.find_element(By.CSS_SELECTOR, "#classify-form button[type=submit]").click()
    wait(browser, lambda d: "/jobs/" in d.current_url)
    with db.session() as session:
        job = session.get(Job, browser.current_url.rsplit("/", 1)[1])
        assert job.inputs == [["a man sings", "someone makes music"], ["it rains", "the street is wet"]]
