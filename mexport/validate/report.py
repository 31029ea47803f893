"""Validation reports: JSON (versioned), Markdown (also for $GITHUB_STEP_SUMMARY), JUnit XML
(one test case per artifact x gate) and one self-contained HTML file with thumbnails."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from .validate import ValidationReport


def _f(v, nd=1) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _per_photo(g) -> bool:
    return g.gate.startswith(("min-photo-", "max-photo-"))


def _photo_value(g, photo: str) -> str:
    v = (g.per_photo or {}).get(photo)
    if v is None:
        return photo
    return f"{photo} ({_f(v, 1)} dB)" if "psnr" in g.gate else f"{photo} ({v * 100:+.0f} %)"


def failed_lines(r: ValidationReport, markdown: bool = True) -> list[str]:
    """One line per failed gate, naming its photos worst first: what the terminal, validate.md and
    the HTML report (``markdown=False``) say."""
    b, c = ("**", "`") if markdown else ("", "")
    out = []
    for a in r.artifacts:
        for g in a.gates:
            if g.passed:
                continue
            line = f"{b}{a.label}{b}: {c}{g.gate}{c} = {_f(g.value, 3)}, threshold {_f(g.threshold, 3)}: {g.detail}"
            if g.photos:
                line += f"; failing photos: {', '.join(_photo_value(g, p) for p in g.photos)}"
            out.append(line)
    return out


def to_markdown(r: ValidationReport) -> str:
    lines = [f"## mexport validate: {'PASS' if r.passed else 'FAIL'}", "",
             f"Photos: {len(r.photos)} ({r.data}). Fidelity vs the float PyTorch pipeline; accuracy vs ground truth where given.", ""]
    failed = failed_lines(r)
    if failed:  # what to look at first
        lines += ["Failed gates:", ""] + [f"- {x}" for x in failed] + [""]
    lines += ["| artifact | target | precision | size | alpha PSNR p10 / median / p90 (N) | worst photo | max abs | SAD (float) | "
              "Grad (float) | gates |", "|---|---|---|---|---|---|---|---|---|---|"]
    for a in r.artifacts:
        s = a.summary
        sad = f"{_f(s['sad_mean'], 2)} ({_f(s['sad_float_mean'], 2)})" if "sad_mean" in s else "—"
        grad = f"{_f(s['grad_mean'], 2)} ({_f(s['grad_float_mean'], 2)})" if "grad_mean" in s else "—"
        gates = ", ".join(f"{'✅' if g.passed else '❌'} {g.gate}" for g in a.gates)
        spread = f"{_f(s.get('p10_psnr'))} / {_f(s['median_psnr'])} / {_f(s.get('p90_psnr'))} ({s['photos']})"
        lines.append(f"| {a.label} | {a.target} | {a.precision} | {a.size_bytes / 1e6:.2f} MB | {spread} dB | "
                     f"{s.get('worst_photo', '—')} {_f(s['min_psnr'])} dB | {_f(s['max_abs'], 4)} | {sad} | {grad} | {gates} |")
    notes = sorted({a.summary["warning"] for a in r.artifacts if a.summary.get("warning")})
    lines += [""] + [f"- ⚠️ {n}" for n in notes] if notes else []
    based = [a for a in r.artifacts if a.baseline]
    if based:
        lines += [""] + [f"- {a.label} compared with baseline `{a.baseline['key']}` on {len(a.baseline['matched_photos'])} of its "
                         f"{a.baseline['baseline_photos']} photos" for a in based]
    ran = [a for a in r.artifacts if a.runtime]
    if ran:
        lines += [""] + [f"- {a.label} ran on {a.runtime['name']} {a.runtime['version']}"
                         + (f" ({a.runtime['python']})" if a.runtime.get("python") else "") for a in ran]
    lat = [a for a in r.artifacts if a.latency]
    if lat:
        lines += ["", "| artifact | threads | p50 ms | p90 ms | p99 ms | first run ms | load ms | baseline artifact p50 ms | how |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for a in lat:
            L = a.latency
            ref = L.get("reference") or {}
            lines.append(f"| {a.label} | {L.get('threads')} | {_f(L.get('p50_ms'))} | {_f(L.get('p90_ms'))} | {_f(L.get('p99_ms'))} | "
                         f"{_f(L.get('first_ms'))} | {_f(L.get('load_ms'))} | {_f(ref.get('p50_ms'))} | {L.get('method', '')} |")
    return "\n".join(lines) + "\n"


def to_junit(r: ValidationReport) -> str:
    """One test case per artifact and gate; a per-photo gate is one test case per photo
    (``classname`` = artifact.gate, ``name`` = photo), so a CI system lists the photo that failed."""
    suite = ET.Element("testsuite", name="mexport-validate")
    n = failures = 0
    for a in r.artifacts:
        for g in a.gates:
            if _per_photo(g) and g.per_photo:
                for photo, v in g.per_photo.items():
                    n += 1
                    case = ET.SubElement(suite, "testcase", classname=f"{a.label}.{g.gate}", name=photo)
                    if photo in g.photos:
                        failures += 1
                        ET.SubElement(case, "failure", message=f"{g.gate} on {photo}: {_f(v, 3)} vs threshold {_f(g.threshold, 3)}").text = g.detail
                continue
            n += 1
            case = ET.SubElement(suite, "testcase", classname=a.label, name=g.gate)
            if not g.passed:
                failures += 1
                msg = f"{g.gate}: {_f(g.value, 3)} vs threshold {_f(g.threshold, 3)}"
                if g.photos:
                    msg += f"; photos: {', '.join(g.photos)}"
                ET.SubElement(case, "failure", message=msg).text = g.detail
    suite.set("tests", str(n))
    suite.set("failures", str(failures))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _jpeg(arr: np.ndarray, size: int = 192) -> str:
    """A thumbnail as a JPEG data URI: 18 photos x 5 pictures x 2 artifacts as PNGs weighed 9 MB."""
    from PIL import Image

    im = Image.fromarray(arr)
    im.thumbnail((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=75, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _gray(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a * 255), 0, 255).astype(np.uint8)


def _heat(err: np.ndarray) -> np.ndarray:
    """|error| as a black -> red -> yellow heatmap, saturating at 0.1 (10 % of alpha's range)."""
    e = np.clip(err / 0.1, 0, 1)
    return np.stack([np.clip(e * 2, 0, 1), np.clip(e * 2 - 1, 0, 1), np.zeros_like(e)], -1).__mul__(255).astype(np.uint8)


def _checker(photo: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    h, w = alpha.shape
    yy, xx = np.mgrid[:h, :w]
    board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 200, 255).astype(np.float32)
    a = alpha[..., None]
    return np.clip(photo.astype(np.float32) * a + board * (1 - a), 0, 255).astype(np.uint8)


# The charts are inline SVG written here: a few rectangles and lines in the self-contained page,
# where a plotting library would add a large dependency to every install for two charts.
def _svg_bars(rows: list[tuple[str, float, bool]], threshold: float, width: int = 640) -> str:
    """Per-photo alpha PSNR, worst first; failing photos red; the per-photo gate as a dashed line."""
    h_bar, top, left = 14, 8, 110
    vals = [v for _, v, _ in rows if math.isfinite(v)]
    vmax = max([threshold, *vals, 1.0]) * 1.05
    x = lambda v: left + (width - left - 50) * max(0.0, min(v, vmax)) / vmax  # noqa: E731
    height = top * 2 + h_bar * len(rows) + 14
    out = [f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11'>"]
    for i, (name, v, bad) in enumerate(rows):
        y = top + i * h_bar
        w = x(v if math.isfinite(v) else vmax) - left
        out.append(f"<text x='{left - 4}' y='{y + 10}' text-anchor='end'>{html.escape(name)}</text>"
                   f"<rect x='{left}' y='{y + 1}' width='{w:.1f}' height='{h_bar - 3}' fill='{'#c00' if bad else '#4a7'}'/>"
                   f"<text x='{left + w + 3:.1f}' y='{y + 10}'>{_f(v)}</text>")
    tx = x(threshold)
    out.append(f"<line x1='{tx:.1f}' x2='{tx:.1f}' y1='{top}' y2='{height - 14}' stroke='#000' stroke-dasharray='4 3'/>"
               f"<text x='{tx:.1f}' y='{height - 2}' text-anchor='middle'>gate {_f(threshold)} dB</text></svg>")
    return "".join(out)


def _svg_scatter(points: list[tuple[str, float, float, bool]], width: int = 480, height: int = 260) -> str:
    """Median alpha PSNR vs p50 latency, one point per artifact (with --bench)."""
    left, bottom, pad = 50, 30, 12
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    x0, x1 = 0.0, max(xs) * 1.15
    y0, y1 = min(ys) - 3, max(ys) + 3
    X = lambda v: left + (width - left - pad) * (v - x0) / (x1 - x0 or 1)  # noqa: E731
    Y = lambda v: height - bottom - (height - bottom - pad) * (v - y0) / (y1 - y0 or 1)  # noqa: E731
    out = [f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11'>",
           f"<line x1='{left}' y1='{height - bottom}' x2='{width - pad}' y2='{height - bottom}' stroke='#000'/>",
           f"<line x1='{left}' y1='{pad}' x2='{left}' y2='{height - bottom}' stroke='#000'/>",
           f"<text x='{(width + left) / 2}' y='{height - 6}' text-anchor='middle'>p50 latency, ms (0 to {_f(x1)})</text>",
           f"<text x='12' y='{(height - bottom) / 2}' transform='rotate(-90 12 {(height - bottom) / 2})' text-anchor='middle'>"
           f"median alpha PSNR, dB ({_f(y0)} to {_f(y1)})</text>"]
    for label, ms, db, bad in points:
        out.append(f"<circle cx='{X(ms):.1f}' cy='{Y(db):.1f}' r='4' fill='{'#c00' if bad else '#4a7'}'/>"
                   f"<text x='{X(ms) + 6:.1f}' y='{Y(db) + 4:.1f}'>{html.escape(label)}</text>")
    out.append("</svg>")
    return "".join(out)


def photo_order(a) -> list[dict]:
    """Failing photos first (in the order the gates named them), then the rest worst PSNR first."""
    failing = a.failing_photos
    rank = {p: i for i, p in enumerate(failing)}
    return sorted(a.photos, key=lambda p: (0, rank[p["photo"]]) if p["photo"] in rank else (1, p["psnr"]))


def to_html(r: ValidationReport, alphas: dict, samples) -> str:
    photos = {s.name: s.photo for s in samples}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mexport validate</title><style>"
             "body{font-family:sans-serif;margin:20px}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}.pass{color:#080}.fail{color:#c00;font-weight:bold}"
             "tr.failing td,div.photo.failing{background:#fdd}"
             "img{display:block;max-width:192px}figure{display:inline-block;margin:4px}figcaption{font-size:11px}"
             f"</style></head><body><h1>mexport validate: <span class='{'pass' if r.passed else 'fail'}'>{'PASS' if r.passed else 'FAIL'}</span></h1>",
             f"<p>{len(r.photos)} photos ({html.escape(r.data)}); versions: {html.escape(json.dumps(r.versions))}</p>"]
    failed = failed_lines(r, markdown=False)
    if failed:
        parts.append("<ul class='failed'>" + "".join(f"<li class='fail'>{html.escape(x)}</li>" for x in failed) + "</ul>")
    lat = [(a.label, a.latency["p50_ms"], a.summary["median_psnr"], not a.passed) for a in r.artifacts
           if a.latency and isinstance(a.latency.get("p50_ms"), (int, float)) and math.isfinite(a.summary["median_psnr"])]
    if lat:
        parts.append("<h2>Fidelity vs latency</h2>" + _svg_scatter(lat))
    for a in r.artifacts:
        s = a.summary
        order = photo_order(a)
        failing = set(a.failing_photos)
        parts.append(f"<h2>{html.escape(a.label)} — {a.target} {a.precision} ({a.size_bytes / 1e6:.2f} MB): "
                     f"<span class='{'pass' if a.passed else 'fail'}'>{'PASS' if a.passed else 'FAIL'}</span></h2>")
        if s.get("warning"):
            parts.append(f"<p class='fail'>{html.escape(s['warning'])}</p>")
        photo_gate = next((g for g in a.gates if g.gate == "min-photo-alpha-psnr"), None)
        parts.append(f"<p>alpha PSNR vs float: p10 {_f(s.get('p10_psnr'))} / median {_f(s['median_psnr'])} / p90 "
                     f"{_f(s.get('p90_psnr'))} dB over {s['photos']} photos; worst {html.escape(str(s.get('worst_photo')))} "
                     f"{_f(s['min_psnr'])} dB</p>")
        parts.append(_svg_bars([(p["photo"], p["psnr"], p["photo"] in failing) for p in order],
                               photo_gate.threshold if photo_gate else 0.0))
        parts.append("<table><tr><th>gate</th><th>value</th><th>threshold</th><th>result</th><th>failing photos</th></tr>")
        for g in a.gates:
            parts.append(f"<tr><td>{g.gate}</td><td>{_f(g.value, 3)}</td><td>{_f(g.threshold, 3)}</td>"
                         f"<td class='{'pass' if g.passed else 'fail'}'>{'pass' if g.passed else 'FAIL'}</td>"
                         f"<td>{html.escape(', '.join(g.photos))}</td></tr>")
        parts.append("</table><table class='photos'><tr><th>photo</th><th>verdict</th><th>PSNR dB</th><th>max abs</th><th>SAD</th>"
                     "<th>SAD float</th><th>Grad</th><th>Grad float</th></tr>")
        for p in order:
            gt, gf = p.get("gt", {}), p.get("gt_float", {})
            bad = p["photo"] in failing
            parts.append(f"<tr class='{'failing' if bad else 'ok'}' data-photo='{html.escape(p['photo'])}'>"
                         f"<td>{html.escape(p['photo'])}</td><td class='{'fail' if bad else 'pass'}'>{'FAIL' if bad else 'ok'}</td>"
                         f"<td>{_f(p['psnr'])}</td><td>{_f(p['max_abs'], 4)}</td>"
                         f"<td>{_f(gt.get('sad'), 2)}</td><td>{_f(gf.get('sad'), 2)}</td><td>{_f(gt.get('grad'), 2)}</td><td>{_f(gf.get('grad'), 2)}</td></tr>")
        parts.append("</table>")
        pics = alphas.get(a.label, {})
        for p in order:
            name = p["photo"]
            if name not in pics:
                continue
            a_out, a_ref = pics[name]
            ph = photos[name]
            figs = [("photo", ph), ("float alpha", _gray(a_ref)), ("artifact alpha", _gray(a_out)),
                    ("|error| (red = 0.05, yellow = 0.1)", _heat(np.abs(a_out - a_ref))), ("cutout", _checker(ph, a_out))]
            bad = name in failing
            parts.append(f"<div class='photo{' failing' if bad else ''}' data-photo='{html.escape(name)}'>"
                         f"<h3>{html.escape(name)}{' — FAIL' if bad else ''} ({_f(p['psnr'])} dB)</h3>")
            parts += [f"<figure><img alt='{html.escape(name)} {cap}' src='{_jpeg(img)}'><figcaption>{cap}</figcaption></figure>" for cap, img in figs]
            parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_reports(r: ValidationReport, out_dir: Path, alphas: dict | None = None, samples=None) -> dict[str, Path]:
    """The reports, made in a staging directory and put in place together (mexport.io): a full disk
    or a read-only directory leaves the previous reports as they were, never a truncated one."""
    from ..io import install, output_lock, staging

    out_dir = Path(out_dir)
    md = to_markdown(r)
    texts = {"json": ("validate.json", json.dumps(r.to_dict(), indent=2, sort_keys=True) + "\n"),
             "markdown": ("validate.md", md), "junit": ("junit.xml", to_junit(r))}
    if alphas is not None and samples is not None:
        texts["html"] = ("report.html", to_html(r, alphas, samples))
    with output_lock(out_dir), staging(out_dir.parent, "report", out_dir) as work:
        for name, text in texts.values():
            (work / name).write_text(text)
        install({out_dir / name: work / name for name, _ in texts.values()}, work / "old")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(md)
    return {kind: out_dir / name for kind, (name, _) in texts.items()}
