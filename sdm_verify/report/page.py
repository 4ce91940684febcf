"""The report page: titled Markdown sections with figures, written as index.md and index.html.

`Report.add_section(title, markdown, figures)` appends a section; `Report.write(out_dir)` writes index.md
(GitHub-readable) and index.html (self-contained but for the PNGs, referenced by relative path). The HTML is rendered
from the same Markdown by `markdown_to_html`, a converter for the subset the report writes, so the two never
disagree. One extension of that subset carries a verdict: `<span class="agree|deviates|no-window" title="...">x</span>`
(GitHub shows the text and the title on hover); as the whole of a table cell it colours the cell (`td` class and
title), elsewhere it is kept as a coloured span (the legend).
"""

from __future__ import annotations

import html
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OutputPathError
from .tables import slug

#: the files Report.write writes into its folder (figures beside them)
PAGES = ("index.md", "index.html")


def check_output_dir(out, name: str = "out_dir") -> Path:
    """`out` as a Path, if a report can be written there: a writable folder, or a path whose nearest existing
    ancestor is a writable folder; index.md and index.html in it, where they exist, writable files. Creates nothing.
    Raises OutputPathError naming `name` (e.g. "--out"), so a run is refused before its work, not after."""
    if not isinstance(out, (str, os.PathLike)) or isinstance(out, bytes) or not os.fspath(out).strip():
        raise OutputPathError(f"{name}: must be a non-empty folder path (got {out!r})")
    p = Path(out)
    if "\x00" in str(p):
        raise OutputPathError(f"{name}: must not contain a NUL character (got {str(p)!r})")
    try:
        if p.exists():
            if not p.is_dir():
                raise OutputPathError(f"{name}: {p} is a file, not a folder: give a folder for the report")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputPathError(f"{name}: the folder {p} is not writable: make it writable, or give another")
            for page in PAGES:
                f = p / page
                if f.is_dir() or (f.exists() and not os.access(f, os.W_OK)):
                    raise OutputPathError(f"{name}: {f} cannot be written ({'a folder' if f.is_dir() else 'read-only'})"
                                          ": remove it, or give another folder")
            return p
        folder = p.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    except OSError as exc:
        raise OutputPathError(f"{name}: cannot access {p} ({exc.strerror or exc})") from None
    if not folder.is_dir():
        raise OutputPathError(f"{name}: {p} cannot be created: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{name}: {p} cannot be created: the folder {folder} is not writable")
    return p

#: the verdict classes a marked span may carry (harness.results.VERDICTS, "no window" as a CSS class)
VERDICT_CLASSES = ("agree", "deviates", "no-window")
_VERDICT_SPAN = re.compile(r'<span class="(agree|deviates|no-window)"(?: title="([^"]*)")?>(.*?)</span>')


def verdict_span(verdict: str, text: str, title: str = "") -> str:
    """The marked span of `text` for a verdict ("agree", "deviates" or "no window"), with `title` shown on hover."""
    cls = verdict.replace(" ", "-")
    if cls not in VERDICT_CLASSES:
        raise ValueError(f"verdict: expected one of agree, deviates, no window (got {verdict!r})")
    attr = f' title="{html.escape(title, quote=True)}"' if title else ""
    return f'<span class="{cls}"{attr}>{text}</span>'


@dataclass
class Section:
    """One titled part of a report: its Markdown and its figures, each (path or matplotlib Figure, caption)."""

    title: str
    markdown: str
    figures: list = field(default_factory=list)


class Report:
    """A report of titled Markdown sections with figures, written as index.md and index.html."""

    def __init__(self, title: str, intro: str = ""):
        self.title, self.intro = title, intro
        self.sections: list[Section] = []

    def add_section(self, title: str, markdown: str, figures=()) -> Section:
        """Append a section. figures: paths to image files (copied beside the pages unless already there) or
        matplotlib Figures (saved as PNG), each optionally as (figure, caption)."""
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"title: must be a non-empty string (got {title!r})")
        figs = [f if isinstance(f, tuple) else (f, "") for f in figures]
        section = Section(title, markdown, figs)
        self.sections.append(section)
        return section

    def _figure_files(self, out: Path) -> list[list[tuple[str, str]]]:
        placed = []
        for k, s in enumerate(self.sections):
            names = []
            for j, (fig, caption) in enumerate(s.figures):
                if hasattr(fig, "savefig"):
                    name = f"{slug(s.title)[:40] or 'section'}-{k}-{j}.png"
                    fig.savefig(out / name, dpi=100)
                else:
                    src = Path(fig)
                    if not src.is_file():
                        raise ValueError(f"figures: no such file {src}")
                    dest = out / src.name
                    if src.resolve() != dest.resolve():
                        shutil.copyfile(src, dest)
                    name = src.name
                names.append((name, caption))
            placed.append(names)
        return placed

    def markdown(self, placed=None) -> str:
        parts = [f"# {self.title}", ""]
        if self.intro:
            parts += [self.intro, ""]
        parts += ["Contents: " + " · ".join(f"[{s.title}](#{slug(s.title)})" for s in self.sections), ""]
        for k, s in enumerate(self.sections):
            parts += [f"## {s.title}", "", s.markdown.strip(), ""]
            for name, caption in (placed[k] if placed else []):
                parts += [f"![{caption or name}]({name})", ""]
        return "\n".join(parts).rstrip() + "\n"

    def write(self, out_dir) -> tuple[Path, Path]:
        """Write out_dir/index.md and out_dir/index.html (figures beside them); returns both paths."""
        out = check_output_dir(out_dir, "out_dir")
        out.mkdir(parents=True, exist_ok=True)
        md = self.markdown(self._figure_files(out))
        (out / "index.md").write_text(md, encoding="utf-8")
        (out / "index.html").write_text(markdown_to_html(md, title=self.title), encoding="utf-8")
        return out / "index.md", out / "index.html"


