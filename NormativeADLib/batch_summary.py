"""The cohort table of a batch (one row per case and model; CSV and Parquet) and its HTML summary.

Rows come from what is on disk (each complete case's metrics.json, whichever run made it) and from
this run's errors, so the table always describes the whole output folder.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from . import paths
from .batch_outputs import make_public
from .metrics import flat_metrics

TOP_CASES = 50  # per model, in the summary; the table holds all


def write_cohort(pairs: list[tuple], failed: dict[tuple, str], layout) -> list[dict]:
    """cohort.csv, cohort.parquet, summary.html (+ its plot) in layout.out; returns the rows."""
    rows = cohort_rows(pairs, failed, layout)
    done = [r for r in rows if r["status"] == "done"]
    plot = "summary_distributions.png"
    page = summary_html(rows, plot)
    for name, write in (("cohort.csv", lambda tmp: paths.write_csv(rows, tmp)),
                        ("cohort.parquet", lambda tmp: write_parquet(rows, tmp)),
                        (plot, lambda tmp: plot_distributions(done, tmp)),
                        ("summary.html", lambda tmp: tmp.write_text(page))):
        paths.write_file_atomic(layout.out / name, _public(write), overwrite=True)
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
            row["outputs"] = os.path.relpath(metrics_path.parent, layout.out)
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


def summary_html(rows: list[dict], plot: str) -> str:
    failed = [r for r in rows if r["status"] != "done"]
    sections = "".join(_model_section(model, model_rows) for model, model_rows in ranked(rows).items())
    failures = ""
    if failed:
        items = "".join(f"<tr><td>{html.escape(r['case'])}</td><td>{html.escape(r['model'])}</td>"
                        f"<td style='text-align:left'>{html.escape(str(r['error']))}</td></tr>" for r in failed)
        failures = f"<h2>Failed ({len(failed)})</h2><table><tr><th>case</th><th>model</th><th>error</th></tr>{items}</table>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>NormativeAD batch summary</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}} td:first-child{{text-align:left}}
img.thumb{{width:360px}}</style></head><body>
<h1>NormativeAD batch summary</h1>
<p>{len(rows) - len(failed)} of {len(rows)} case runs complete, {len(failed)} failed. Every row, with all
metrics, is in <a href="cohort.csv">cohort.csv</a> (and cohort.parquet).</p>
<h2>Distributions</h2><img src="{plot}">
{sections}{failures}
</body></html>
"""


def _model_section(model: str, rows: list[dict]) -> str:
    shown = rows[:TOP_CASES]
    body = ""
    for row in shown:
        report = Path(row["report"]).as_posix()
        body += (f"<tr><td>{html.escape(row['case'])}</td><td>{_number(row.get('case_score'))}</td>"
                 f"<td>{_number(row.get('healthy_percentile'), 1)}</td><td>{_number(row.get('anomaly_volume_ml'), 2)}</td>"
                 f"<td>{_number(row.get('n_components'))}</td>"
                 f"<td><a href=\"{html.escape(report)}\"><img class=\"thumb\" src=\"{html.escape(report)}\"></a></td></tr>")
    more = f"<p>The {len(rows) - len(shown)} other cases are in cohort.csv.</p>" if len(rows) > len(shown) else ""
    return (f"<h2>{html.escape(model)}: most anomalous cases first</h2><table><tr><th>case</th><th>case score</th>"
            f"<th>healthy percentile</th><th>flagged mL</th><th>components</th><th>report</th></tr>{body}</table>{more}")


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
