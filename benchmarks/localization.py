"""Localization and faithfulness benchmark: which projection should the CAMs use by default?

On held-out images of ``kerasviz.datasets.shapes`` (seed 12345, never used for training) and the
two demo models (``models/shapes_cnn.keras``, ``models/shapes_nested.keras``), every map method
of kerasviz explains the true class of each image, and every metric of :mod:`kerasviz.metrics`
scores it, with 95% percentile-bootstrap intervals over the images; every cell states its n.

- CAMs (Grad-CAM, Grad-CAM++, Layer-CAM, Score-CAM, HiResCAM, XGrad-CAM, Eigen-CAM,
  Ablation-CAM) under four projections onto the input: the exact receptive-field mean
  (``upsample="receptive_field"``), the effective receptive field (``"effective"``, path counts),
  bilinear interpolation between the field centres (``"centered"``) and the bilinear resize
  (``"bilinear"``), each (CAM, projection) one method of one :func:`kerasviz.explain_dataset`
  run (its store gives the standard pointing game and energy per image).
  Their map-only metrics use all ``--n`` images (Score-CAM and Ablation-CAM: the first
  ``--n-costly-cam``): this is the projection comparison.
- The other map methods (saliency, SmoothGrad, integrated gradients, input x gradient,
  DeepLIFT, GradientSHAP, the LRP composites) run through :func:`kerasviz.explain_dataset` on
  the first ``--n-other`` images (its store computes the standard pointing game, energy
  pointing game, deletion and insertion AUC per image); LIME, KernelSHAP and RISE through
  their public functions on ``--n-expensive``. Maps with channels: max ``|.|`` over channels.
- Metrics that run the model use fewer images: ``--n-model`` (deletion, insertion, average drop,
  increase in confidence, infidelity), ``--n-road``, ``--n-sensitivity``,
  ``--n-randomization``. The defaults fit both models in about an hour of a shared 2-core CPU.

Then the projections are compared on every (model, CAM, metric): the best mean wins (ties
shared); the default projection is the one with the most wins. Against bilinear, a paired
bootstrap interval of the per-image difference says better, tied or worse per CAM, which
decides the goal "at least as good as bilinear on every metric, both models".

Run:
    .venv/bin/python benchmarks/localization.py --n 500 [--markdown docs/localization.md]
        [--readme table.md] [--json values.json]
    # per model, then merged: --models models/shapes_cnn.keras --json cnn.json; ...;
    # --report-only --json all.json (the tables from stored per-image values)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasviz  # noqa: E402
from kerasviz import datasets, metrics  # noqa: E402
from kerasviz.dataset_scale import METHODS as DATASET_METHODS  # noqa: E402
from kerasviz.dataset_scale import bootstrap_ci  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = (ROOT / "models" / "shapes_cnn.keras", ROOT / "models" / "shapes_nested.keras")

#: ``upsample`` of each projection compared, by its label in the tables.
PROJECTIONS = {
    "exact mean": "receptive_field",
    "effective": "effective",
    "centered": "centered",
    "bilinear": "bilinear",
}
#: CAMs, each run with every projection: (label, kerasviz function, keyword arguments).
CAMS = (
    ("Grad-CAM", "grad_cam", {}),
    ("Grad-CAM++", "grad_cam_plus_plus", {}),
    ("Layer-CAM", "layer_cam", {}),
    ("Score-CAM", "score_cam", {}),
    ("HiResCAM", "hires_cam", {}),
    ("XGrad-CAM", "xgrad_cam", {}),
    ("Eigen-CAM", "eigen_cam", {}),
    ("Ablation-CAM", "ablation_cam", {}),
)
#: CAMs that run the model once per channel: their maps on the first ``--n-costly-cam`` images.
COSTLY_CAMS = ("Score-CAM", "Ablation-CAM")
#: Other map methods: (label, kerasviz function, keyword arguments, expensive).
OTHERS = (
    ("saliency", "saliency", {}, False),
    ("SmoothGrad", "smoothgrad", {}, False),
    ("integrated gradients", "integrated_gradients", {}, False),
    ("input x gradient", "input_x_gradient", {}, False),
    ("DeepLIFT", "deeplift", {}, False),
    ("GradientSHAP", "gradient_shap", {}, False),
    ("LRP EpsilonPlus", "lrp", {"composite": "epsilon_plus"}, False),
    (
        "LRP EpsilonGammaBox",
        "lrp",
        # images lie in [0, 1]; the margin admits the noisy copies of max-sensitivity
        {"composite": "epsilon_gamma_box", "value_range": (-0.1, 1.1)},
        False,
    ),
    ("LRP EpsilonAlpha2Beta1", "lrp", {"composite": "epsilon_alpha2_beta1"}, False),
    ("LIME", "lime", {"seed": 0, "samples": 500}, True),
    ("KernelSHAP", "kernel_shap", {"seed": 0, "samples": 512}, True),
    ("RISE", "rise", {"seed": 0, "masks": 1000}, True),
)

#: Metric columns: (key, title, higher is better).
COLUMNS = (
    ("pg_strict", "PG strict", True),
    ("pg_standard", "PG standard", True),
    ("energy", "energy PG", True),
    ("deletion", "deletion AUC", False),
    ("insertion", "insertion AUC", True),
    ("road_morf", "ROAD MoRF", False),
    ("road_lerf", "ROAD LeRF", True),
    ("drop", "avg drop", False),
    ("increase", "increase", True),
    ("infidelity", "infidelity", False),
    ("sensitivity", "max-sens.", False),
    ("randomization", "random. rho", False),
    ("sparseness", "sparseness", True),
    ("entropy", "entropy", False),
)
HIGHER = {key: higher for key, _, higher in COLUMNS}
TITLE = {key: title for key, title, _ in COLUMNS}
#: The metrics explain_dataset computes per image, and their keyword arguments.
STORE_METRICS = {
    "pointing_game": ("pg_standard", {"tolerance": "standard"}),
    "energy_pointing_game": ("energy", {}),
    "deletion_auc": ("deletion", {"steps": 20, "baseline": 0.0, "batch_size": 256}),
    "insertion_auc": ("insertion", {"steps": 20, "baseline": "blur", "batch_size": 256}),
}


@dataclass
class Row:
    """One method (with one projection, for a CAM) and its per-image metric values."""

    label: str
    function: str
    kwargs: dict
    projection: str = "-"
    expensive: bool = False
    values: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = float("nan")
    times: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Its name in the store (no '/')."""
        suffix = "" if self.projection == "-" else "." + self.projection.replace(" ", "_")
        return self.label.replace(" ", "_").replace("/", "_") + suffix

    @property
    def call_kwargs(self) -> dict:
        kwargs = dict(self.kwargs)
        if self.projection != "-":
            kwargs["upsample"] = PROJECTIONS[self.projection]
        return kwargs

    def method(self, batch_size: int) -> Callable:
        """``method(model, images, targets) -> (n, H, W)`` maps."""
        fn = getattr(kerasviz, self.function)
        kwargs = self.call_kwargs

        def run(model, images, targets):
            out = fn(model, images, targets, batch_size=batch_size, **kwargs)
            out = getattr(out, "maps", out)  # LIME and KernelSHAP return their superpixels too
            out = np.asarray(out, np.float32)
            return np.abs(out).max(axis=-1) if out.ndim == 4 else out

        return run


