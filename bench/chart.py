#!/usr/bin/env python3
"""Draws the figures of the latest `make bench` run as one SVG chart.

Usage: bench/chart.py [TSV] [-o SVG]      (defaults: bench/latest.tsv, bench/latest.svg)
       bench/chart.py --selftest          (checks the generator on sample figures)

The TSV is what bench/run.sh records: lines starting with `#` are the run's
header (printed as the chart's subtitle), then a `scenario` header row, then
one row per wrk run: scenario, req/s, p50 ms, p99 ms, connections. Rows
whose name starts with "bare" are the bare poem route (the ceiling every
other scenario is drawn against); rows ending in ` #N` are rounds of one
scenario and are drawn as their median (a scenario whose rounds alternate
with the bare route's gets the median of its per-round ratios, as run.sh
prints it).

Left panel: req/s on a linear scale, the bare route as a dashed line,
gridlines at 25 % steps of it. Right panel: p99 latency on a log scale.
Python 3 standard library only; the SVG is self-contained (no script, no
external font or image) and drawn on a white background.
"""

import argparse
import math
import os
import re
import statistics
import sys
from xml.sax.saxutils import escape, quoteattr

FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif"
INK = "#1f2328"
MUTED = "#59636e"
GRID = "#d1d9e0"
BARE = "#59636e"
RPS = "#0969da"
P99 = "#bc4c00"

WIDTH = 1000
MARGIN = 20
LABEL_RIGHT = 330          # scenario names end here (right-aligned)
RPS_LEFT, RPS_WIDTH = 340, 390
P99_LEFT, P99_WIDTH = 790, 180
ROW, BAR = 26, 16


def parse(text):
    """Header lines and rows [(name, rps, p50, p99, connections)] of a TSV."""
    header, rows = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            header.append(line.lstrip("#").strip())
            continue
        fields = line.split("\t")
        if fields[0] == "scenario":
            continue
        name, rps, p50, p99 = fields[0], float(fields[1]), float(fields[2]), float(fields[3])
        conns = int(fields[4]) if len(fields) > 4 and fields[4] else None
        rows.append((name, rps, p50, p99, conns))
    return header, rows


def summarize(rows):
    """(bare, scenarios): bare is a dict or None; scenarios a list of dicts
    {name, rps, p99, ratio, rounds}, in first-seen order."""
    groups = {}
    for i, (name, rps, _p50, p99, _conns) in enumerate(rows):
        m = re.fullmatch(r"(.*?) #(\d+)", name)
        # Only rounds (` #N`) are merged; two runs that merely share a name
        # (run.sh's and attack.py's "8 clients, alone") stay two rows.
        base, rnd, key = (m.group(1), int(m.group(2)), m.group(1)) if m else (name, None, i)
        groups.setdefault(key, (base, []))[1].append((rnd, rps, p99))
    bare = None
    scenarios = []
    for base, runs in groups.values():
        entry = {
            "name": base,
            "rps": statistics.median(r for _, r, _ in runs),
            "p99": statistics.median(p for _, _, p in runs),
            "rounds": len(runs),
            "by_round": {n: r for n, r, _ in runs if n is not None},
        }
        if base.startswith("bare") and bare is None:
            bare = entry
        else:
            scenarios.append(entry)
    for s in scenarios:
        s["ratio"] = None
        if bare:
            paired = [s["by_round"][n] / bare["by_round"][n]
                      for n in s["by_round"] if n in bare["by_round"] and bare["by_round"][n] > 0]
            if paired:
                s["ratio"] = statistics.median(paired)
            elif bare["rps"] > 0:
                s["ratio"] = s["rps"] / bare["rps"]
    return bare, scenarios


def fmt_rps(v):
    return f"{v:,.0f}".replace(",", "\u2009")  # thin space as thousands separator


def fmt_ms(v):
    return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def fmt_tick_ms(v):
    return f"{v / 1000:g} s" if v >= 1000 else f"{v:g} ms"


def fmt_ratio(r):
    """40%, 2%, 0.03%: two significant digits below 1 %."""
    return f"{r:.0%}" if r >= 0.01 else f"{r * 100:.2g}%"


