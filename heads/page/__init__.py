"""report.html: one self-contained page per report (tables, charts, error gallery), drawn offline in a browser."""

from .render import write_page

__all__ = ["write_page"]
