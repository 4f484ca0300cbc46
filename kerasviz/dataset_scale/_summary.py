"""Summaries of a store: per-method metric means with bootstrap confidence intervals, and the
localization table (markdown) of the README and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kerasviz.dataset_scale._store import Explanations, open_explanations

#: Column titles of the localization table, in order.
COLUMNS = {
    "pointing_game": "pointing game",
    "energy_pointing_game": "energy PG",
    "iou_at": "IoU",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
}


def bootstrap_ci(
    values: Any, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """The mean of ``values`` and its percentile-bootstrap confidence interval.

    Draws ``resamples`` resamples of the values with replacement (``numpy.random.default_rng
    (seed).integers``, in blocks of 100 resamples to bound memory) and takes the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of their means (Efron and
    Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).

    Args:
        values: 1D finite values (NaN entries are dropped).
        confidence: the interval's coverage, in (0, 1).
        resamples: bootstrap resamples.
        seed: the generator's seed (the interval is reproducible).

    Returns:
        ``(mean, low, high)``; NaNs for no values.

    Example:
        >>> bootstrap_ci([0, 1, 1, 1])
        (0.75, 0.25, 1.0)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if not 0 < confidence < 1:
        raise ValueError(f"Expected `confidence` in (0, 1). Received: {confidence!r}.")
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, 100):
        count = min(100, resamples - start)
        means.append(x[rng.integers(0, x.size, size=(count, x.size))].mean(axis=1))
    means = np.concatenate(means)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(x.mean()), float(low), float(high)


def summarize(
    out: str | Path | Explanations,
    *,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-method means of every per-image metric, with bootstrap confidence intervals.

    Only complete images that were explained (``ok``) and have a finite value count.

    Returns:
        ``{method: {metric: {"mean", "low", "high", "count"}}}``, plus ``"accuracy"`` (of the
        predictions against the labels) under the method ``"model"`` when there are labels.

    Example:
        >>> kerasviz.dataset_scale.summarize("runs/val")["grad_cam"]["pointing_game"]
        {'mean': 0.63, 'low': 0.59, 'high': 0.67, 'count': 500}
    """
    explanations = out if isinstance(out, Explanations) else open_explanations(out)
    table = explanations.table()
    keep = table["complete"] & table["ok"]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, metrics in explanations.metric_names().items():
        summary[name] = {}
        for metric in metrics:
            values = table[f"{name}/{metric}"][keep]
            values = values[np.isfinite(values)]
            mean, low, high = bootstrap_ci(
                values, confidence=confidence, resamples=resamples, seed=seed
            )
            summary[name][metric] = {"mean": mean, "low": low, "high": high, "count": values.size}
    if "label" in table:
        hits = (table["prediction"][keep] == table["label"][keep]).astype(np.float64)
        mean, low, high = bootstrap_ci(hits, confidence=confidence, resamples=resamples, seed=seed)
        summary["model"] = {
            "accuracy": {"mean": mean, "low": low, "high": high, "count": hits.size}
        }
    return summary


def format_summary(summary: dict, confidence: float = 0.95) -> str:
    """The summary as aligned text: method, metric, mean, CI, count."""
    header = ["method", "metric", "mean", f"{round(100 * confidence)}% CI", "images"]
    rows = [
        [name, metric, f"{v['mean']:.3f}", f"[{v['low']:.3f}, {v['high']:.3f}]", str(v["count"])]
        for name, metrics in summary.items()
        for metric, v in metrics.items()
    ]
    if not rows:
        return "no per-image metrics in this store (run with masks, or pass `metrics=`)"
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _settings_text(method: dict) -> str:
    kwargs = method.get("kwargs", {})
    text = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return method["method"] + (f" ({text})" if text else "")


def localization_table(
    out: str | Path | Explanations,
    *,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> str:
    """The localization table of the README and the report, as markdown, from a store.

    One row per method: its settings, then the mean of each metric with its bootstrap
    confidence interval, and the seconds per image of the whole run (all methods of a chunk
    are computed in one step, so the time is shared).

    Example:
        >>> print(kerasviz.dataset_scale.localization_table("runs/shapes"))
    """
    explanations = out if isinstance(out, Explanations) else open_explanations(out)
    summary = summarize(explanations, confidence=confidence, resamples=resamples, seed=seed)
    settings = explanations.manifest["settings"]
    metric_order = [m for m in COLUMNS if m in settings["metrics"]]
    header = ["method", "settings", *(COLUMNS[m] for m in metric_order)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, method in settings["methods"].items():
        cells = [name, _settings_text(method)]
        for metric in metric_order:
            v = summary[name][metric]
            cells.append(f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    seconds = explanations.progress()["seconds"]
    done = int(explanations.complete.sum())
    per_image = np.nansum(seconds) / done if done else float("nan")
    lines.append("")
    lines.append(
        f"{done} of {explanations.n} images; {round(100 * confidence)}% bootstrap intervals "
        f"({resamples} resamples); {per_image:.4f} s / image for all methods together."
    )
    return "\n".join(lines)
