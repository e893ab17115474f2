"""report.html: one self-contained page per report (tables, charts, error gallery), drawn offline in a browser;
and the plain pages of compare, label-issues and captions (render.py)."""

from .render import write_page

__all__ = ["write_page"]
