"""The evaluation report: JSON with every number, PNG plots and one self-contained HTML page.

The page embeds its figures as base64 data URIs and carries a Content-Security-Policy that forbids
every external resource and script, so it opens the same offline, from e-mail or an archive.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import math
from pathlib import Path
from typing import Mapping

from . import plots
from .errors import InputError
from .evaluate import guinier_from_dict
from .files import atomic_folder
from .mapio import Map
from .metrics import FSCCurve, HalvesCheck

JSON_NAME, HTML_NAME = "report.json", "report.html"
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.verdict { padding: 0.5em 0.8em; border-radius: 4px; }
.ok { background: #e6f4e6; } .warn { background: #fbe3e3; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
dt { font-weight: bold; margin-top: 0.4em; }
"""


def check_report_dir(out_dir: Path, force: bool) -> None:
    """InputError unless ``out_dir`` may receive a report (checked again when writing)."""
    out_dir = Path(out_dir).resolve()
    if not out_dir.parent.is_dir():
        raise InputError(f"folder {out_dir.parent} does not exist; create it first")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file; give a folder for the report")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise InputError(f"report folder {out_dir} exists and is not empty; pass --force to replace it")
        strangers = [p.name for p in out_dir.iterdir() if not _is_report_file(p)]
        if strangers:
            raise InputError(f"{out_dir} holds files that are not part of a report ({', '.join(sorted(strangers)[:3])}); "
                             "give a new or empty folder")


def write_report(results: dict, out_dir: str | Path, maps: Mapping[str, Map] | None = None,
                 force: bool = False) -> dict[str, Path]:
    """Write report.json, the PNG plots and report.html into ``out_dir``; returns name -> final path.

    ``results`` is evaluate()'s dict; ``maps`` (optional) adds their central slices. Everything is
    written into a temporary folder beside ``out_dir`` and renamed into place (``files.atomic_folder``),
    so a failure leaves no partial report (and an existing one, replaced only with ``force``, untouched).
    """
    out_dir = Path(out_dir).resolve()  # '.' has no name to put a temporary folder beside
    check_report_dir(out_dir, force)
    with atomic_folder(out_dir) as work:
        written = {"json": _write_json(results, work / JSON_NAME)}
        written.update(_write_figures(results, maps or {}, work))
        written["html"] = _write_html(results, written, work / HTML_NAME)
    return {name: out_dir / path.name for name, path in written.items()}


def _is_report_file(path: Path) -> bool:
    return path.is_file() and (path.name in (JSON_NAME, HTML_NAME) or path.suffix == ".png")


