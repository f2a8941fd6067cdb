"""The report page every model kind shares: the verdict (with each failed check), what was
fitted, the kind's own tables, the checks table, then titled figures, in one self-contained
report.html beside its PNGs. `summary_text` is the same verdict for the terminal."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tidal.report.checks import Check, verdict

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em}"
         "img{max-width:100%}td,th{padding:2px 10px;text-align:left}"
         "td.n{text-align:right;white-space:nowrap}td.l{white-space:nowrap}"
         "table{border-collapse:collapse;margin:.5em 0}"
         "tr{border-bottom:1px solid #ddd}.pass{color:#1a7f37;font-weight:bold}"
         ".fail{color:#cf222e;font-weight:bold}.caption{color:#555;font-size:90%}"
         ".verdict{padding:.5em 1em;border-radius:4px;font-size:115%}"
         ".verdict.pass{background:#dafbe1}.verdict.fail{background:#ffebe9}"
         ".warning{background:#fff8c5;padding:.4em 1em;border-radius:4px}")


@dataclass(frozen=True)
class Section:
    """A titled group of figures (PNG names in the run) with a caption."""

    title: str
    caption: str
    images: list[str] = field(default_factory=list)


def escape(text: Any) -> str:
    return html.escape(str(text))


def report_page(title: str, checks: Sequence[Check], facts: Sequence[tuple[str, str]], *,
                tables: Sequence[str] = (), sections: Sequence[Section] = (),
                after_checks: Sequence[str] = (), warnings: Sequence[str] = ()) -> str:
    """report.html: `title`, the `warnings` (one line each, tidal.report.warnings), the
    verdict and failed checks, the facts ("What was fitted"),
    `tables` (HTML the model kind adds, e.g. errors per state), the checks, `after_checks`
    (more HTML), the `sections` of figures and a link to metrics.json."""
    failed = [c for c in checks if not c.passed]
    body = [f"<h1>{escape(title)}</h1>",
            *(f"<p class='warning'>{escape(line)}</p>" for line in warnings),
            f"<p class='verdict {'fail' if failed else 'pass'}'>{escape(verdict(list(checks)))}"
            + "".join(f"<br>FAIL: {escape(c.name)} = {escape(c.shown(c.value))} (limit "
                      f"{escape(c.requirement)})" for c in failed) + "</p>",
            "<h2>What was fitted</h2><table>"
            + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
            + "</table>", *tables]
    if checks:
        rows = [f"<tr><td class='{'pass' if c.passed else 'fail'}'>"
                f"{'pass' if c.passed else 'FAIL'}</td><td>{escape(c.name)}</td>"
                f"<td class='n'>{escape(c.shown(c.value))}</td>"
                f"<td class='l'>{escape(c.requirement)}</td>"
                f"<td class='caption'>{escape(c.note)}</td></tr>" for c in checks]
        body.append("<h2>Checks</h2><table><tr><th></th><th>check</th><th>value</th>"
                    f"<th>limit</th><th>how</th></tr>{''.join(rows)}</table>")
    body += after_checks
    for section in sections:
        body.append(f"<h2>{escape(section.title)}</h2>"
                    f"<p class='caption'>{escape(section.caption)}</p>")
        body += [f'<img src="{name}" alt="{escape(section.title)}">'
                 for name in section.images]
    body.append("<p class='caption'>Every number on this page, unrounded: "
                "<a href='metrics.json'>metrics.json</a>.</p>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>")


def summary_text(facts: Sequence[tuple[str, str]], lines: Sequence[str],
                 checks: Sequence[Check]) -> list[str]:
    """The page's verdict for the terminal: the facts, the kind's own `lines`, the verdict and
    each check against its limit."""
    return [f"{label}: {text}" for label, text in facts] + list(lines) + [
        verdict(list(checks))] + [f"  {'pass' if c.passed else 'FAIL'}  {c.name}: "
                                  f"{c.shown(c.value)} (limit {c.requirement})"
                                  for c in checks]
