"""The report page in headless Chromium: loads from disk, every image loads, no console errors,
the gallery sorts and filters, a card opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from autointerp.stages.report import run_report
from tests.conftest import requires_chromium
from tests.report_fixtures import N_FEATURES, build_run

pytestmark = [
    pytest.mark.browser,
    requires_chromium,
]


def _column_values(page, col: int) -> list[str]:
    return page.eval_on_selector_all(
        "#gallery tbody tr",
        f"rows => rows.filter(r => r.style.display !== 'none').map(r => r.cells[{col}].getAttribute('data-v'))",
    )


def test_report_page_in_chromium(browser, tmp_path: Path) -> None:
    ctx = build_run(tmp_path / "run")
    run_report(ctx)
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.goto((ctx.paths.report / "index.html").as_uri())
    # Load every image (gallery thumbnails are lazy) and check each decoded.
    page.eval_on_selector_all("img", "imgs => imgs.forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=20000)
    broken = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
    n_images = page.eval_on_selector_all("img", "imgs => imgs.length")
    assert broken == [] and n_images >= N_FEATURES + 5

    headers = page.eval_on_selector_all("#gallery thead th", "ths => ths.map(t => t.textContent)")
    imp_col = headers.index("importance")
    page.click(f"#gallery thead th:nth-child({imp_col + 1})")
    ascending = [float(v) for v in _column_values(page, imp_col)]
    assert ascending == sorted(ascending) and len(ascending) == N_FEATURES
    page.click(f"#gallery thead th:nth-child({imp_col + 1})")
    descending = [float(v) for v in _column_values(page, imp_col)]
    assert descending == sorted(ascending, reverse=True)
    good_col = headers.index("good")
    page.click(f"#gallery thead th:nth-child({good_col + 1})")
    good = [float(v) for v in _column_values(page, good_col)]
    assert good == sorted(good)

    page.select_option("#group-filter", "top")
    assert page.text_content("#shown") == "8"
    assert set(
        page.eval_on_selector_all(
            "#gallery tbody tr",
            "rows => rows.filter(r => r.style.display !== 'none').map(r => r.getAttribute('data-group'))",
        )
    ) == {"top"}
    page.select_option("#group-filter", "")
    page.fill("#filter", "weaker")  # feature 3's quality flag
    assert page.text_content("#shown") == "1"

    page.click("#gallery tbody tr:not([style*='none']) img.thumb")
    page.wait_for_selector("#detail .box img")
    page.wait_for_function("[...document.querySelectorAll('#detail img')].every(i => i.complete && i.naturalWidth)")
    assert page.eval_on_selector_all("#detail img", "imgs => imgs.length") == 3  # card, vis, example
    assert problems == []
    page.close()