def rows(only: list[str] | None = None) -> list[Row]:
    """Every method this kerasviz has, CAMs once per projection."""
    out = []
    for label, name, kwargs in CAMS:
        if hasattr(kerasviz, name):
            out += [Row(label, name, kwargs, projection) for projection in PROJECTIONS]
    for label, name, kwargs, expensive in OTHERS:
        if hasattr(kerasviz, name):
            out.append(Row(label, name, kwargs, expensive=expensive))
    if only:
        out = [r for r in out if r.label in only or r.function in only]
    return out


# ----------------------------------------------------------------------------- computing


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Scorer:
    """The metrics of one model's rows, each on its own number of images (``--n-*``)."""

    def __init__(self, model, images, labels, masks, args):
        self.model, self.images, self.labels, self.masks, self.args = (
            model,
            images,
            labels,
            masks,
            args,
        )
        size = images.shape[1:3]
        # The standard pointing game dilates every mask by the same disc; dilating once here
        # and scoring with tolerance 0 is the same computation (checked in check_standard).
        self.tolerance = metrics.standard_tolerance(size)
        self.grown = metrics._dilate(masks.astype(bool), self.tolerance)
        self.checked = False

    def check_standard(self, maps: np.ndarray) -> None:
        if self.checked:
            return
        k = min(len(maps), 16)
        reference = metrics.pointing_game(maps[:k], self.masks[:k], tolerance="standard")
        ours = metrics.pointing_game(maps[:k], self.grown[:k])
        if not np.array_equal(reference, ours):
            raise AssertionError("pre-dilated masks disagree with tolerance='standard'")
        self.checked = True

    def maps_only(self, row: Row, maps: np.ndarray) -> None:
        """The metrics of the maps alone, on every image the row has."""
        k = len(maps)
        self.check_standard(maps)
        row.values["pg_strict"] = metrics.pointing_game(maps, self.masks[:k])
        row.values.setdefault("pg_standard", metrics.pointing_game(maps, self.grown[:k]))
        row.values.setdefault("energy", metrics.energy_pointing_game(maps, self.masks[:k]))
        row.values["sparseness"] = metrics.sparseness(maps)
        row.values["entropy"] = metrics.entropy(maps)

    def with_model(self, row: Row, maps: np.ndarray, stored: bool = False) -> None:
        """The metrics that run the model (and, for two, the method), on their image counts."""
        args, model = self.args, self.model
        batch = args.perturbation_batch
        clock = time.perf_counter()

        def lap(what: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            row.times[what] = now - clock
            clock = now

        k = min(len(maps), args.n_model)
        x, y, m = self.images[:k], self.labels[:k], maps[:k]
        if not stored:  # the store computed these on the same images with the same settings
            for name in ("deletion_auc", "insertion_auc"):
                key, kwargs = STORE_METRICS[name]
                row.values[key] = getattr(metrics, name)(
                    model, x, m, y, **{**kwargs, "steps": args.steps}
                )
        row.values["drop"] = metrics.average_drop(model, x, m, y, batch_size=batch)
        row.values["increase"] = metrics.increase_in_confidence(model, x, m, y, batch_size=batch)
        row.values["infidelity"] = metrics.infidelity(
            model, x, m, y, samples=args.infidelity_samples, batch_size=batch
        )
        lap("cheap")
        k = min(len(maps), args.n_road)
        for order in ("morf", "lerf"):
            row.values[f"road_{order}"] = metrics.road(
                model,
                self.images[:k],
                maps[:k],
                self.labels[:k],
                order=order,
                fractions=args.road_fractions,
                batch_size=batch,
            )
        lap("ROAD")
        if row.expensive:  # thousands of model calls per map: not rerun on noisy or random models
            return
        method = row.method(args.batch_size)
        k = min(len(maps), args.n_sensitivity)
        if k:
            row.values["sensitivity"] = metrics.max_sensitivity(
                method,
                model,
                self.images[:k],
                self.labels[:k],
                samples=args.sensitivity_samples,
                batch_size=10,
            )
        lap("sensitivity")
        k = min(len(maps), args.n_randomization)
        if k:
            result = metrics.randomization_check(method, model, self.images[:k], self.labels[:k])
            row.values["randomization"] = result.scores
        lap("randomization")


def stored_maps(
    model, rows_, images, labels, masks, args, out: Path, perturbation: bool = True
) -> dict[str, np.ndarray]:
    """One explain_dataset run for the rows it supports: maps and the store's metrics (the
    pointing game and energy; with ``perturbation``, deletion and insertion too)."""
    supported = [r for r in rows_ if r.function in DATASET_METHODS]
    if not supported:
        return {}
    methods = {r.key: (r.function, r.call_kwargs) for r in supported}
    data = tf.data.Dataset.from_tensor_slices((images, labels, masks))
    wanted = STORE_METRICS if perturbation else dict(list(STORE_METRICS.items())[:2])
    store_metrics = {name: kwargs for name, (_, kwargs) in wanted.items()}
    for name in set(store_metrics) & {"deletion_auc", "insertion_auc"}:
        store_metrics[name] = {**store_metrics[name], "steps": args.steps}
    start = time.perf_counter()
    store = kerasviz.explain_dataset(
        model,
        data,
        methods,
        out,
        batch_size=args.batch_size,
        targets="labels",
        dtype="float32",
        metrics=store_metrics,
        overwrite=True,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    table = store.table()
    maps = {}
    for r in supported:
        maps[r.key] = np.asarray(store[f"maps/{r.key}"][:], np.float32)
        for name, (key, _) in wanted.items():
            r.values[key] = np.asarray(table[f"{r.key}/{name}"], np.float64)
        r.seconds = seconds / len(images) / len(supported)  # the store's mean per method
    _log(f"explain_dataset: {len(supported)} methods on {len(images)} images in {seconds:.0f} s")
    return maps


def direct_maps(model, row: Row, images, labels, args) -> np.ndarray:
    """The public function, for a method explain_dataset does not run (or an expensive one)."""
    method = row.method(args.batch_size)
    method(model, images[:2], labels[:2])  # trace first
    start = time.perf_counter()
    maps = method(model, images, labels)
    row.seconds = (time.perf_counter() - start) / len(images)
    return maps


def _saved(args) -> dict:
    """The per-image values written so far (``--json``), to resume or to report from."""
    if args.json is not None and args.json.exists() and (args.resume or args.report_only):
        return json.loads(args.json.read_text()).get("models", {})
    return {}


def _restore(row: Row, saved: dict) -> bool:
    entry = saved.get(row.key)
    if entry is None:
        return False
    row.values = {k: np.asarray(v, np.float64) for k, v in entry["values"].items()}
    row.seconds, row.times = entry["seconds_per_image"], entry.get("times", {})
    return True


def _checkpoint(args, stem: str, title: str, table: list[Row], progress: dict) -> None:
    """Writes every row done so far to ``--json`` (after each row: a long run can resume)."""
    if args.json is None:
        return
    progress.setdefault(stem, {"title": title, "rows": {}})
    progress[stem]["title"] = title
    for r in table:
        if r.values:
            progress[stem]["rows"][r.key] = {
                "label": r.label,
                "projection": r.projection,
                "seconds_per_image": r.seconds,
                "times": r.times,
                "values": {k: np.asarray(v).tolist() for k, v in r.values.items()},
            }
    args.json.write_text(json.dumps({"models": progress}))


def evaluate(path: Path, args, progress: dict) -> tuple[str, list[Row]]:
    saved = progress.get(path.stem, {})
    table = rows(args.methods)
    if args.report_only:
        table = [r for r in table if _restore(r, saved.get("rows", {}))]
        return saved["title"], table
    model = keras.models.load_model(path, compile=False)
    size = int(model.inputs[0].shape[1])
    images, labels, masks = datasets.shapes(args.n, size=size, seed=args.seed)
    logits = model.predict(images, batch_size=args.batch_size, verbose=0)
    accuracy = float((logits.argmax(-1) == labels).mean())
    title = (
        f"{path.name}: {args.n} held-out shapes images ({size} px, seed {args.seed}), accuracy "
        f"{accuracy:.3f}; maps explain the true class"
    )
    _log(title)
    done = {r.key for r in table if _restore(r, saved.get("rows", {}))}
    scorer = Scorer(model, images, labels, masks, args)

    def finish(row: Row, maps: np.ndarray, stored: bool, start: float) -> None:
        scorer.maps_only(row, maps)
        scorer.with_model(row, maps, stored)
        laps = ", ".join(f"{what} {t:.0f} s" for what, t in row.times.items())
        _log(
            f"  {row.label:<24} {row.projection:<10} {time.perf_counter() - start:6.0f} s ({laps})"
        )
        _checkpoint(args, path.stem, title, table, progress)

    store_dir = Path(args.store) / path.stem if args.store else Path(tempfile.mkdtemp()) / "s"
    # Every CAM under every projection through explain_dataset: the map-only metrics on all
    # its images (the costly CAMs on fewer); deletion and insertion on --n-model, below.
    for costly in (False, True):
        todo = [
            r
            for r in table
            if r.projection != "-" and r.key not in done and (r.label in COSTLY_CAMS) == costly
        ]
        k = min(args.n, args.n_costly_cam) if costly else args.n
        where = store_dir.with_name(f"{store_dir.name}-cams{int(costly)}")
        maps = stored_maps(model, todo, images[:k], labels[:k], masks[:k], args, where, False)
        for row in todo:
            start = time.perf_counter()
            if row.key not in maps:  # a CAM explain_dataset does not know: the public function
                maps[row.key] = direct_maps(model, row, images[:k], labels[:k], args)
            finish(row, maps.pop(row.key), False, start)
    others = [r for r in table if r.projection == "-" and r.key not in done]
    k = min(args.n, args.n_other)
    cheap = [r for r in others if not r.expensive]
    stored = stored_maps(model, cheap, images[:k], labels[:k], masks[:k], args, store_dir)
    for row in others:
        k = min(args.n, args.n_expensive if row.expensive else args.n_other)
        start = time.perf_counter()
        if row.key in stored:
            finish(row, stored[row.key], True, start)
        else:
            finish(row, direct_maps(model, row, images[:k], labels[:k], args), False, start)
    if not args.store:
        shutil.rmtree(store_dir.parent, ignore_errors=True)
    return title, table


# ----------------------------------------------------------------------------- reporting


def _cell(values: np.ndarray | None, digits: int = 3) -> str:
    if values is None or not np.isfinite(values).any():
        return "-"
    mean, low, high = bootstrap_ci(values, resamples=1000, seed=0)
    n = int(np.isfinite(values).sum())
    return f"{_num(mean, digits)} [{_num(low, digits)}, {_num(high, digits)}] n={n}"


def _num(value: float, digits: int = 3) -> str:
    """``digits`` decimals, or ``digits`` significant digits for values below 0.01 (infidelity
    and sensitivity are small numbers)."""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def _rounded(value: float) -> float:
    """The value at the tables' precision (3 significant digits), for ties."""
    return float(f"{value:.3g}")


def _counts(table: list[Row]) -> str:
    """The n behind each column, for the cheap and the expensive rows."""
    parts = []
    for key, title, _ in COLUMNS:
        ns = sorted({int(np.isfinite(r.values[key]).sum()) for r in table if key in r.values})
        parts.append(f"{title} n={'/'.join(str(v) for v in ns)}")
    return "; ".join(parts)


def markdown_table(table: list[Row], keys: list[str], seconds: bool = True) -> str:
    header = [
        "method",
        "projection",
        *(["s / image"] if seconds else []),
        *(TITLE[k] for k in keys),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table:
        timing = [f"{r.seconds:.4f}"] if seconds else []
        cells = [r.label, r.projection, *timing, *(_cell(r.values.get(k)) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite_mean(values: np.ndarray) -> float:
    """The mean over the finite values, as in the cells (``bootstrap_ci`` drops the others):
    max-sensitivity is inf on an image whose clean map is all zero and changes under noise."""
    values = np.asarray(values, np.float64)
    return float(values[np.isfinite(values)].mean())


def _paired(a: np.ndarray, b: np.ndarray, higher: bool) -> int:
    """+1 when ``a`` is better than ``b`` (a paired 95% bootstrap interval of the mean
    difference excludes 0 on the good side), -1 when worse, 0 for a tie."""
    k = min(len(a), len(b))
    diff = a[:k] - b[:k]
    diff = diff[np.isfinite(diff)]
    if diff.size == 0 or np.all(diff == 0):
        return 0
    _, low, high = bootstrap_ci(diff, resamples=1000, seed=0)
    if low > 0:
        return 1 if higher else -1
    if high < 0:
        return -1 if higher else 1
    return 0


#: The README's compact table: its metrics, and its rows (Grad-CAM's projections, the others).
COMPACT = ("pg_strict", "pg_standard", "energy", "deletion", "insertion")


def compact_table(results: list[tuple[str, list[Row]]], default: str) -> str:
    """Grad-CAM under every projection, the other CAMs under the ``default`` projection
    and every non-CAM method, one table per model."""
    parts = []
    for title, table in results:
        chosen = [r for r in table if r.label == "Grad-CAM" or r.projection in ("-", default)]
        body = markdown_table(chosen, list(COMPACT), seconds=False)
        parts.append(f"**{title.split(':')[0]}**\n\n{body}")
    return "\n\n".join(parts)


def settings(args) -> str:
    """The image counts and step counts of a run, as one line for the tables."""
    return (
        f"Images: all {args.n} for the map-only metrics of the CAMs (pointing games, energy, "
        f"sparseness, entropy; Score-CAM and Ablation-CAM on the first {args.n_costly_cam}); the "
        f"first {args.n_model} for deletion/insertion ({args.steps} steps), average drop, "
        f"increase in confidence and infidelity ({args.infidelity_samples} samples); the other "
        f"methods on the first {args.n_other} (LIME, KernelSHAP, RISE on {args.n_expensive}); "
        f"ROAD on {args.n_road} (fractions {args.road_fractions}); max-sensitivity on "
        f"{args.n_sensitivity} ({args.sensitivity_samples} samples, radius 0.02); cascading "
        f"randomization on {args.n_randomization}. Every cell gives its n. PG standard: "
        "15 px at 224 px, 9 px at 128 px; PG strict: 0 px."
    )


def compare(results: list[tuple[str, list[Row]]]) -> tuple[str, dict]:
    """Projection against projection on every CAM, metric and model.

    A (model, CAM, metric) comparison is won by the projection with the best mean (ties at 3
    significant digits shared). Against bilinear, a paired 95% bootstrap interval of the
    per-image difference decides better, worse or tied per CAM; a projection meets the goal
    "at least as good as bilinear on every metric, both models" when no CAM is worse on any
    (model, metric).
    """
    names = list(PROJECTIONS)
    rivals = [p for p in names if p != "bilinear"]
    wins = dict.fromkeys(names, 0.0)
    # the same count without the complexity metrics (concentration, not faithfulness)
    core = dict.fromkeys(names, 0.0)
    comparisons = 0
    lines = []
    losses: dict[str, list[str]] = {p: [] for p in rivals}
    for title, table in results:
        by = {(r.label, r.projection): r for r in table if r.projection != "-"}
        cams = [c[0] for c in CAMS if all((c[0], p) in by for p in names)]
        model = title.split(":")[0]
        for key, title_, higher in COLUMNS:
            if not cams or not all(key in by[(c, p)].values for c in cams for p in names):
                continue
            means = {
                p: np.mean([_finite_mean(by[(c, p)].values[key]) for c in cams]) for p in names
            }
            counts = {int(np.isfinite(by[(c, p)].values[key]).sum()) for c in cams for p in names}
            n = "/".join(str(v) for v in sorted(counts, reverse=True))
            for c in cams:
                m = {p: _rounded(_finite_mean(by[(c, p)].values[key])) for p in names}
                top = max(m.values()) if higher else min(m.values())
                winners = [p for p in names if m[p] == top]
                for p in winners:
                    wins[p] += 1 / len(winners)
                    if key not in ("sparseness", "entropy"):
                        core[p] += 1 / len(winners)
                comparisons += 1
            cells = []
            for p in rivals:
                verdicts = [
                    _paired(by[(c, p)].values[key], by[(c, "bilinear")].values[key], higher)
                    for c in cams
                ]
                better, worse = verdicts.count(1), verdicts.count(-1)
                cells.append(f"{better} / {len(cams) - better - worse} / {worse}")
                if worse:
                    lost = [c for c, v in zip(cams, verdicts, strict=True) if v == -1]
                    losses[p].append(f"{model} {title_} ({', '.join(lost)})")
            lines.append(
                f"| {model} | {title_} ({'higher' if higher else 'lower'} is better) | {n} | "
                + " | ".join(_num(means[p]) for p in names)
                + " | "
                + " | ".join(cells)
                + " |"
            )
    header = (
        "| model | metric | n | "
        + " | ".join(f"{p} (CAM mean)" for p in names)
        + " | "
        + " | ".join(f"{p} vs bilinear: better / tied / worse CAMs" for p in rivals)
        + " |\n|"
        + "---|" * (len(names) + len(rivals) + 3)
    )
    ranking = ", ".join(f"{p} {wins[p]:.1f}" for p in sorted(wins, key=lambda p: -wins[p]))
    winner = max(wins, key=wins.get)
    summary = [
        f"Wins over {comparisons} (model, CAM, metric) comparisons (best mean, ties shared): "
        f"{ranking}. Default: **{winner}**.",
        "Without sparseness and entropy (how concentrated a map is, not where it points): "
        + ", ".join(f"{p} {core[p]:.1f}" for p in sorted(core, key=lambda p: -core[p]))
        + ".",
    ]
    for p in rivals:
        if losses[p]:
            summary.append(
                f"Goal (at least as good as bilinear on every metric, both models) for {p}: "
                f"**not met**; worse than bilinear (paired 95% bootstrap) on "
                + "; ".join(losses[p])
                + "."
            )
        else:
            summary.append(
                f"Goal (at least as good as bilinear on every metric, both models) for {p}: "
                "**met** (no CAM worse than bilinear on any metric, paired 95% bootstrap)."
            )
    text = header + "\n" + "\n".join(lines) + "\n\n" + "\n\n".join(summary)
    decision = {"wins": wins, "core_wins": core, "winner": winner, "losses": losses}
    return text, {**decision, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="held-out images (default 500)")
    parser.add_argument("--seed", type=int, default=12345, help="dataset seed (not a train seed)")
    parser.add_argument("--n-costly-cam", type=int, default=100, help="Score/Ablation-CAM maps")
    parser.add_argument(
        "--n-model", type=int, default=50, help="deletion, insertion, drop, increase, infidelity"
    )
    parser.add_argument("--n-other", type=int, default=50, help="images, non-CAM methods")
    parser.add_argument("--n-road", type=int, default=10, help="images for ROAD")
    parser.add_argument(
        "--road-fractions", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9]
    )
    parser.add_argument("--n-sensitivity", type=int, default=20, help="images, max-sensitivity")
    parser.add_argument("--n-randomization", type=int, default=20, help="images, randomization")
    parser.add_argument("--n-expensive", type=int, default=10, help="images, LIME/SHAP/RISE")
    parser.add_argument("--steps", type=int, default=10, help="deletion/insertion steps")
    parser.add_argument("--infidelity-samples", type=int, default=8)
    parser.add_argument("--sensitivity-samples", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=50, help="images per explanation pass")
    parser.add_argument(
        "--perturbation-batch", type=int, default=256, help="perturbed images per forward pass"
    )
    parser.add_argument("--methods", nargs="*", default=None, help="labels or function names")
    parser.add_argument("--models", nargs="*", type=Path, default=list(MODELS))
    parser.add_argument("--store", default=None, help="keep the explain_dataset stores here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--readme", type=Path, default=None, help="the compact table here")
    parser.add_argument("--json", type=Path, default=None, help="per-image values, row by row")
    parser.add_argument("--resume", action="store_true", help="skip the rows in --json")
    parser.add_argument("--report-only", action="store_true", help="tables from --json only")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    keras.config.disable_interactive_logging()
    tf.get_logger().setLevel("ERROR")
    started = time.perf_counter()
    progress = _saved(args)
    results = [evaluate(path, args, progress) for path in args.models]
    comparison, decision = compare(results)
    keys_a = [
        "pg_strict",
        "pg_standard",
        "energy",
        "deletion",
        "insertion",
        "road_morf",
        "road_lerf",
    ]
    keys_b = [
        "drop",
        "increase",
        "infidelity",
        "sensitivity",
        "randomization",
        "sparseness",
        "entropy",
    ]
    sections = []
    for title, table in results:
        sections.append(
            f"### {title}\n\n{_counts(table)}\n\n{markdown_table(table, keys_a)}\n\n"
            f"{markdown_table(table, keys_b)}"
        )
    minutes = (time.perf_counter() - started) / 60
    text = (
        settings(args)
        + "\n\n"
        + "\n\n".join(sections)
        + f"\n\n### Projections compared\n\n{comparison}\n"
    )
    if not args.report_only:
        text += f"\nThis run took {minutes:.0f} min on the development machine (2 shared cores).\n"
    print(text, flush=True)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
        _log(f"wrote {args.markdown}")
    if args.readme is not None:
        args.readme.write_text(compact_table(results, decision["winner"]) + "\n")
        _log(f"wrote {args.readme}")
    for line in decision["summary"]:
        _log("SUMMARY " + line.replace("**", ""))
    if args.json is not None and not args.report_only:
        payload = json.loads(args.json.read_text())
        payload["decision"] = {"wins": decision["wins"], "winner": decision["winner"]}
        args.json.write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
