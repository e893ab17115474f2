"""Render report.html with Jinja2, Plotly's JavaScript and the page's data embedded: it opens offline, makes no
network request (its Content-Security-Policy forbids any), and is one file to mail or archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .data import page_data

HERE = Path(__file__).parent
SECTIONS = [("summary", "Summary"), ("ranking", "Ranking"), ("classes", "Per class"), ("confusion", "Confusion"),
            ("gallery", "Errors"), ("calibration", "Calibration"), ("umap", "UMAP"), ("provenance", "Provenance")]

Thumbnailer = Callable[[list[str]], dict[str, str]]
"""Image keys -> data: URIs of their thumbnails (keys it cannot open are left out)."""


def _script_safe(text: str) -> str:
    """Text that cannot end the <script> element it sits in."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def write_page(path: str | Path, payload: dict, samples: list[dict], thumbnails: Thumbnailer | None = None,
               thumbnail_note: str = "", umap: dict | None = None) -> Path:
    """Write report.html for a report whose results.json holds `payload`, with its per-question `samples`."""
    import jinja2
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    data = page_data(payload, samples, umap)
    keys = sorted({s["image"] for s in data["samples"].values()})
    if thumbnails is not None and keys:
        data["thumbnails"] = thumbnails(keys)
        missing = len(keys) - len(data["thumbnails"])
        data["thumbnail_note"] = thumbnail_note or (f"{missing} of {len(keys)} images could not be opened: their "
                                                    f"keys are shown instead." if missing else "")
    else:
        data["thumbnail_note"] = thumbnail_note or ("The images were not reachable from this report (the cache's "
                                                    "dataset source could not be opened): the gallery shows their keys.")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("template.html.j2").render(
        title=data["title"], random_weights=data["random_weights"],
        model_id=(payload.get("cache") or {}).get("model_id", "tiny-random"), sections=SECTIONS,
        css=Markup((HERE / "page.css").read_text(encoding="utf-8")),
        data_json=Markup(_script_safe(json.dumps(_finite(data), default=_plain, allow_nan=False))),
        plotly_js=Markup(_script_safe(get_plotlyjs())), page_js=Markup((HERE / "page.js").read_text(encoding="utf-8")))
    path = Path(path)
    path.write_text(html, encoding="utf-8")
    return path


def read_page_data(path: str | Path) -> dict:
    """The data a report.html embeds (what its tables and charts show)."""
    html = Path(path).read_text(encoding="utf-8")
    start = html.index('<script id="page-data" type="application/json">') + len('<script id="page-data" '
                                                                                  'type="application/json">')
    return json.loads(html[start:html.index("</script>", start)].replace("<\\/", "</").replace("<\\!--", "<!--"))


def _finite(value):
    """`value` with NaN and infinities as None (JSON.parse refuses them: one would blank the whole page)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value):
    """JSON for numpy scalars and anything else a payload may hold."""
    import numpy as np

    if isinstance(value, np.generic):
        return _finite(value.item())
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_compare_page(path: str | Path, result: dict, columns) -> Path:
    """compare.html: the runs' table and the paired tests, rendered on the server side (no script at all)."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("compare.html.j2").render(result=result, columns=list(columns),
                                                      css=Markup((HERE / "page.css").read_text(encoding="utf-8")))
    path = Path(path)
    path.write_text(html, encoding="utf-8")
    return path


def write_issues_page(path: str | Path, title: str, issues: list[dict], thumbnails: Thumbnailer | None,
                      note: str = "", random_weights: bool = False, shown: int = 300) -> Path:
    """label_issues.html: the most suspicious rows as cards with their images (no script)."""
    import jinja2
    from markupsafe import Markup

    issues = issues[:shown]
    pictures = thumbnails(sorted({r["image"] for r in issues})) if thumbnails is not None and issues else {}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("issues.html.j2").render(title=title, issues=issues, thumbnails=pictures, note=note,
                                                     random_weights=random_weights,
                                                     css=Markup((HERE / "page.css").read_text(encoding="utf-8")))
    path = Path(path)
    path.write_text(html, encoding="utf-8")
    return path


def write_captions_page(path: str | Path, title: str, captions: dict[str, str], references: dict | None,
                        scores: dict | None, settings: dict, thumbnails: Thumbnailer | None, note: str = "",
                        random_weights: bool = False, shown: int = 500) -> Path:
    """A captions file's page: the scores against the references, and each image with its caption (no script)."""
    import jinja2
    from markupsafe import Markup

    items = [{"image": k, "caption": c, "references": (references or {}).get(k, [])}
             for k, c in list(captions.items())[:shown]]
    pictures = thumbnails([i["image"] for i in items]) if thumbnails is not None and items else {}
    if thumbnails is None and not note:
        note = "The images could not be opened here: their keys are shown."
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("captions.html.j2").render(
        title=title, items=items, total=len(captions), thumbnails=pictures, scores=scores, settings=settings,
        note=note, random_weights=random_weights, css=Markup((HERE / "page.css").read_text(encoding="utf-8")))
    path = Path(path)
    path.write_text(html, encoding="utf-8")
    return path
