"""report.html: the numbers it shows equal results.json and predictions.jsonl; it stays small; and in a real browser
(Debian's chromium driven by Playwright) it loads with no console error and no network request, its ranking sorts,
its gallery shows pictures, and a confusion cell lists its questions."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from featcache.datasets import load_dataset
from featcache.extract import Compute, extract
from heads.page.render import read_page_data, write_page
from heads.predictions import read_predictions


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_itm):
    from featcache.models.backbone import load_backbone

    folder = tmp_path_factory.mktemp("page")
    cache = folder / "easy.h5"
    extract(load_dataset("easy-vqa", limit=400), cache, model=load_backbone(str(tiny_itm), device="cpu"),
            progress=False, compute=Compute(workers=0))
    r = CliRunner().invoke(main, ["sweep", str(cache), "--heads", "lr,knn", "--views", "pooled", "--umap", "200",
                                  "--out", str(folder / "rep")])
    assert r.exit_code == 0, r.output
    assert "report.html" in r.output
    return folder / "rep"


def test_the_page_shows_what_results_json_and_predictions_hold(report):
    import pandas as pd

    data = read_page_data(report / "report.html")
    results = json.loads((report / "results.json").read_text())
    assert data["ranking"] == results["ranking"] and data["evaluation"] == results["evaluation"]
    assert {c["class"]: [c["precision"], c["recall"], c["f1"], c["support"]] for c in data["per_class"]} == {
        c: [m["precision"], m["recall"], m["f1"], m["support"]] for c, m in results["per_class"].items()}
    samples = read_predictions(report / "predictions.jsonl")
    frame = pd.read_json(report / "predictions.jsonl", lines=True)  # one line of pandas reads every question back
    assert len(frame) == len(samples) == results["evaluation"]["n"] == data["n_samples"]
    assert np.mean([s["prediction"] == s["label"] for s in samples]) == pytest.approx(results["evaluation"]["accuracy"])
    labels = data["confusion"]["labels"]
    for i, true in enumerate(labels):
        for j, pred in enumerate(labels):
            count = sum(s["label"] == true and s["prediction"] == pred for s in samples)
            assert data["confusion"]["matrix"][i][j] == count
            for example in data["confusion"]["cells"].get(f"{i},{j}", []):
                assert data["samples"][str(example)]["label"] == true
    cal = data["calibration"]
    assert sum(b["n"] for b in cal["bins"]) == len(samples)
    assert cal["ece"] == pytest.approx(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in cal["bins"]) /
                                       len(samples))
    shown = set(data["samples"])
    assert {str(i) for i in data["gallery"]["errors"] + data["gallery"]["right"]} <= shown
    assert len(data["umap"]["index"]) == len(data["umap"]["x"]) > 0
    # the easy-vqa package's images, found from the cache's own record of its dataset
    assert data["thumbnails"] and all(v.startswith("data:image/jpeg;base64,") for v in data["thumbnails"].values())


def test_a_5000_question_page_with_200_pictures_stays_under_10_mb(tmp_path):
    import base64
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    classes = [f"answer{i}" for i in range(300)]
    samples = []
    for i in range(5000):
        label, pred = classes[rng.integers(300)], classes[rng.integers(300)]
        samples.append({"row": i, "question_id": str(i), "image": f"img{i % 900}", "question": f"what is {i}?",
                        "label": label, "split": "test", "prediction": pred, "confidence": float(rng.random()),
                        "top5": [[classes[k], 0.1] for k in rng.integers(0, 300, 5)], "score": float(label == pred),
                        "answers": [label] * 10, "answer_scores": {label: 1.0}})

    def thumbnails(keys):
        out = {}
        for key in keys[:200]:
            image = Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))  # noise: JPEG's worst case
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=70)
            out[key] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
        return out

    payload = {"title": "size", "ranking": [], "evaluation": {"n": 5000, "accuracy": 0.0}, "per_class": {
        c: {"precision": 0.1, "recall": 0.1, "f1": 0.1, "support": 17} for c in classes}}
    path = write_page(tmp_path / "report.html", payload, samples, thumbnails)
    assert path.stat().st_size < 10 * 2**20, path.stat().st_size
    assert len(read_page_data(path)["thumbnails"]) >= 180  # every image the page shows (gallery, cells)


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    return chromium, playwright


def test_the_page_works_in_a_real_browser(report, tmp_path):
    chromium, playwright = _browser()
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else requests.append(r.url))
        page.goto((report / "report.html").as_uri())
        page.wait_for_selector("body[data-ready=true]")
        # the ranking sorts when a header is clicked
        column = page.locator("#ranking-grid th", has_text="accuracy").first
        column.click()
        index = page.locator("#ranking-grid th").evaluate_all("(ths, t) => ths.findIndex((th) => th.textContent === t)",
                                                              "accuracy")
        values = [float(v) for v in page.locator(f"#ranking-grid tbody tr td:nth-child({index + 1})").all_inner_texts()]
        assert values == sorted(values, reverse=True)
        column.click()
        values = [float(v) for v in page.locator(f"#ranking-grid tbody tr td:nth-child({index + 1})").all_inner_texts()]
        assert values == sorted(values)
        # the gallery's thumbnails are decoded pictures
        widths = page.locator("#gallery img.thumb").evaluate_all("(imgs) => imgs.map((i) => i.naturalWidth)")
        assert widths and min(widths) > 0
        # a click on a confusion cell (the diagonal's first: it has questions) lists them
        page.locator("#confusion-plot").scroll_into_view_if_needed()
        box = page.evaluate("""() => { const gd = document.getElementById('confusion-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
            return {x: r.left + xa._offset + xa.l2p(0), y: r.top + ya._offset + ya.l2p(0)}; }""")
        page.mouse.click(box["x"], box["y"])
        page.wait_for_selector("#cell-title")
        assert page.locator("#cell-examples .card").count() >= 1
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == [] and requests == []
