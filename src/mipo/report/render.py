"""A report as a list of blocks (headings, paragraphs, tables, figures), written as Markdown and as one HTML page."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "p" | "table" | "figure" | "pre" | "sidebyside"
    text: str = ""
    headers: list[str] | None = None
    rows: list[list[str]] | None = None
    path: Path | None = None


def render_markdown(blocks: list[Block], folder: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}\n")
        elif b.kind == "h2":
            out.append(f"## {b.text}\n")
        elif b.kind == "h3":
            out.append(f"### {b.text}\n")
        elif b.kind == "p":
            out.append(b.text + "\n")
        elif b.kind == "pre":
            out.append("```\n" + b.text.rstrip() + "\n```\n")
        elif b.kind in ("table", "sidebyside"):
            cells = [[c.replace("|", "\\|").replace("\n", "<br>") for c in r] for r in b.rows or []]
            out.append("| " + " | ".join(b.headers or []) + " |")
            out.append("|" + "---|" * len(b.headers or []))
            out.extend("| " + " | ".join(r) + " |" for r in cells)
            out.append("")
        elif b.kind == "figure" and b.path:
            out.append(f"![{b.text}]({b.path.relative_to(folder)})\n\n*{b.text}*\n")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.5}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.35em .7em;
text-align:left;vertical-align:top}th{background:#f5f5f7}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:.9em}
pre{background:#f5f5f7;padding:.8em;overflow-x:auto;font-size:.85em}
table.side td{width:33%;white-space:pre-wrap;font-size:.88em}
"""


def render_html(blocks: list[Block], title: str) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "pre":
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        elif b.kind in ("table", "sidebyside"):
            cls = " class='side'" if b.kind == "sidebyside" else ""
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers or [])
            body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in b.rows or [])
            out.append(f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "figure" and b.path:
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(
                f"<figure><img alt='{html.escape(b.text)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def _cell(text: str) -> str:
    stripped = text.replace(",", "").replace("−", "-").replace("+", "").strip()
    numeric = bool(stripped) and stripped.replace(".", "", 1).replace("-", "", 1).isdigit()
    return f"<td class='num'>{html.escape(text)}</td>" if numeric else f"<td>{_inline(text)}</td>"


def _inline(text: str) -> str:
    """`code` spans and **bold**, the two Markdown marks the report's prose uses."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)
