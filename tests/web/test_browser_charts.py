"""The job page's charts in headless Chromium (tests/web/test_browser.py's server and login): training curves drawn
from the live history and swapped in by job.js as evaluations arrive, the ETA, and the confusion-matrix heat map
once the job has finished."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from core.db import db
from core.schema import Job, utcnow

from . import factories as f
from .test_browser import browser, server, wait, web_user  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser]

HISTORY = [{"step": s, "epoch": s // 10, "train_loss": 1.5 / s * 10, "val_loss": 1.2 / s * 10,
            "accuracy": 0.4 + s / 100, "macro_f1": 0.3 + s / 100} for s in (10, 20, 30)]


def _points(driver, series: str) -> int:
    return len(driver.find_elements("css selector", f'#training-curves g[data-series="{series}"] circle'))


def test_training_curves_grow_while_it_runs_then_the_heat_map_appears(browser, server, web_user):  # noqa: F811
    from selenium.webdriver.common.by import By

    job_id = f.make_train_job(f.make_dataset(owner_id=web_user.id), owner_id=web_user.id)
    f.start(job_id)
    with db.session() as session:  # what the runner's lease stores while the training runs
        session.execute(update(Job).where(Job.id == job_id).values(
            progress=0.4, metrics={"history": HISTORY[:1]}, eta_at=utcnow() + timedelta(seconds=125)))
    browser.get(f"{server}/jobs/{job_id}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#training-curves svg")) == 2
    assert _points(browser, "train_loss") == 1 and _points(browser, "macro_f1") == 1
    eta = browser.find_element(By.ID, "job-eta")
    assert eta.is_displayed() and "2 min" in eta.text

    with db.session() as session:  # two more evaluations: job.js polls and swaps in the new charts
        session.execute(update(Job).where(Job.id == job_id).values(progress=0.8, metrics={"history": HISTORY}))
    wait(browser, lambda d: _points(d, "train_loss") == 3)
    assert _points(browser, "accuracy") == 3
    bbox = browser.find_element(By.CSS_SELECTOR, "#chart-loss").size
    assert bbox["width"] > 200 and bbox["height"] > 100  # drawn, not an empty box

    f.succeed(job_id, metrics={"history": HISTORY, "accuracy": 0.7, "macro_f1": 0.6, "best_step": 30,
                               "confusion_matrix": {"labels": ["neg", "pos"], "matrix": [[5, 1], [2, 4]]},
                               "per_class": {"neg": {"precision": 0.71, "recall": 0.83, "f1": 0.77, "support": 6},
                                             "pos": {"precision": 0.8, "recall": 0.67, "f1": 0.73, "support": 6}}})
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#class-results svg.heatmap"))  # reloaded when done
    cells = browser.find_elements(By.CSS_SELECTOR, "#class-results g.cell")
    assert [c.get_attribute("data-count") for c in cells] == ["5", "1", "2", "4"]
    assert not browser.find_element(By.ID, "job-eta").is_displayed()
    assert "0.83" in browser.find_element(By.CSS_SELECTOR, "table.per-class").text
