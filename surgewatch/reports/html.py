"""The one HTML and Markdown toolkit of the reports (digest and review): Jinja2 templates with
autoescaping for pages, and one Markdown escaper for outside text.  A report's page is
self-contained: inline CSS, its chart as a data: URI, no script, nothing fetched."""
from __future__ import annotations

import base64
import html
import re
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

SAFE_URL = re.compile(r"^https?://\S+$", re.IGNORECASE)
_MD_URL = re.compile(r"^https?://[^\s<>()]+$")

_env = Environment(
    loader=PackageLoader("surgewatch.reports", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt field is an error, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["b64"] = lambda png: base64.b64encode(png).decode("ascii")
_env.tests["safe_url"] = lambda url: bool(SAFE_URL.match(url or ""))


def render_page(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` (every string in ``context`` is escaped unless marked safe)."""
    return _env.get_template(template).render(**context)


def md(s: object, limit: int | None = None) -> str:
    """Outside text in Markdown (also in a table cell): HTML-escaped (renderers pass HTML through),
    one line, no table breaks, no Markdown punctuation that could make a link, image or emphasis."""
    text = "" if s is None else str(s)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = re.sub(r"\s+", " ", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    # with the brackets escaped, parentheses can no longer form a link and stay readable
    return re.sub(r"([\[\]*_`!~])", r"\\\1", text)


def md_cell(s: object) -> str:
    """Our own text in a Markdown table cell or line (it may quote an outside error message): HTML
    escaped, no pipes, no newlines; its own `code` and ~ stay as written."""
    return html.escape(str(s), quote=False).replace("|", "\\|").replace("\n", " ")


def md_link(url: str, label: str) -> str:
    """A Markdown link for an http(s) URL; anything else stays plain (already escaped) text."""
    if _MD_URL.match(url or ""):
        return f"[{label}]({url})"
    return label


def md_table(header: list[str] | tuple[str, ...], rows: Any) -> list[str]:
    """A Markdown table; every cell goes through :func:`md`."""
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return lines
