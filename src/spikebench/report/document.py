"""A tiny document model rendered to Markdown and to one self-contained HTML file (images inlined)."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    alt: str


Block = Heading | Para | Table | Image


def to_markdown(blocks: list[Block], base: Path) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out.extend("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows)
            out.append("")
        else:
            out.append(f"![{b.alt}]({os.path.relpath(b.path, base)})\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render the Markdown the report uses: `code` and **bold** (none inside code)."""
    out = []
    for i, chunk in enumerate(html.escape(text).split("`")):
        if i % 2:
            out.append(f"<code>{chunk}</code>")
        else:
            parts = chunk.split("**")
            out.append("".join(f"<b>{p}</b>" if j % 2 else p for j, p in enumerate(parts)))
    return "".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3}"""


def to_html(blocks: list[Block], title: str) -> str:
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.header) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append("</table>")
        else:
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(f"<img alt='{html.escape(b.alt)}' src='data:image/png;base64,{data}'>")
    out.append("</body></html>")
    return "\n".join(out)
