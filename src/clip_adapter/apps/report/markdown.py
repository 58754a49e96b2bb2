"""The small Markdown subset the bench tables use (headings, pipe tables, paragraphs) as safe HTML."""

from __future__ import annotations

import re

from .html import esc

_NUMBER = re.compile(r"^[\d.\s±–n/a+-]+$")


def _inline(text: str) -> str:
    """Escaped text with ```code``` spans (the only inline markup the tables use)."""
    parts = text.split("`")
    return "".join(f"<code>{esc(p)}</code>" if i % 2 else esc(p) for i, p in enumerate(parts))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    head = "".join(f"<th>{_inline(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_inline(c)}</td>' if i and _NUMBER.match(c) else f"<td>{_inline(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_to_html(text: str, heading_offset: int = 2) -> str:
    """Render headings (shifted by ``heading_offset`` levels), pipe tables and paragraphs; everything escaped.

    Example:
        >>> html = markdown_to_html("# T\\n\\n| a | b |\\n|---|---|\\n| x | 1.5 |\\n")
        >>> html == (
        ...     "<h3>T</h3><table><thead><tr><th>a</th><th>b</th></tr></thead>"
        ...     '<tbody><tr><td>x</td><td class="num">1.5</td></tr></tbody></table>'
        ... )
        True
    """
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + heading_offset)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block) if len(block) >= 2 else f"<p>{_inline(block[0])}</p>")
            continue
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "".join(out)