def render(header, rows):
    bare, scenarios = summarize(rows)
    entries = ([bare] if bare else []) + scenarios
    out = []

    def text(x, y, s, size=12, anchor="start", fill=INK, weight=None, cls=None):
        attrs = f'x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}"'
        if anchor != "start":
            attrs += f' text-anchor="{anchor}"'
        if weight:
            attrs += f' font-weight="{weight}"'
        if cls:
            attrs += f' class="{cls}"'
        out.append(f"<text {attrs}>{escape(s)}</text>")

    title_y = 30
    sub_y = title_y + 20
    panel_head_y = sub_y + 18 * max(1, len(header)) + 12
    top = panel_head_y + 14
    height = top + ROW * max(1, len(entries)) + 24 + 52

    # Scales: req/s linear from 0; p99 log over whole decades.
    rps_max = max([e["rps"] for e in entries] + [1.0])
    rps_x = lambda v: RPS_LEFT + RPS_WIDTH * v / rps_max  # noqa: E731
    p99s = [e["p99"] for e in entries if e["p99"] > 0] or [1.0]
    lo = 10 ** math.floor(math.log10(min(p99s)))
    hi = 10 ** math.ceil(math.log10(max(p99s)))
    if hi <= lo:
        hi = lo * 10

    def p99_x(v):
        v = min(max(v, lo), hi)
        return P99_LEFT + P99_WIDTH * math.log10(v / lo) / math.log10(hi / lo)

    text(MARGIN, title_y, "notesd bench: throughput against the bare poem route, and p99 latency",
         size=17, weight="600")
    for i, line in enumerate(header or ["(no run header)"]):
        line = re.sub(r"^notesd bench:\s*", "", line)
        text(MARGIN, sub_y + 18 * i, line, size=12, fill=MUTED)
    text(RPS_LEFT, panel_head_y, "requests per second (linear; dashed: bare poem route)", size=12, weight="600")
    text(P99_LEFT, panel_head_y, "p99 latency (log scale)", size=12, weight="600")

    bottom = top + ROW * len(entries)
    # Gridlines: 25 % steps of the bare route (or of the largest figure).
    ref = bare["rps"] if bare else rps_max
    step = 0.25
    k = 0
    while ref > 0 and ref * step * k <= rps_max * 1.0001:
        x = rps_x(ref * step * k)
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom + 2}" stroke="{GRID}" stroke-width="1"/>')
        label = f"{int(step * k * 100)}%" if bare else fmt_rps(ref * step * k)
        text(x, bottom + 16, label, size=10, anchor="middle", fill=MUTED)
        k += 1
    decade = lo
    while decade <= hi * 1.0001:
        x = p99_x(decade)
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom + 2}" stroke="{GRID}" stroke-width="1"/>')
        text(x, bottom + 16, fmt_tick_ms(decade), size=10,
             anchor="middle", fill=MUTED)
        decade *= 10

    for i, e in enumerate(entries):
        y = top + ROW * i
        is_bare = e is bare
        name = e["name"] + (f" (median of {e['rounds']})" if e["rounds"] > 1 else "")
        text(LABEL_RIGHT, y + BAR - 3, name, anchor="end", weight="600" if is_bare else None, cls="scenario")
        # Throughput bar and its label (inside the bar when it is long).
        w = max(rps_x(e["rps"]) - RPS_LEFT, 1.0)
        out.append(f'<rect class="rps" x="{RPS_LEFT}" y="{y}" width="{w:.1f}" height="{BAR}" '
                   f'fill="{BARE if is_bare else RPS}"><title>{escape(name)}: {fmt_rps(e["rps"])} req/s</title></rect>')
        label = f"{fmt_rps(e['rps'])} req/s"
        if is_bare:
            label += " (the ceiling)"
        elif e["ratio"] is not None:
            label += f" \u00b7 {fmt_ratio(e['ratio'])} of bare"
        if w > RPS_WIDTH * 0.55:
            text(RPS_LEFT + w - 5, y + BAR - 4, label, size=11, anchor="end", fill="#ffffff", cls="rps-label")
        else:
            text(RPS_LEFT + w + 5, y + BAR - 4, label, size=11, cls="rps-label")
        # p99 bar and label.
        pw = max(p99_x(e["p99"]) - P99_LEFT, 1.0)
        out.append(f'<rect class="p99" x="{P99_LEFT}" y="{y}" width="{pw:.1f}" height="{BAR}" '
                   f'fill="{BARE if is_bare else P99}"><title>{escape(name)}: p99 {fmt_ms(e["p99"])}</title></rect>')
        if pw > P99_WIDTH * 0.6:
            text(P99_LEFT + pw - 5, y + BAR - 4, fmt_ms(e["p99"]), size=11, anchor="end", fill="#ffffff",
                 cls="p99-label")
        else:
            text(P99_LEFT + pw + 5, y + BAR - 4, fmt_ms(e["p99"]), size=11, cls="p99-label")

    if bare:
        x = rps_x(bare["rps"])
        out.append(f'<line class="bare" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom + 2}" '
                   f'stroke="{INK}" stroke-width="1.5" stroke-dasharray="4 3"/>')
    if not entries:
        text(RPS_LEFT, top + BAR, "no figures in this run", fill=MUTED)

    notes = []
    if bare:
        notes.append(f"Bare poem route: a hello-world route on the same poem and tokio, "
                     f"{fmt_rps(bare['rps'])} req/s"
                     + (f" (median of {bare['rounds']} rounds)" if bare["rounds"] > 1 else "")
                     + "; \u201cof bare\u201d is each scenario\u2019s req/s over it.")
    else:
        notes.append("The bare poem route was not measured in this run (BENCH_ONLY): no ceiling line.")
    notes.append("Rounds alternate with the bare route and show the median of per-round ratios. "
                 "Same machine, one wrk client on loopback; compare ratios, not req/s, across runs.")
    for i, note in enumerate(notes):
        text(MARGIN, bottom + 38 + 16 * i, note, size=11, fill=MUTED)

    body = "\n".join(out)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family={quoteattr(FONT)}>\n'
            f"<title>notesd bench: req/s against the bare poem route, p99 latency</title>\n"
            f'<rect class="background" x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>\n'
            f"{body}\n</svg>\n")


