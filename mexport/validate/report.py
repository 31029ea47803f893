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


def to_markdown(r: ValidationReport) -> str:
    lines = [f"## mexport validate: {'PASS' if r.passed else 'FAIL'}", "",
             f"Photos: {len(r.photos)} ({r.data}). Fidelity vs the float PyTorch pipeline; accuracy vs ground truth where given.", "",
             "| artifact | target | precision | size | median PSNR | min PSNR | max abs | SAD (float) | Grad (float) | gates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in r.artifacts:
        s = a.summary
        sad = f"{_f(s['sad_mean'], 2)} ({_f(s['sad_float_mean'], 2)})" if "sad_mean" in s else "—"
        grad = f"{_f(s['grad_mean'], 2)} ({_f(s['grad_float_mean'], 2)})" if "grad_mean" in s else "—"
        gates = ", ".join(f"{'✅' if g.passed else '❌'} {g.gate}" for g in a.gates)
        lines.append(f"| {a.label} | {a.target} | {a.precision} | {a.size_bytes / 1e6:.2f} MB | {_f(s['median_psnr'])} dB | "
                     f"{_f(s['min_psnr'])} dB | {_f(s['max_abs'], 4)} | {sad} | {grad} | {gates} |")
    ran = [a for a in r.artifacts if a.runtime]
    if ran:
        lines += [""] + [f"- {a.label} ran on {a.runtime['name']} {a.runtime['version']}"
                         + (f" ({a.runtime['python']})" if a.runtime.get("python") else "") for a in ran]
    failed = [(a, g) for a in r.artifacts for g in a.gates if not g.passed]
    if failed:
        lines += ["", "Failed gates:", ""]
        lines += [f"- **{a.label}**: `{g.gate}` = {_f(g.value, 3)}, threshold {_f(g.threshold, 3)} {g.detail}" for a, g in failed]
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
    suite = ET.Element("testsuite", name="mexport-validate", tests=str(sum(len(a.gates) for a in r.artifacts)),
                       failures=str(sum(not g.passed for a in r.artifacts for g in a.gates)))
    for a in r.artifacts:
        for g in a.gates:
            case = ET.SubElement(suite, "testcase", classname=a.label, name=g.gate)
            if not g.passed:
                ET.SubElement(case, "failure", message=f"{g.gate}: {_f(g.value, 3)} vs threshold {_f(g.threshold, 3)}").text = g.detail
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _png(arr: np.ndarray, size: int = 192) -> str:
    from PIL import Image

    im = Image.fromarray(arr)
    im.thumbnail((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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


def to_html(r: ValidationReport, alphas: dict, samples) -> str:
    photos = {s.name: s.photo for s in samples}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mexport validate</title><style>"
             "body{font-family:sans-serif;margin:20px}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}.pass{color:#080}.fail{color:#c00;font-weight:bold}"
             "img{display:block;max-width:192px}figure{display:inline-block;margin:4px}figcaption{font-size:11px}"
             f"</style></head><body><h1>mexport validate: <span class='{'pass' if r.passed else 'fail'}'>{'PASS' if r.passed else 'FAIL'}</span></h1>",
             f"<p>{len(r.photos)} photos ({html.escape(r.data)}); versions: {html.escape(json.dumps(r.versions))}</p>"]
    for a in r.artifacts:
        s = a.summary
        parts.append(f"<h2>{html.escape(a.label)} — {a.target} {a.precision} ({a.size_bytes / 1e6:.2f} MB)</h2><table>"
                     "<tr><th>gate</th><th>value</th><th>threshold</th><th>result</th></tr>")
        for g in a.gates:
            parts.append(f"<tr><td>{g.gate}</td><td>{_f(g.value, 3)}</td><td>{_f(g.threshold, 3)}</td>"
                         f"<td class='{'pass' if g.passed else 'fail'}'>{'pass' if g.passed else 'FAIL'}</td></tr>")
        parts.append("</table><table><tr><th>photo</th><th>PSNR dB</th><th>max abs</th><th>SAD</th><th>SAD float</th><th>Grad</th><th>Grad float</th></tr>")
        for p in a.photos:
            gt, gf = p.get("gt", {}), p.get("gt_float", {})
            parts.append(f"<tr><td>{html.escape(p['photo'])}</td><td>{_f(p['psnr'])}</td><td>{_f(p['max_abs'], 4)}</td>"
                         f"<td>{_f(gt.get('sad'), 2)}</td><td>{_f(gf.get('sad'), 2)}</td><td>{_f(gt.get('grad'), 2)}</td><td>{_f(gf.get('grad'), 2)}</td></tr>")
        parts.append("</table>")
        for name, (a_out, a_ref) in alphas.get(a.label, {}).items():
            ph = photos[name]
            figs = [("photo", ph), ("float alpha", _gray(a_ref)), ("artifact alpha", _gray(a_out)),
                    ("|error| (red = 0.05, yellow = 0.1)", _heat(np.abs(a_out - a_ref))), ("cutout", _checker(ph, a_out))]
            parts.append(f"<div class='photo' data-photo='{html.escape(name)}'><h3>{html.escape(name)}</h3>")
            parts += [f"<figure><img alt='{html.escape(name)} {cap}' src='{_png(img)}'><figcaption>{cap}</figcaption></figure>" for cap, img in figs]
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
