"""The ``kerasviz demo`` report: both demo models on held-out synthetic shapes with exact masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasviz.datasets import CLASS_NAMES, shapes
from kerasviz.report.budget import Budget
from kerasviz.report.page import Report
from kerasviz.report.progress import Progress
from kerasviz.report.schedule import analyze
from kerasviz.report.sections import SectionSpec
from kerasviz.report.subject import InputSpace, Settings, Subject

DEMO_SEED = 2024  # held out: the demo models are trained on other seeds


def _two_object_image(images: np.ndarray, labels: np.ndarray, masks: np.ndarray):
    """Pastes the object of one image into another with a different class, without overlap."""
    grown = masks.copy()
    for axis in (1, 2):  # dilate by 4 px so the objects do not touch
        for shift in range(1, 5):
            grown |= np.roll(masks, shift, axis) | np.roll(masks, -shift, axis)
    for i in range(len(images)):
        for j in range(len(images)):
            if labels[i] != labels[j] and not np.any(grown[i] & grown[j]):
                image = np.where(masks[j][..., None], images[j], images[i])
                return image, (int(labels[i]), int(labels[j]))
    return None


def build_demo_report(
    out: str | Path,
    models: Sequence[Any],
    *,
    settings: Settings,
    progress: Progress | Callable[[str], None] | None = None,
    budget: Budget | None = None,
    sections: Sequence[SectionSpec] | None = None,
) -> Path:
    """Writes the demo report of ``models`` (one input size) into ``out``; returns its path.

    Both models are analysed on the same held-out synthetic shapes images, and scored on their
    exact masks (localization). ``progress``, ``budget`` and ``sections`` are as in
    :func:`~kerasviz.report.schedule.analyze`.
    """
    size = int(models[0].inputs[0].shape[1])
    n = max(settings.localization, settings.show)
    images, labels, masks = shapes(n, size=size, seed=DEMO_SEED)
    space = InputSpace.identity(3)
    pair = _two_object_image(images, labels, masks)
    subjects = [
        Subject(
            name=model.name,
            model=model,
            inputs=images,
            display=images,
            names=[f"#{i} {CLASS_NAMES[c]}" for i, c in enumerate(labels)],
            space=space,
            class_names=CLASS_NAMES,
            labels=labels,
            masks=masks,
            pair=(pair[0], pair[0], pair[1]) if pair is not None else None,
        )
        for model in models
    ]
    report = Report(
        out,
        "kerasviz demo",
        f"{' and '.join(m.name for m in models)} on {n} held-out synthetic shapes images "
        f"({size}x{size}) with ground-truth masks.",
    )
    analyze(report, subjects, settings, progress=progress, budget=budget, sections=sections)
    return report.write()
