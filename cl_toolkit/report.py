"""Run reports: PNG curves and a self-contained ``report.html`` from a run dir's metrics.jsonl.

``write_report(run)`` plots, against the training step: the loss, the learning rate, the
collapse statistics (per-dimension std of the normalised embeddings next to the 1/sqrt(D) of
spread-out ones, effective rank, alignment and uniformity after Wang & Isola 2020; steps that
raised a collapse warning in red) and kNN accuracy when it was measured during training
(``knn_monitor``, ``cltk pretrain --knn-every N``). Each figure is a PNG in the run dir and is
embedded (base64) in report.html, which therefore opens anywhere without a server.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import InputError, RunDir, atomic_file
from .io.run import REPORT

COLLAPSE_KEYS = [("std", "per-dimension std (normalised)"), ("effective_rank", "effective rank"),
                 ("alignment", "alignment (lower: views agree)"), ("uniformity", "uniformity (lower: spread out)")]


def read_metrics(run: str | Path) -> list[dict]:
    p = RunDir(run).metrics
    if not p.is_file():
        raise InputError("not a run dir (no metrics.jsonl)", run)
    rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    if not rows:
        raise InputError("metrics.jsonl is empty: nothing to report yet", p)
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 3.6):

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    return fig, axes


def _line(ax, rows: list[dict], key: str, label: str | None = None, **kw) -> bool:
    x, y = _series(rows, key)
    if not x:
        return False
    ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=label or key, **kw)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    return True


def figures(rows: list[dict], title: str = "") -> dict[str, object]:
    """name.png -> matplotlib Figure for each curve the metrics contain."""
    figs: dict[str, object] = {}
    fig, (ax,) = _figure()
    if _line(ax, rows, "loss"):
        ax.set_title(f"training loss {title}".strip())
        figs["loss.png"] = fig
    fig, (ax,) = _figure()
    if _line(ax, rows, "lr"):
        ax.set_title("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        figs["lr.png"] = fig
    if any("effective_rank" in r for r in rows):
        fig, axes = _figure(2, 2, 9.6, 6.4)
        warned = [r["step"] for r in rows if r.get("collapse_warning")]
        for ax, (key, label) in zip(axes, COLLAPSE_KEYS):
            if _line(ax, rows, key, label):
                if key == "std":
                    _line(ax, rows, "std_ideal", "1/sqrt(D): spread out", linestyle="--", color="gray")
                    ax.set_ylim(bottom=0)
                    ax.legend(fontsize=8)
                if key == "effective_rank":
                    ax.set_ylim(bottom=0)
                for s in warned:
                    ax.axvline(s, color="red", alpha=0.3, linewidth=1)
            ax.set_title(label)
        fig.suptitle("collapse statistics of the backbone embeddings" + (" (red: collapse warning)" if warned else ""))
        figs["collapse.png"] = fig
    knn_keys = sorted({k for r in rows for k in r if k.startswith("knn_top")})
    if knn_keys:
        fig, (ax,) = _figure()
        for k in knn_keys:
            _line(ax, rows, k)
        ax.set_title("kNN accuracy during training")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
        figs["knn.png"] = fig
    return figs


def write_report(run: str | Path) -> Path:
    """Write the PNGs and report.html into the run dir ``run``; returns the HTML path."""
    run = Path(run)
    rows = read_metrics(run)
    cfg_path = RunDir(run).config
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    title = f"{cfg.get('method', '')} / {cfg.get('encoder', '')}".strip(" /")
    parts = []
    for name, fig in figures(rows, f"({title})" if title else "").items():
        buf = io.BytesIO()
        FigureCanvasAgg(fig)
        fig.savefig(buf, format="png")
        png = buf.getvalue()
        with atomic_file(run / name, force=True, binary=True) as f:
            f.write(png)
        b64 = base64.b64encode(png).decode()
        parts.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{name}">'
                     f'<figcaption><a href="{name}">{name}</a></figcaption></figure>')
    last = {k: v for r in rows for k, v in r.items()}  # the latest value of every metric
    keep = ["step", "epoch", "loss", "lr", "std", "std_ideal", "effective_rank", "alignment", "uniformity",
            "images_per_s", "elapsed_s"] + sorted(k for k in last if k.startswith("knn_top"))
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(last[k]))}</td></tr>"
                      for k in keep if k in last)
    settings = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                       for k, v in cfg.items())
    warns = sum(1 for r in rows if r.get("collapse_warning"))
    warn_html = (f'<p class="warn">{warns} logged step(s) raised a collapse warning.</p>' if warns else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cltk run report: {html.escape(title or run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:0.9em}}th,td{{text-align:left;padding:2px 10px;border-bottom:1px solid #ddd}}
figure{{margin:1.5em 0}}img{{max-width:100%}}.warn{{color:#b00;font-weight:bold}}</style></head>
<body><h1>Run report: {html.escape(title or run.name)}</h1>
<p>Run dir <code>{html.escape(str(run))}</code>, {len(rows)} metric lines.</p>{warn_html}
<h2>Latest values</h2><table>{summary}</table>
<h2>Curves</h2>{''.join(parts)}
<h2>Configuration</h2><table>{settings}</table>
</body></html>
"""
    out = run / REPORT
    with atomic_file(out, force=True) as f:
        f.write(page)
    return out
