"""report.html: one self-contained page (pictures inlined) that opens from disk.

It shows the card's sections plus the evolution plot and the full trial table, whose
columns sort on a click (a few lines of inline JavaScript, no server, no network).
"""

from __future__ import annotations

import base64
import html
import re

from .blocks import Bullets, Code, Picture, Section, Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1240px;
       color: #1b1f24; padding: 0 1em; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .3em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
nav a { margin-right: 1em; white-space: nowrap; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left;
         white-space: nowrap; }
th { background: #f3f5f7; }
table.sortable th { cursor: pointer; }
tr.marked td { background: #fff4c2; font-weight: 600; }
th[data-order=asc]::after { content: " \\25B2"; }
th[data-order=desc]::after { content: " \\25BC"; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 13px; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; }
code { background: #f6f8fa; padding: 0 .2em; }
pre code { padding: 0; }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, col) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const asc = th.dataset.order !== "asc";
    th.parentElement.querySelectorAll("th").forEach(h => delete h.dataset.order);
    th.dataset.order = asc ? "asc" : "desc";
    const key = row => {
      const text = row.cells[col].textContent.trim();
      const num = parseFloat(text);
      return isNaN(num) ? text : num;
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      const c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0)
                                      : (typeof x === "number" ? -1 : 1);
      return asc ? c : -c;
    });
    rows.forEach(row => body.appendChild(row));
  });
});
"""


def render_html(title: str, sections: list[Section]) -> str:
    """The whole page as one string."""
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>'
                   for s in sections[1:] if s.anchor)
    body = [f"<h1>{html.escape(sections[0].title)}</h1>" if sections else "",
            f"<nav>{nav}</nav>"]
    for i, section in enumerate(sections):
        if i:
            body.append(f'<h2 id="{section.anchor}">{html.escape(section.title)}</h2>')
        body += [_block(block) for block in section.blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n")


def inline(text: str) -> str:
    """Escape, then the two inline marks the card uses: `code` and **bold**."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _block(block) -> str:
    if isinstance(block, str):
        return f"<p>{inline(block)}</p>"
    if isinstance(block, Table):
        cls = ' class="sortable"' if block.sortable else ""
        head = "".join(f"<th>{inline(h)}</th>" for h in block.headers)
        rows = "".join(("<tr class=\"marked\">" if i in block.marked else "<tr>")
                       + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>"
                       for i, row in enumerate(block.rows))
        return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
                f"<tbody>{rows}</tbody></table></div>")
    if isinstance(block, Picture):
        data = base64.b64encode(block.source.read_bytes()).decode("ascii")
        caption = html.escape(block.caption)
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>")
    if isinstance(block, Code):
        return f'<pre><code class="language-{block.language}">{html.escape(block.text)}' \
               "</code></pre>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + "</ul>"
    raise TypeError(f"unknown report block {type(block).__name__}")
