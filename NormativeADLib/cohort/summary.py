"""The cohort table of a batch (one row per case and model; CSV and Parquet) and its HTML summary.

Rows come from what is on disk (each complete case's metrics.json, whichever run made it) and from
this run's errors, so the table always describes the whole output folder. The summary is one
self-contained page (plain JavaScript, nothing fetched from elsewhere): cohort statistics per model
(flagged volume: median, IQR, range; case scores against the card's healthy calibration scans), a
sortable table of every case per model with its report as a thumbnail that opens the full figure,
and the failed cases.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import numpy as np

from ..core import writes
from .outputs import make_public
from ..measures.metrics import flat_metrics

HEALTHY_HIGH = 95.0  # a case above this percentile of the healthy calibration scans' scores is counted apart


def write_cohort(pairs: list[tuple], failed: dict[tuple, str], layout, cards: dict | None = None) -> list[dict]:
    """cohort.csv, cohort.parquet, summary.html (+ its plot) in layout.out; returns the rows.
    cards (model id -> card) add each model's healthy calibration figures to the summary."""
    rows = cohort_rows(pairs, failed, layout)
    done = [r for r in rows if r["status"] == "done"]
    plot = "summary_distributions.png"
    page = summary_html(rows, plot, cards)
    for name, write in (("cohort.csv", lambda tmp: writes.write_csv(rows, tmp)),
                        ("cohort.parquet", lambda tmp: write_parquet(rows, tmp)),
                        (plot, lambda tmp: plot_distributions(done, tmp)),
                        ("summary.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))):
        writes.write_file_atomic(layout.out / name, _public(write), overwrite=True)
    return rows


def _public(write):
    def write_then_open(tmp: Path) -> None:
        write(tmp)
        make_public(tmp)

    return write_then_open


def cohort_rows(pairs: list[tuple], failed: dict[tuple, str], layout) -> list[dict]:
    rows = []
    for case, model_id in pairs:
        row = {"case": case.id, "model": model_id, "status": "done", "error": None, "subject": case.subject,
               "session": case.session, "contrast": case.contrast, "scan": str(case.scan), "outputs": None,
               "report": None}
        error = failed.get((case.id, model_id))
        if error is None and layout.is_complete(case, model_id):
            metrics_path = layout.metrics_path(case, model_id)
            row["outputs"] = os.path.relpath(layout.outputs_dir(case, model_id), layout.out)
            row["report"] = os.path.relpath(layout.report_path(case, model_id), layout.out)
            metrics = json.loads(metrics_path.read_text())
            row.update(_contrast_columns(metrics.get("contrast"), case.contrast))
            row.update({k: v for k, v in flat_metrics(metrics).items() if k not in ("case", "model")})
        else:
            row.update(status="failed", error=error or "not run (the batch was cancelled); rerun to complete it")
        row.update({k: v for k, v in case.extra.items() if k not in row})
        rows.append(row)
    return rows


def _contrast_columns(stated, given: str | None) -> dict:
    """The contrast the run took the scan for, where it came from, and the pipeline's warning if any."""
    if not isinstance(stated, dict):  # metrics of a version that did not state it
        return {}
    return {"contrast": given or stated.get("scan"), "contrast_source": stated.get("source"),
            "contrast_warning": stated.get("warning")}


def write_parquet(rows: list[dict], path: Path) -> None:
    """Rows as Parquet with one type per column: numbers where every value is one, else text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for row in rows for k in row))
    arrays = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            arrays[column] = pa.array(values, pa.bool_())
        elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            arrays[column] = pa.array(values, pa.int64())
        elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            arrays[column] = pa.array([None if v is None else float(v) for v in values], pa.float64())
        else:
            arrays[column] = pa.array([None if v is None else str(v) for v in values], pa.string())
    pq.write_table(pa.table(arrays), str(path))


# ----------------------------------------------------------------------------------------------
# Cohort statistics

def spread(values) -> dict | None:
    """n, median, quartiles and range of the values given (None and NaN left out); None when none."""
    values = np.asarray([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v)], dtype=float)
    if not values.size:
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"n": int(values.size), "median": float(median), "q1": float(q1), "q3": float(q3),
            "min": float(values.min()), "max": float(values.max())}


def cohort_statistics(rows: list[dict], cards: dict | None = None) -> dict[str, dict]:
    """Per model: case runs complete and failed, the flagged volume's and the case score's spread,
    and, where the card holds healthy calibration case scores, where the cases fall among them (the
    healthy percentile of each case: the share of healthy scans scoring at most as high) and the
    flagged volume the card measured on healthy scans at the threshold the cases used."""
    stats: dict[str, dict] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        model_rows = [r for r in rows if r["model"] == model]
        done = [r for r in model_rows if r["status"] == "done"]
        card = (cards or {}).get(model)
        entry = {"model": model, "cases": len(model_rows), "done": len(done), "failed": len(model_rows) - len(done),
                 "flagged_ml": spread(r.get("anomaly_volume_ml") for r in done),
                 "case_score": spread(r.get("case_score") for r in done),
                 "healthy_scans": len(card.healthy_case_scores) if card is not None else None,
                 "healthy_percentile": None, "above_healthy": None, "healthy_flagged_ml": None}
        percentiles = [r.get("healthy_percentile") for r in done]
        entry["healthy_percentile"] = spread(percentiles)
        if entry["healthy_percentile"] is not None:
            entry["above_healthy"] = sum(1 for p in percentiles if p is not None and p >= HEALTHY_HIGH)
        sources = {r.get("threshold_source") for r in done}
        if card is not None and len(sources) == 1:
            measured = card.healthy_flagged_ml().get(next(iter(sources))) or {}
            if measured.get("median_ml") is not None:
                entry["healthy_flagged_ml"] = {"threshold": next(iter(sources)), "median": measured["median_ml"]}
        stats[model] = entry
    return stats


# ----------------------------------------------------------------------------------------------
# Summary page

def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def ranked(rows: list[dict]) -> dict[str, list[dict]]:
    """Complete rows per model, most anomalous first (case score; a model's scores compare only among
    themselves, and its healthy percentile is a monotone function of them)."""
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == "done":
            by_model.setdefault(row["model"], []).append(row)
    return {m: sorted(r, key=lambda row: -(row.get("case_score") or 0.0)) for m, r in by_model.items()}


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}
td.text,th.text{text-align:left}
th{background:#f2f2f2}
th button{font:inherit;font-weight:bold;border:0;background:none;cursor:pointer;padding:0}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
th[aria-sort=none] button::after{content:" \\21C5";color:#999}
img.thumb{width:480px;height:auto;display:block}
a.thumb{cursor:zoom-in}
dialog{max-width:98vw;max-height:96vh;padding:0.5em;overflow:auto}
dialog img{display:block;max-width:none}
dialog p{margin:0.3em 0;font-size:90%}
.note{color:#555;font-size:90%}"""

# Sorting: a click on a header sorts by it (numbers by data-value, missing values last), again to
# reverse. Thumbnails: a click opens the full figure over the page (Esc or a click closes it); a
# middle or Ctrl-click opens it alone, as the plain link it is.
_SCRIPT = """(function () {
  function key(cell, numeric) {
    var value = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (!numeric) return value;
    var number = parseFloat(value);
    return value === "" || isNaN(number) ? null : number;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    heads.forEach(function (th, column) {
      var button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { if (h.hasAttribute("aria-sort")) h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var numeric = th.getAttribute("data-type") === "number";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[column], numeric), y = key(b.cells[column], numeric);
          if (x === null || y === null) return (x === null) - (y === null);
          var order = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  var viewer = document.getElementById("viewer");
  if (!viewer || !viewer.showModal) return;
  var image = viewer.querySelector("img"), caption = viewer.querySelector("p");
  document.querySelectorAll("a.thumb").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      image.src = link.getAttribute("href");
      image.alt = link.title;
      caption.textContent = link.title + " (click or Esc to close)";
      viewer.showModal();
    });
  });
  viewer.addEventListener("click", function () { viewer.close(); });
})();"""


def _header(label: str, kind: str = "number", sortable: bool = True, sort: str = "none") -> str:
    cls = " class=\"text\"" if kind == "text" else ""
    if not sortable:
        return f"<th{cls}>{html.escape(label)}</th>"
    return (f"<th{cls} data-type=\"{kind}\" aria-sort=\"{sort}\"><button type=\"button\" "
            f"title=\"sort by {html.escape(label)}\">{html.escape(label)}</button></th>")


def _cell(value, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"<td data-value=\"{value!r}\">{_number(value, digits)}</td>"
    return f"<td data-value=\"\">{_number(None)}</td>"


def _text(value) -> str:
    return f"<td class=\"text\">{html.escape('' if value is None else str(value))}</td>"


def _range(s: dict | None, digits: int = 2) -> tuple[str, str, str]:
    """(median, IQR, min-max) of a spread as table text."""
    if s is None:
        return "n/a", "n/a", "n/a"
    return (_number(s["median"], digits), f"{_number(s['q1'], digits)} &ndash; {_number(s['q3'], digits)}",
            f"{_number(s['min'], digits)} &ndash; {_number(s['max'], digits)}")


def statistics_table(stats: dict[str, dict]) -> str:
    """One row per model: complete and failed runs, flagged mL and case score spreads, healthy percentiles."""
    head = "".join(_header(label, kind) for label, kind in (
        ("model", "text"), ("complete", "number"), ("failed", "number"), ("flagged mL median", "number"),
        ("flagged mL IQR", "text"), ("flagged mL min – max", "text"), ("healthy scans flagged mL median", "number"),
        ("case score median", "number"), ("healthy percentile median", "number"),
        (f"cases ≥ {HEALTHY_HIGH:g}th healthy percentile", "number")))
    body = ""
    for model, s in stats.items():
        median, iqr, extent = _range(s["flagged_ml"])
        healthy_ml = s["healthy_flagged_ml"]
        reference = (f"<td data-value=\"{healthy_ml['median']!r}\">{_number(float(healthy_ml['median']), 2)} "
                     f"({html.escape(str(healthy_ml['threshold']))})</td>") if healthy_ml else "<td data-value=\"\">n/a</td>"
        if s["healthy_percentile"] is None:
            why = "no healthy calibration scores in the model card" if not s["healthy_scans"] else "n/a"
            healthy = f"<td data-value=\"\" title=\"{why}\">n/a</td><td data-value=\"\" title=\"{why}\">n/a</td>"
        else:
            healthy = (_cell(s["healthy_percentile"]["median"], 1) +
                       f"<td data-value=\"{s['above_healthy']}\">{s['above_healthy']} of {s['healthy_percentile']['n']}</td>")
        flagged = s["flagged_ml"]
        body += (f"<tr>{_text(model)}{_cell(s['done'])}{_cell(s['failed'])}"
                 f"<td data-value=\"{flagged['median'] if flagged else ''}\">{median}</td>"
                 f"<td class=\"text\">{iqr}</td><td class=\"text\">{extent}</td>{reference}"
                 f"{_cell(s['case_score']['median'] if s['case_score'] else None)}{healthy}</tr>")
    return (f"<table id=\"statistics\" class=\"sortable statistics\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def summary_html(rows: list[dict], plot: str, cards: dict | None = None) -> str:
    failed = [r for r in rows if r["status"] != "done"]
    stats = cohort_statistics(rows, cards)
    sections = "".join(_model_section(model, model_rows, stats[model]) for model, model_rows in ranked(rows).items())
    failures = ""
    if failed:
        items = "".join(f"<tr>{_text(r['case'])}{_text(r['model'])}{_text(r['error'])}</tr>" for r in failed)
        head = "".join(_header(label, "text") for label in ("case", "model", "error"))
        failures = (f"<h2 id=\"failed\">Failed ({len(failed)})</h2><table class=\"sortable failed\"><thead><tr>{head}"
                    f"</tr></thead><tbody>{items}</tbody></table>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>NormativeAD batch summary</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head><body>
<h1>NormativeAD batch summary</h1>
<p>{len(rows) - len(failed)} of {len(rows)} case runs complete, {len(failed)} failed. Every row, with all
metrics, is in <a href="cohort.csv">cohort.csv</a> (and cohort.parquet). Click a column header to sort
by it, a thumbnail to see the full report.</p>
<h2 id="statistics-heading">Cohort statistics</h2>
<p class="note">Per model (a model's scores compare only among its own cases). Flagged mL: the volume
over the threshold; IQR: first to third quartile. Healthy percentile: the share of the model's healthy
calibration scans whose case score is at most the case's (where the model card holds them); the
healthy scans' flagged mL is what the card measured on its healthy validation scans at the threshold
the cases used.</p>
{statistics_table(stats)}
<h2>Distributions</h2><img src="{html.escape(plot)}" alt="histograms of flagged volume and case score per model">
{sections}{failures}
<dialog id="viewer"><img alt=""><p></p></dialog>
<script>{_SCRIPT}</script>
</body></html>
"""


def _model_section(model: str, rows: list[dict], stats: dict) -> str:
    """Every complete case of a model, most anomalous first, in a sortable table with thumbnails."""
    with_healthy = stats["healthy_percentile"] is not None
    with_subject = any(r.get("subject") for r in rows)
    with_session = any(r.get("session") for r in rows)
    columns = [("case", "text")] + [("subject", "text")] * with_subject + [("session", "text")] * with_session
    columns += [("case score", "number")] + [("healthy percentile", "number")] * with_healthy
    columns += [("flagged mL", "number"), ("components", "number"), ("largest mL", "number"), ("threshold", "number")]
    head = "".join(_header(label, kind, sort="descending" if label == "case score" else "none")
                   for label, kind in columns) + _header("report", sortable=False)
    body = ""
    for row in rows:
        report = html.escape(Path(row["report"]).as_posix())
        title = html.escape(f"{row['case']} ({model})")
        cells = _text(row["case"]) + (_text(row.get("subject")) if with_subject else "") + \
            (_text(row.get("session")) if with_session else "") + _cell(row.get("case_score"))
        cells += _cell(row.get("healthy_percentile"), 1) if with_healthy else ""
        cells += (_cell(row.get("anomaly_volume_ml"), 2) + _cell(row.get("n_components")) +
                  _cell(row.get("largest_component_ml"), 2) + _cell(row.get("threshold")))
        body += (f"<tr>{cells}<td><a class=\"thumb\" href=\"{report}\" title=\"{title}\">"
                 f"<img class=\"thumb\" loading=\"lazy\" src=\"{report}\" alt=\"report of {title}\"></a></td></tr>")
    return (f"<h2 id=\"model-{html.escape(model)}\">{html.escape(model)}: {len(rows)} cases, most anomalous first</h2>"
            f"<table class=\"sortable cases\" data-model=\"{html.escape(model)}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def plot_distributions(rows: list[dict], path: Path) -> None:
    """Histograms of flagged volume and case score, one row of panels per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows}) or ["(no complete case)"]
    fig, axes = plt.subplots(len(models), 2, figsize=(8, 2.6 * len(models)), squeeze=False, layout="constrained")
    for model, (volume_ax, score_ax) in zip(models, axes):
        model_rows = [r for r in rows if r["model"] == model]
        for ax, key, label in ((volume_ax, "anomaly_volume_ml", "flagged volume (mL)"),
                               (score_ax, "case_score", "case score")):
            values = [r[key] for r in model_rows if r.get(key) is not None]
            if values:
                ax.hist(values, bins=min(30, max(5, len(values))), color="#4477aa")
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("cases", fontsize=8)
            ax.set_title(f"{model} (n={len(values)})", fontsize=9)
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)
