"""Token classification in headless Chromium (tests/web/test_browser.py's server and login): the train form's task
type switches the data fields and options, a token job's form posts its tokens and tags columns, the classify page
shows the aggregation strategy for token models only, and an entity mark shows its type and score on hover; the
token data switch (tokens + tags, or text + spans) follows the dataset and posts a spans job."""
from __future__ import annotations

import pytest

from core.db import db
from core.schema import Job

from . import factories as f
from .test_browser import browser, server, wait, web_user  # noqa: F401  (fixtures)
from .test_span_train_form import SPAN_CSV
from .test_token_pages import TOKEN_CSV, token_job, token_model

pytestmark = [pytest.mark.browser]


def test_train_form_switches_to_token_classification(browser, server, web_user):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    f.make_dataset(TOKEN_CSV, name="ner", owner_id=web_user.id)
    browser.get(f"{server}/train")
    task_type = Select(browser.find_element(By.ID, "task_type"))
    assert task_type.first_selected_option.get_attribute("value") == "text-classification"
    label_column = browser.find_element(By.ID, "field-label_column")
    tokens_field = browser.find_element(By.ID, "field-tokens_column")
    tags_field = browser.find_element(By.ID, "field-tags_column")
    stride = browser.find_element(By.ID, "field-stride")
    multi_label = browser.find_element(By.ID, "field-multi_label")
    assert label_column.is_displayed() and not tokens_field.is_displayed() and not tags_field.is_displayed()
    assert not stride.is_displayed() and multi_label.is_displayed()

    task_type.select_by_value("token-classification")
    wait(browser, lambda d: tokens_field.is_displayed())
    assert tags_field.is_displayed() and not label_column.is_displayed()
    assert not browser.find_element(By.ID, "field-text_column").is_displayed()
    assert stride.is_displayed() and not multi_label.is_displayed()
    assert not browser.find_element(By.ID, "field-pooling").is_displayed()
    # a task type trains some families only; the metric follows the task type's
    family = Select(browser.find_element(By.ID, "family"))
    disabled = [o.get_attribute("value") for o in family.options if not o.is_enabled()]
    assert disabled == ["multitask"]
    assert browser.find_element(By.ID, "metric").get_attribute("value") == "f1"
    # the selects are filled from the dataset, "tokens" and "tags" chosen
    wait(browser, lambda d: Select(d.find_element(By.ID, "tokens_column")).first_selected_option
         .get_attribute("value") == "tokens")
    assert Select(browser.find_element(By.ID, "tags_column")).first_selected_option.get_attribute("value") == "tags"
    family.select_by_value("bert_lstm")
    assert browser.find_element(By.ID, "field-lstm_hidden").is_displayed() and stride.is_displayed()

    browser.find_element(By.CSS_SELECTOR, "#train-form button[type=submit]").click()
    wait(browser, lambda d: "/jobs/" in d.current_url)
    with db.session() as session:
        params = session.get(Job, browser.current_url.rsplit("/", 1)[1]).params
    assert params["task_type"] == "token-classification" and params["family"] == "bert_lstm"
    assert params["tokens_column"] == "tokens" and params["tags_column"] == "tags" and params["metric"] == "f1"

    # and back: the text fields return
    browser.get(f"{server}/train?task_type=token-classification")
    assert not browser.find_element(By.ID, "field-label_column").is_displayed()
    Select(browser.find_element(By.ID, "task_type")).select_by_value("text-classification")
    assert browser.find_element(By.ID, "field-label_column").is_displayed()
    assert not browser.find_element(By.ID, "field-tokens_column").is_displayed()