# ------------------------------------------------------------------------------------------- Markdown -> HTML

_VERDICT_CSS = ("agree", "#cdeccd"), ("deviates", "#f6c4c4"), ("no-window", "#e3e3e3")
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;
padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
details table{font-size:.78em}details{margin:.4em 0}summary{cursor:pointer}code{background:#f4f4f4;padding:0 .2em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}figure{margin:1.5em 0}img{max-width:100%}
figcaption{font-size:.9em;color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table.matrix{font-size:.85em}table.matrix th{font-size:.9em;vertical-align:bottom}
table.matrix td{text-align:right;white-space:nowrap;padding:.15em .5em}table.matrix td:first-child{text-align:left}
table.matrix td[title]{cursor:help}
span.agree,span.deviates,span.no-window{padding:0 .4em;border-radius:.2em}.no-window{color:#555}
""" + "".join(f"span.{c},table.matrix td.{c}{{background:{bg}}}" for c, bg in _VERDICT_CSS)


def _inline(text: str) -> str:
    """Inline Markdown: `code`, **bold**, *italic*, [text](url), <br>, verdict spans; everything else escaped."""
    kept: list[str] = []

    def keep(fragment: str) -> str:
        kept.append(fragment)
        return f"\x00{len(kept) - 1}\x00"

    t = _VERDICT_SPAN.sub(lambda m: keep(f'<span class="{m.group(1)}"{_title(m.group(2))}>{_inline(m.group(3))}'
                                         "</span>"), text)
    t = re.sub(r"`([^`]+)`", lambda m: keep(f"<code>{html.escape(m.group(1))}</code>"), t)
    t = html.escape(t, quote=False).replace("&lt;br&gt;", "<br>")
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', t)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], t)


def _title(title: str | None) -> str:
    """A title attribute from a span's (HTML-escaped) title; none for an empty one."""
    return f' title="{html.escape(html.unescape(title), quote=True)}"' if title else ""


def _td(text: str) -> tuple[str, bool]:
    """A table cell; a cell that is one verdict span becomes a coloured cell with the span's title. (html, marked)"""
    m = _VERDICT_SPAN.fullmatch(text)
    if m is None:
        return f"<td>{_inline(text)}</td>", False
    return f'<td class="{m.group(1)}"{_title(m.group(2))}>{_inline(m.group(3))}</td>', True


def _split_row(line: str) -> list[str]:
    """Cells of a pipe-table row; escaped pipes (\\|) stay in their cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    if cells and not cells[0].strip():
        cells = cells[1:]
    if cells and not cells[-1].strip():
        cells = cells[:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def _table_html(rows: list[list[str]]) -> str:
    """A pipe table's HTML; a table with a verdict cell is a `matrix` (compact, coloured cells)."""
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    cells = [[_td(c) for c in r] for r in rows[2:]]
    marked = any(m for r in cells for _, m in r)
    trs = ["<tr>" + "".join(td for td, _ in r) + "</tr>" for r in cells]
    cls = ' class="matrix"' if marked else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def markdown_to_html(md: str, title: str = "report") -> str:
    """HTML for the Markdown subset the report writes: headings, paragraphs, bullet lists, pipe tables,
    fenced code, images on their own line and raw HTML lines (<details>, <summary>)."""
    body, lines, i = [], md.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
        elif s.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            body.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", s):
            level, text = len(m.group(1)), m.group(2)
            body.append(f'<h{level} id="{slug(text)}">{_inline(text)}</h{level}>')
            i += 1
        elif s.startswith("<") and not _VERDICT_SPAN.match(s):
            body.append(s)
            i += 1
        elif m := re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", s):
            alt, src = html.escape(m.group(1)), html.escape(m.group(2))
            body.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption></figure>')
            i += 1
        elif s.startswith("|"):
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            body.append(_table_html([_split_row(x) for x in lines[i:j]]))
            i = j
        elif re.match(r"[-*]\s", s):
            items = []
            while i < len(lines) and lines[i].strip():
                t = lines[i].strip()
                if re.match(r"[-*]\s", t):
                    items.append(t[2:])
                elif items:
                    items[-1] += " " + t
                i += 1
            body.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        else:
            para, i = [s], i + 1
            while i < len(lines) and lines[i].strip() and not re.match(r"(#|\||```|<|[-*]\s|!\[)", lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            body.append(f"<p>{_inline(' '.join(para))}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