def _json_safe(value):
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_json(results: dict, path: Path) -> Path:
    path.write_text(json.dumps(_json_safe(results), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _write_figures(results: dict, maps: Mapping[str, Map], folder: Path) -> dict[str, Path]:
    figures: dict[str, Path] = {}
    halves = results.get("half_maps")
    if halves:
        curves = {"half maps (unmasked)": FSCCurve.from_dict(halves["fsc_unmasked"])}
        if "fsc_masked_corrected" in halves:
            curves["half maps (masked, corrected)"] = FSCCurve.from_dict(halves["fsc_masked_corrected"])
        figures["fsc_half_maps"] = plots.save_fsc_curves(curves, folder / "fsc_half_maps.png",
                                                         "Half-map Fourier shell correlation")
    if "halves_check" in results:
        figures["halves_check"] = plots.save_halves_check(HalvesCheck.from_dict(results["halves_check"]),
                                                          folder / "halves_check.png")
    model_curves = {name: FSCCurve.from_dict(entry["model"]["fsc"])
                    for name, entry in results["maps"].items() if "model" in entry}
    if model_curves:
        figures["fsc_map_model"] = plots.save_fsc_curves(model_curves, folder / "fsc_map_model.png",
                                                         "Map-model Fourier shell correlation", thresholds=(0.5,))
    if results["maps"]:
        fits = {name: guinier_from_dict(entry["guinier"]) for name, entry in results["maps"].items()}
        figures["guinier"] = plots.save_guinier(fits, folder / "guinier.png")
    if maps:
        figures["slices"] = plots.save_central_slices(list(maps.values()), list(maps), folder / "slices.png",
                                                      "Central orthogonal sections")
    return figures


_CAPTIONS = {
    "fsc_half_maps": "FSC of the two half maps; the dashed line marks 0.143.",
    "halves_check": "Halves enhanced separately against the raw halves; red points: shells where the enhanced "
                    "halves agree more than the data support (beyond the dotted raw 0.143 resolution).",
    "fsc_map_model": "FSC of each map against the model map; read at 0.5.",
    "guinier": "Guinier plot: ln of the mean Fourier amplitude per shell against s²; dashed: fitted line.",
    "slices": "Central sections along the three array axes, each map scaled from its 1st to 99.9th percentile.",
}


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _maps_table(results: dict) -> str:
    with_model = any("model" in entry for entry in results["maps"].values())
    # the model's ligands, hemes and glycans, when it has any (metrics.agreement)
    non_protein = any(entry.get("model", {}).get("median_local_cc_7_non_protein") is not None
                      for entry in results["maps"].values())
    columns = ["map", "Guinier B (Å²)"]
    if with_model:
        columns += ["FSC 0.5 (Å)", "CC_mask", "CC_box", "CC_volume", "CC_peaks", "local CC 5", "local CC 7"]
        columns += ["local CC 7, ligands"] if non_protein else []
    rows = []
    for name, entry in results["maps"].items():
        cells = [html.escape(name), _number(entry["guinier"]["b_factor"], 1)]
        if with_model:
            model = entry.get("model", {})
            cells += [_number(model.get("fsc_05_resolution"), 2)] + [
                _number(model.get(key)) for key in ("cc_mask", "cc_box", "cc_volume", "cc_peaks",
                                                    "median_local_cc_5", "median_local_cc_7")]
            cells += [_number(model.get("median_local_cc_7_non_protein"))] if non_protein else []
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def _half_maps_section(results: dict) -> str:
    halves = results.get("half_maps")
    if not halves:
        return ""
    text = f"<p>Unmasked FSC = 0.143 at <b>{_number(halves['resolution_0143_unmasked'], 2)} Å</b>"
    if "fsc_masked_corrected" in halves:
        text += f"; masked, phase-randomisation corrected: <b>{_number(halves['resolution_0143'], 2)} Å</b>"
    elif results.get("masked"):
        text += ("; the mask was not used: the unmasked FSC reaches further than the mask-corrected one (RELION's "
                 "rule; check that the mask covers the whole molecule with a soft edge)")
    return "<h2>Half maps</h2>" + text + ".</p>"


def _halves_check_section(results: dict) -> str:
    check = results.get("halves_check")
    if not check:
        return ""
    kind = "warn" if check["invented_detail"] else "ok"
    return (f"<h2>Independent-halves check</h2><p class=\"verdict {kind}\">{html.escape(check['verdict'])}</p>"
            f"<p>Enhanced halves: FSC = 0.143 at {_number(check['enhanced_resolution_0143'], 2)} Å; raw halves: "
            f"{_number(check['raw_resolution_0143'], 2)} Å.</p>")


def _figure(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(_CAPTIONS[name])
    return (f"<figure id=\"{name}\"><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(name)}\">"
            f"<figcaption>{caption}</figcaption></figure>")


def _write_html(results: dict, files: dict[str, Path], path: Path) -> Path:
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    box = " × ".join(str(n) for n in results["shape"])
    facts = (f"{box} voxels of {_number(results['voxel_size'], 3)} Å; resolution used "
             f"{_number(results.get('resolution'), 2)} Å" + ("; masked" if results.get("masked") else ""))
    model = results.get("atomic_model")
    if model:
        facts += f"; atomic model {html.escape(model)}"
    figures = "".join(_figure(name, p) for name, p in files.items() if name in _CAPTIONS)
    body = (f"<h1>DeepEMhancer evaluation</h1><p>{facts}. deepemhancer {html.escape(results['deepemhancer_version'])}, "
            f"{html.escape(when)}.</p>"
            + (f"<h2>Maps</h2>{_maps_table(results)}" if results["maps"] else "")
            + _half_maps_section(results) + _halves_check_section(results)
            + f"<h2>Figures</h2>{figures}" + _DEFINITIONS)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            f"<title>DeepEMhancer evaluation</title><style>{_STYLE}</style></head><body>{body}</body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path


_DEFINITIONS = """<h2>Definitions</h2><dl>
<dt>Guinier B</dt><dd>-4 × the slope of ln(mean |F|) against s² from 10 Å to the resolution used (Å²; positive
for a blurred map, about 0 for a sharpened one).</dd>
<dt>FSC 0.5</dt><dd>Resolution where the map-model FSC first falls below 0.5.</dd>
<dt>CC_mask, CC_box, CC_volume, CC_peaks</dt><dd>phenix.map_model_cc's correlations of the map and the model map
(inside the molecular mask, over the box, over the model's highest points, over both maps' highest points).</dd>
<dt>local CC 5, 7</dt><dd>Median over the molecular mask of the correlation in 5- and 7-voxel windows.</dd>
<dt>Independent-halves check</dt><dd>Each half enhanced on its own; beyond the raw halves' 0.143 resolution their
FSC must not exceed the raw halves' FSC by more than the noise allows (docs/trust.md).</dd></dl>"""