def test_train_form_switches_to_span_data(browser, server, web_user):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    tokens_id = f.make_dataset(TOKEN_CSV, name="ner", owner_id=web_user.id)
    spans_id = f.make_dataset(SPAN_CSV, name="spans", owner_id=web_user.id)
    browser.get(f"{server}/train?task_type=token-classification&dataset_id={tokens_id}")
    token_data = Select(browser.find_element(By.ID, "token_data"))
    fields = {name: browser.find_element(By.ID, f"field-{name}")
              for name in ("tokens_column", "tags_column", "spans_column", "text_column", "token_data")}

    def shown():
        return {name for name, el in fields.items() if el.is_displayed()}

    assert shown() == {"token_data", "tokens_column", "tags_column"}
    # another dataset: its columns are span data's, so the switch follows and the spans and text columns show
    Select(browser.find_element(By.ID, "dataset_id")).select_by_value(str(spans_id))
    wait(browser, lambda d: shown() == {"token_data", "spans_column", "text_column"})
    assert token_data.first_selected_option.get_attribute("value") == "spans"
    assert Select(browser.find_element(By.ID, "spans_column")).first_selected_option.get_attribute("value") == \
        "entities"
    assert Select(browser.find_element(By.ID, "text_column")).first_selected_option.get_attribute("value") == "text"
    # switched by hand, and back
    token_data.select_by_value("tokens")
    assert shown() == {"token_data", "tokens_column", "tags_column"}
    token_data.select_by_value("spans")
    assert shown() == {"token_data", "spans_column", "text_column"}
    # text classification hides the switch and the spans column, shows the text column
    task_type = Select(browser.find_element(By.ID, "task_type"))
    task_type.select_by_value("text-classification")
    assert shown() == {"text_column"}
    task_type.select_by_value("token-classification")

    browser.find_element(By.CSS_SELECTOR, "#train-form button[type=submit]").click()
    wait(browser, lambda d: "/jobs/" in d.current_url)
    with db.session() as session:
        params = session.get(Job, browser.current_url.rsplit("/", 1)[1]).params
    assert params["task_type"] == "token-classification" and params["dataset_id"] == spans_id
    assert params["spans_column"] == "entities" and params["text_column"] == "text"
    assert params["tokens_column"] is None


def test_entity_marks_show_their_score_on_hover(browser, server, web_user, tmp_path):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    model_id = token_model(owner_id=web_user.id)
    text_model = f.make_model(owner_id=web_user.id, name="plain")
    job_id = token_job(model_id, owner_id=web_user.id)
    browser.get(f"{server}/jobs/{job_id}")
    marks = browser.find_elements(By.CSS_SELECTOR, "#predictions-table mark.ent")
    assert [m.get_attribute("data-entity") for m in marks] == ["person", "location"]
    person = marks[0]
    ActionChains(browser).move_to_element(person).perform()
    assert person.get_attribute("title") == "person · score 0.987"
    assert person.find_element(By.CSS_SELECTOR, ".ent-label").text.lower() == "person"
    assert person.value_of_css_property("cursor") == "help"
    background = person.value_of_css_property("background-color")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")
    # the text is text: the <script> of the input is shown, never run
    cell = browser.find_element(By.CSS_SELECTOR, "#predictions-table .entities-cell")
    assert cell.text.startswith("BobPERSON met <script>alert(1)</script> in Paris")
    browser.save_screenshot(str(tmp_path / "entities.png"))

    # the classify page: the aggregation strategy only for the token model
    browser.get(f"{server}/classify")
    model = Select(browser.find_element(By.ID, "model_id"))
    strategy = browser.find_element(By.ID, "field-aggregation_strategy")
    model.select_by_value(str(text_model))
    wait(browser, lambda d: not strategy.is_displayed())
    model.select_by_value(str(model_id))
    wait(browser, lambda d: strategy.is_displayed())
    assert not browser.find_element(By.ID, "field-text_pairs").is_displayed()
    assert Select(browser.find_element(By.ID, "aggregation_strategy")).first_selected_option.text == "first"
    # the pre-tokenized mode: for the token model only; checked, the aggregation strategy (which it skips) hides
    pretokenized_field = browser.find_element(By.ID, "field-pretokenized")
    assert pretokenized_field.is_displayed()
    browser.find_element(By.ID, "pretokenized").click()
    wait(browser, lambda d: not strategy.is_displayed())
    assert browser.find_element(By.ID, "texts").get_attribute("placeholder").startswith("One sentence per line")
    model.select_by_value(str(text_model))  # a text model takes no tokens: hidden and unchecked
    wait(browser, lambda d: not pretokenized_field.is_displayed())
    assert not browser.find_element(By.ID, "pretokenized").is_selected()
    assert browser.find_element(By.ID, "texts").get_attribute("placeholder") == "One text per line"
