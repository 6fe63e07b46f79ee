"""End to end in headless Chromium: a participant completes a 3-feature survey through the real UI
(closing the browser half-way and resuming), then the export is imported by the ``human`` rater's reader."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autointerp.survey.testing import REPO, make_fake_run, running_server
from tests.conftest import requires_chromium

pytestmark = [
    pytest.mark.browser,
    requires_chromium,
]

# answers by position in the participant's order: (q1, q2, q3, q4, q5, q6)
PLAN = {1: (4, "dog faces, fur", 5, 4, 2, 1), 2: (2, "", 1, 3, 1, 1), 3: (5, "wheels,cars , road", 3, 5, 4, 2)}


def _images_loaded(page, selector: str) -> list[str]:
    """src of every image under ``selector``, asserting each one really decoded."""
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel + ' img')].every(i => i.complete && i.naturalWidth > 0)",
        arg=selector,
    )
    return page.eval_on_selector_all(f"{selector} img", "imgs => imgs.map(i => i.getAttribute('src'))")


def _step1(page, number: int) -> int:
    """Answer Q1-Q2 on the shown feature; returns the feature index (from the image URLs)."""
    q1, q2, *_ = PLAN[number]
    page.wait_for_selector("#survey:not([hidden])")
    assert page.inner_text("#feature-title") == f"Feature {number} of 3"
    srcs = _images_loaded(page, "#vis")
    assert len(srcs) == 4
    feature = int(re.fullmatch(r"/api/image/(\d+)/vis/0", srcs[0]).group(1))
    assert page.is_hidden("#reveal") and page.locator("#examples img").count() == 0
    page.click("#submit1")  # nothing answered yet: the page says what is missing, the server stores nothing
    assert "Please answer question 1" in page.inner_text("#error")
    page.check(f"#q1-{q1}")
    page.fill("#q2", q2)
    page.click("#submit1")
    page.wait_for_selector("#reveal:not([hidden])")
    return feature


def _step2(page, number: int) -> None:
    q1, q2, q3, q4, q5, q6 = PLAN[number]
    assert len(_images_loaded(page, "#examples")) == 8
    phrases = [p.strip() for p in q2.split(",") if p.strip()]
    if phrases:
        assert page.locator("#phrases li").all_inner_texts() == phrases  # Q2 stays visible next to Q3
    else:
        assert page.is_visible("#no-phrases") and page.is_checked("#q3-1") and page.is_disabled("#q3-2")
    # step 1 is locked and summarised, so the visualisations stay next to the examples
    assert page.is_disabled("#q1-1") and page.is_hidden("#step1") and page.is_visible("#vis img >> nth=3")
    summary = page.inner_text("#step1-summary")
    assert f"question 1 = {q1}" in summary and (", ".join(phrases) or "(no phrases)") in summary
    for key, value in (("q3", q3), ("q4", q4), ("q5", q5), ("q6", q6)):
        if not (key == "q3" and not phrases):
            page.check(f"#{key}-{value}")
    page.click("#submit2")
    page.wait_for_function(f"() => document.getElementById('progress-text').textContent.startsWith('{number} of 3')")


def test_participant_completes_survey_and_export_imports(browser, tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "run", features=(3, 7, 11))
    features: dict[int, int] = {}  # position -> feature
    with running_server(run) as url:
        # first visit: feature 1 complete, feature 2 only step 1, then the browser is closed
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        assert "group" not in page.content().lower() and "importance" not in page.content().lower()
        page.fill("#participant", "alice")
        page.click("#start")
        features[1] = _step1(page, 1)
        _step2(page, 1)
        features[2] = _step1(page, 2)
        context.close()

        # second visit: a fresh browser profile; entering the same id resumes at feature 2, step 2
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        page.fill("#participant", "alice")
        page.click("#start")
        page.wait_for_selector("#reveal:not([hidden])")
        assert page.inner_text("#feature-title") == "Feature 2 of 3"
        assert page.inner_text("#progress-text").startswith("1 of 3")
        assert f"/api/image/{features[2]}/vis/0" in _images_loaded(page, "#vis")
        _step2(page, 2)
        features[3] = _step1(page, 3)
        _step2(page, 3)
        page.wait_for_selector("#done:not([hidden])")
        assert "Thank you" in page.inner_text("#done")
        context.close()
    assert sorted(features.values()) == [3, 7, 11]

    out = tmp_path / "answers.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "autointerp.survey", "export", str(run), "--out", str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    for number, feature in features.items():
        q1, q2, q3, q4, q5, q6 = PLAN[number]
        (row,) = [r for r in rows if int(r["neuron"]) == feature]
        assert row["participant"] == "alice" and (row["model"], row["layer"]) == ("FakeNet", "mixed5a")
        assert [int(row[f"question{i}"]) for i in (1, 3, 4, 5, 6)] == [q1, q3, q4, q5, q6]
        assert row["text_question"] == ", ".join(p.strip() for p in q2.split(",") if p.strip())

    from autointerp import human_answers as human

    scores = human.load_human_scores([out], layer="mixed5a", model="FakeNet")
    assert sorted(scores.feature_ind.tolist()) == [3, 7, 11] and scores.n_participants == 1
    for number, feature in features.items():
        q1, _, q3, q4, *_ = (((v - 1) / 4) if isinstance(v, int) else v for v in PLAN[number])
        i = scores.feature_ind.tolist().index(feature)
        assert scores.I[i] == pytest.approx((q1 * q3 + q4) / 2)
