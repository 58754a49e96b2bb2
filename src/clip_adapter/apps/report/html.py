"""The page: escaping, small building blocks and the self-contained template.

Nothing on the page comes from the network: figures are PNG ``data:`` URIs, the
CSS is inline, fonts are the viewer's own, and there is no script. A
Content-Security-Policy ``<meta>`` makes that a rule the browser enforces (only
``data:`` images and the inline style may load), so a page that would reach
out fails visibly in any browser instead of silently leaking a request.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Iterable, Sequence

from .fields import MALFORMED, number

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
GENERATOR = "clip-adapter report"  # lets a later run recognise its own earlier page (see paths.is_report_page)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1d2430; background: #f4f6f9; line-height: 1.45; }
header { background: #1f3a5f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; opacity: .85; font-size: 14px; }
nav { padding: 8px 32px; background: #e3e9f1; font-size: 13px; }
nav a { margin-right: 14px; color: #1f3a5f; text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1200px; }
section { background: #fff; border: 1px solid #d9dee6; border-radius: 6px; margin: 16px 0; padding: 12px 20px; }
h2 { font-size: 18px; margin: 6px 0 10px; color: #1f3a5f; }
h3 { font-size: 15px; margin: 14px 0 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px; }
th, td { border: 1px solid #d9dee6; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.kv th { width: 220px; }
.good { color: #146c2e; font-weight: 600; }
.bad { color: #b3261e; font-weight: 600; }
.note { color: #5b6472; font-size: 13px; }
.warn { background: #fff4e5; border-left: 4px solid #e8a33d; padding: 6px 10px; font-size: 13px; }
.big { font-size: 26px; font-weight: 700; margin-right: 28px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #d9dee6; border-radius: 5px; padding: 6px; width: 150px; \
font-size: 12px; background: #fafbfc; }
.card b { word-break: break-all; }
.card img { width: 128px; height: 128px; object-fit: contain; image-rendering: auto; display: block; margin: 0 auto 4px;
            background: #eee; }
figure { margin: 8px 0; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
figure img { max-width: 100%; border: 1px solid #e2e6ec; }
figcaption { font-size: 12px; color: #5b6472; }
code { background: #eef2f7; padding: 0 3px; border-radius: 3px; }
"""


def esc(value: Any) -> str:
    """Text for HTML: escaped, so class names or paths can never become markup.

    Example:
        >>> esc("<cat & dog>")
        '&lt;cat &amp; dog&gt;'
    """
    return html.escape(str(value), quote=True)


def pct(value: Any, digits: int = 2) -> str:
    """A fraction as a percentage (``n/a`` for a missing value).

    Example:
        >>> pct(0.8751), pct(None)
        ('87.51%', 'n/a')
    """
    if value is MALFORMED:
        return "malformed"
    return f"{100 * value:.{digits}f}%" if number(value) else "n/a"  # number(): finite, so never an overflow here


def signed_points(value: float | None) -> str:
    """A difference of two fractions in percentage points, coloured by sign."""
    if not number(value):
        return '<span class="note">n/a</span>'
    cls = "good" if value > 0 else "bad" if value < 0 else "note"
    return f'<span class="{cls}">{100 * value:+.2f}</span>'


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, caption: str, alt: str) -> str:
    """An embedded PNG with a caption."""
    return f'<figure><img src="{data_uri(png)}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'


def table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (), raw: bool = False, cls: str = ""
) -> str:
    """A table; cells are escaped unless ``raw`` (the caller built safe HTML), ``numeric`` columns right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = str(cell) if raw else esc(cell)
            cells.append(f'<td class="num">{text}</td>' if i in numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of labelled values (values escaped)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def note(text: str, warn: bool = False) -> str:
    return f'<p class="{"warn" if warn else "note"}">{esc(text)}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are ``(anchor, title, body_html)``, linked from a contents bar."""
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="generator" content="{GENERATOR}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{links}</nav>"
        f"<main>{body}</main></body></html>\n"
    )
