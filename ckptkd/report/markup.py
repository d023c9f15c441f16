"""HTML building blocks for ``ckptkd report``: escaped tags, tables, embedded figures, the page.

Every string that reaches the page goes through ``esc`` (``html.escape``); figures are PNGs
inlined as data URIs, and the page's Content-Security-Policy forbids fetching anything.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
import time
from typing import Callable, Iterable

from ..version import __version__

CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f4f5f7; color: #1d2330;
       font: 15px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ec; }
h3 { font-size: 15px; margin: 20px 0 6px; }
p.sub { color: #5b6475; margin: 0 0 8px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; }
dl.facts dt { color: #5b6475; } dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #d9dde5; padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #eef1f6; } td.text, th.text { text-align: left; }
tr.mark td { background: #fff4d6; font-weight: 600; }
figure { display: inline-block; margin: 8px 12px 8px 0; vertical-align: top; }
figure img { display: block; max-width: 100%; border: 1px solid #e3e6ec; }
figcaption { color: #5b6475; font-size: 13px; }
.note { background: #eef5ff; border-left: 4px solid #5b8def; padding: 8px 12px; margin: 10px 0; }
.warn { background: #fff4e5; border-left: 4px solid #f0a030; padding: 8px 12px; margin: 10px 0; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid #e3e6ec; padding: 10px; overflow-x: auto; }
.verdict-ok { color: #17803d; font-weight: 600; } .verdict-bad { color: #b42318; font-weight: 600; }
footer { margin-top: 40px; color: #8a93a3; font-size: 12px; }
"""

# nothing may be fetched or run: images only from data: URIs, styles only inline
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ---------------------------------------------------------------- tiny templating


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def tag(name: str, body: str = "", **attrs) -> str:
    """``<name attrs>body</name>``; ``body`` is trusted HTML, attribute values are escaped."""
    attr = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return f"<{name}{attr}>{body}</{name}>"


def para(text: str, cls: str | None = None) -> str:
    return tag("p", esc(text), class_=cls)


def command_note(text: str, command: str, cls: str = "note") -> str:
    return tag("div", f"{esc(text)} {tag('code', esc(command))}", class_=cls)


def facts(items: Iterable[tuple[str, object]]) -> str:
    return tag("dl", "".join(tag("dt", esc(k)) + tag("dd", esc(v)) for k, v in items if v is not None),
               class_="facts")


Column = tuple[str, Callable[[dict], object]]


def table(rows: list[dict], columns: list[Column], caption: str | None = None,
          mark: Callable[[dict], bool] | None = None) -> str:
    """A table; text columns (whose first shown value is not a number) are left-aligned."""
    if not rows:
        return para(f"{caption}: nothing to show." if caption else "nothing to show.", "sub")
    values = [[get(r) for _, get in columns] for r in rows]
    text = []
    for i in range(len(columns)):
        first = next((shown(vals[i]) for vals in values if shown(vals[i]) != "-"), "-")
        text.append(not re.match(r"^[+\-−]?\d", first) and first != "-")
    head = "".join(tag("th", esc(h), class_="text" if t else None) for (h, _), t in zip(columns, text))
    body = []
    for r, vals in zip(rows, values):
        cells = "".join(tag("td", esc(shown(v)), class_="text" if t else None) for v, t in zip(vals, text))
        body.append(tag("tr", cells, class_="mark" if mark and mark(r) else None))
    return tag("table", (tag("caption", esc(caption)) if caption else "") + tag("thead", tag("tr", head))
               + tag("tbody", "".join(body)))


def shown(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fixed(v, digits: int = 3) -> str | None:
    return f"{v:.{digits}f}" if is_number(v) else None


def pct(v) -> str | None:
    return f"{100 * v:.2f}" if is_number(v) else None


def number_or_nan(record: dict, key: str, scale: float = 1.0) -> float:
    v = record.get(key)
    return scale * v if is_number(v) else math.nan


def figure(fig, caption: str) -> str:
    """A matplotlib figure as an embedded PNG (the figure is closed)."""
    from .plots import plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return png(buf.getvalue(), caption)


def png(data: bytes, caption: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return tag("figure", f'<img src="{src}" alt="{esc(caption)}">' + tag("figcaption", esc(caption)))


def section(title: str, *parts: str, id_: str | None = None) -> str:
    return tag("section", tag("h2", esc(title)) + "".join(parts), id=id_)


def page(title: str, subtitle: str, sections: list[str]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header>{tag('h1', esc(title))}{para(subtitle, 'sub')}</header>\n"
        + "\n".join(sections)
        + f"\n<footer>written by ckptkd {esc(__version__)} on {esc(stamp)}; a self-contained file "
          "(no scripts, nothing fetched)</footer>\n</main>\n</body>\n</html>\n"
    )