SAMPLE = """\
# notesd bench: 2026-12-01T16:37Z, 2 cores, Intel(R) Xeon(R) Processor
# wrk -c32 -d10s, server on cpu 0, wrk on cpu 1
scenario\treq_per_s\tp50_ms\tp99_ms\tconnections
bare poem route (ceiling) #1\t164936\t0.19\t0.36\t32
GET /notes/{id} (authenticated) #1\t66788\t0.45\t0.95\t32
bare poem route (ceiling) #2\t158969\t0.19\t0.39\t32
GET /notes/{id} (authenticated) #2\t65824\t0.47\t0.89\t32
bare poem route (ceiling) #3\t163853\t0.19\t0.34\t32
GET /notes/{id} (authenticated) #3\t66025\t0.46\t0.96\t32
GET /notes first page, 1k notes\t20632\t1.59\t2.07\t32
POST /notes (create, fsync)\t2489\t12.34\t18.96\t32
POST /auth/login (argon2id)\t57\t554.89\t565.57\t32
GET /notes/{id}, 8 clients, login flood\t52576\t0.14\t0.56\t8
odd <name> & "quotes"\t10\t1\t2500\t32
GET /notes/{id}, 8 clients, login flood\t40000\t0.14\t0.56\t8
"""


def selftest():
    import xml.dom.minidom

    header, rows = parse(SAMPLE)
    assert header[0].startswith("notesd bench: 2026-12-01T16:37Z"), header
    bare, scenarios = summarize(rows)
    assert bare["rps"] == 163853 and bare["rounds"] == 3, bare
    get = scenarios[0]
    assert get["name"] == "GET /notes/{id} (authenticated)" and get["rps"] == 66025, get
    # run.sh prints the median of per-round ratios: 40 % (40 %, 41 %, 40 %).
    assert f"{get['ratio']:.0%}" == "40%", get["ratio"]

    svg = render(header, rows)
    doc = xml.dom.minidom.parseString(svg)
    root = doc.documentElement
    assert root.tagName == "svg"
    assert not doc.getElementsByTagName("script") and "href" not in svg and "@import" not in svg
    rects = root.getElementsByTagName("rect")
    bg = rects[0]
    assert bg.getAttribute("fill") == "#ffffff" and bg.getAttribute("width") == root.getAttribute("width")
    rps_bars = [r for r in rects if r.getAttribute("class") == "rps"]
    p99_bars = [r for r in rects if r.getAttribute("class") == "p99"]
    assert len(rps_bars) == len(p99_bars) == 1 + len(scenarios) == 8, (len(rps_bars), len(p99_bars))
    # Bars are proportional to req/s: the bare bar is the widest.
    widths = [float(r.getAttribute("width")) for r in rps_bars]
    assert widths[0] == max(widths) and abs(widths[1] / widths[0] - 66025 / 163853) < 0.01, widths
    texts = [t.firstChild.data for t in root.getElementsByTagName("text") if t.firstChild]
    names = [t.firstChild.data for t in root.getElementsByTagName("text") if t.getAttribute("class") == "scenario"]
    assert names[0] == "bare poem route (ceiling) (median of 3)", names
    assert "GET /notes/{id} (authenticated) (median of 3)" in names
    assert 'odd <name> & "quotes"' in names  # escaped in the file, intact once parsed
    assert any(t.startswith("66\u2009025 req/s \u00b7 40% of bare") for t in texts), texts
    assert any(t.startswith("57 req/s \u00b7 0.035% of bare") for t in texts), texts
    for want in ("0.36 ms", "0.95 ms", "566 ms", "2500 ms", "19.0 ms", "0.1 ms", "1 s"):
        assert want in texts, (want, texts)
    assert len(root.getElementsByTagName("line")) > 0 and any(
        l.getAttribute("class") == "bare" for l in root.getElementsByTagName("line"))
    assert any("wrk -c32 -d10s" in t for t in texts)

    # A partial run (BENCH_ONLY) without the bare route still draws.
    partial = render(["notesd bench: partial"], [r for r in rows if not r[0].startswith("bare")])
    pdoc = xml.dom.minidom.parseString(partial)
    assert not any(l.getAttribute("class") == "bare" for l in pdoc.getElementsByTagName("line"))
    assert "not measured in this run" in partial
    # An empty run too.
    xml.dom.minidom.parseString(render([], []))
    print("chart.py selftest: ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("tsv", nargs="?", default=os.path.join(here, "latest.tsv"))
    p.add_argument("-o", "--output", default=os.path.join(here, "latest.svg"))
    p.add_argument("--selftest", action="store_true", help="check the generator on sample figures")
    args = p.parse_args()
    if args.selftest:
        selftest()
        return
    with open(args.tsv, encoding="utf-8") as f:
        header, rows = parse(f.read())
    svg = render(header, rows)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(svg)
    os.replace(tmp, args.output)


if __name__ == "__main__":
    sys.exit(main())
