"""Running the sections: in page order at the full settings, or planned to fit a time budget.

With a budget, the model's costs are measured first (:func:`~kerasviz.report.budget.measure`).
The sections then run in :data:`RUN_ORDER`: fixed costs first, optimizations last (they stop
at their deadline with what they have, so they absorb what earlier estimates got wrong, filter
patterns last of all). Each planned section gets its weight's share of the seconds left, never
less than its minimum while the minimums of the sections after it still fit; one whose minimum
cannot fit is skipped with a note naming the ``--budget`` that would include it. After every
section the estimates are corrected by how long it really took. The page keeps the order of
:data:`~kerasviz.report.sections.SECTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from kerasviz.report.budget import Budget, Costs, Knobs, Work, fit, measure, suggest_budget
from kerasviz.report.page import Report, Section
from kerasviz.report.progress import Progress
from kerasviz.report.sections import SECTIONS, SectionSpec
from kerasviz.report.subject import Settings, Subject, prepare

#: Sections that cannot stop early plan for this share of their time (estimates lag the load).
MARGIN = 0.85
#: An optimization runs when this share of its minimum fits; it stops at its deadline.
ELASTIC_FLOOR = 0.4

#: Run order with a budget: fixed costs first, then the planned sections, filter patterns last.
RUN_ORDER = (
    "predictions",
    "layers",
    "filters",
    "feature-maps",
    "grad-cam",
    "signed-cam",
    "more-cams",
    "adversarial",
    "gradients",
    "blackbox",
    "inversion",
    "localization",
    "neuron-patterns",
    "filter-patterns",
)


def _run_position(spec: SectionSpec) -> int:
    """Where a section runs with a budget; one missing from :data:`RUN_ORDER` runs mid-way."""
    return RUN_ORDER.index(spec.id if spec.id in RUN_ORDER else "gradients")


def select_sections(names: Sequence[str] | None) -> list[SectionSpec]:
    """The sections named (``grad_cam`` or ``grad-cam``), in page order; None for all.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    if names is None:
        return list(SECTIONS)
    by_name = {spec.name: spec for spec in SECTIONS}
    wanted = [str(n).strip().replace("-", "_") for n in names if str(n).strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted:
        raise ValueError(
            f"Expected `sections` to name report sections. Received: "
            f"{', '.join(unknown) if unknown else 'none'}. Valid: {', '.join(by_name)}."
        )
    return [spec for spec in SECTIONS if spec.name in wanted]


def _knobs(spec: SectionSpec, subjects: list[Subject], settings: Settings, costs) -> Knobs:
    if spec.cost is None:
        return Knobs({}, cost=lambda k: 1.0, backward=False)
    return spec.cost(subjects, settings, costs)


class _Runner:
    """Runs sections into their page slots, with progress, and times them."""

    def __init__(self, report: Report, specs: list[SectionSpec], progress: Progress, budget):
        self.slots: dict[str, Section] = {
            spec.id: report.section(spec.id, spec.title, spec.intro) for spec in specs
        }
        self.count = len(specs)
        self.done = 0
        self.progress = progress
        self.budget = budget
        self.shared: dict = {}

    def run(self, spec: SectionSpec, subjects, settings: Settings, deadline=None) -> float:
        self.done += 1
        left = self.budget.left()
        tail = f" ({max(left, 0):.0f} s of the budget left)" if left != float("inf") else ""
        self.progress.start(f"[{self.done:2d}/{self.count}] {spec.title}{tail}")
        work = Work(
            deadline=deadline,
            clock=self.budget.clock,
            advance=self.progress.advance,
            expect=self.progress.expect,
            shared=self.shared,
        )
        start = self.budget.clock()
        spec.build(subjects, replace(settings, work=work), self.slots[spec.id])
        seconds = self.budget.clock() - start
        self.progress.finish(f"[{self.done:2d}/{self.count}] {spec.title}: {seconds:.1f} s")
        return seconds

    def skip(self, spec: SectionSpec, text: str) -> None:
        self.done += 1
        self.slots[spec.id].text(text, note=True)
        self.progress.message(f"[{self.done:2d}/{self.count}] {spec.title}: skipped")


def analyze(
    report: Report,
    subjects: Sequence[Subject],
    settings: Settings,
    *,
    layer: Any = None,
    target: int | None = None,
    progress: Progress | Callable[[str], None] | None = None,
    budget: Budget | None = None,
    sections: Sequence[SectionSpec] | None = None,
    costs: dict[int, Costs] | None = None,
) -> Report:
    """Adds the sections to ``report``; the first subject is the main one.

    Every subject is prepared first (:func:`prepare`: the scores, the targets and the CAM layer,
    ``layer`` for the first subject), then the sections read them. Sections about one model
    (feature maps, filters, optimization, inversion, FGSM) use the first subject; predictions,
    layers, Grad-CAM and localization cover every subject.

    Args:
        report: the page to fill.
        subjects: the models and their images.
        settings: the sizes asked for (the full ones, or :meth:`Settings.fast`).
        layer, target: the CAM layer and the class explained (defaults: last conv, predicted).
        progress: a :class:`~kerasviz.report.progress.Progress`, or a function that gets a line
            per section.
        budget: a :class:`~kerasviz.report.budget.Budget`; None or ``budget.full`` runs every
            section at ``settings``.
        sections: the sections to run (default: all), e.g. from :func:`select_sections`.
        costs: measured :class:`~kerasviz.report.budget.Costs` by ``id(model)``, to skip the
            measurement (tests).

    Raises:
        ValueError: ``layer`` is not a layer of the first model.
    """
    if not isinstance(progress, Progress):
        progress = Progress(progress)
    budget = budget or Budget(None)
    specs = list(SECTIONS if sections is None else sections)
    start = budget.clock()
    prepared = [
        prepare(s, layer=layer if k == 0 else None, target=target) for k, s in enumerate(subjects)
    ]
    forward = (budget.clock() - start) / max(sum(len(s.inputs) for s in prepared), 1)
    runner = _Runner(report, specs, progress, budget)
    if budget.full:
        for spec in specs:
            runner.run(spec, prepared, settings)
        return report
    _planned(report, runner, specs, prepared, settings, budget, forward, costs)
    return report


def _measure_all(subjects: list[Subject], forward: float, budget: Budget, progress: Progress):
    measured: dict[int, Costs] = {}
    for s in subjects:
        if id(s.model) not in measured:
            measured[id(s.model)] = measure(s.model, s.inputs[:1], s.targets[:1], forward)
    for s in subjects:
        c = measured[id(s.model)]
        progress.message(
            f"{s.name}: forward {c.forward:.3g} s, forward+backward {c.backward:.3g} s per "
            f"image, first call {c.trace:.3g} s more; {max(budget.left(), 0):.0f} s of the "
            f"{budget.seconds:g} s budget left"
        )
    return measured


def _planned(report, runner, specs, prepared, settings, budget, forward, costs) -> None:
    if costs is None:
        costs = _measure_all(prepared, forward, budget, runner.progress)
    costs_of = lambda s: costs[id(s.model)]  # noqa: E731
    main = costs_of(prepared[0])
    report.note(
        f"Planned for a {budget.seconds:g} s time budget (--budget; --full for the full "
        f"settings): one forward pass of {prepared[0].name} takes {main.forward:.3g} s and one "
        f"forward+backward pass {main.backward:.3g} s per image on this machine."
    )
    slowest = max(costs_of(s).backward for s in prepared)
    order = sorted(specs, key=_run_position)
    knobs = {spec.id: _knobs(spec, prepared, settings, costs_of) for spec in order}
    minimum = {k: v.cost(v.minimum()) for k, v in knobs.items()}
    backward_ok = slowest <= budget.left()
    for k, spec in enumerate(order):
        kn = knobs[spec.id]
        if kn.backward and not backward_ok:
            need = budget.elapsed() + sum(budget.estimate(m) for m in minimum.values())
            runner.skip(
                spec,
                f"Skipped: one forward+backward pass takes {slowest:.3g} s per image, more than "
                f"the {max(budget.left(), 0):.0f} s left of the {budget.seconds:g} s budget. "
                f"--budget {suggest_budget(need)} would include this section.",
            )
            continue
        later = [s for s in order[k + 1 :] if backward_ok or not knobs[s.id].backward]
        later_min = sum(budget.estimate(minimum[s.id]) for s in later)
        left = budget.left()
        own_min = budget.estimate(minimum[spec.id])
        if kn.weight:
            fixed = sum(
                budget.estimate(knobs[s.id].cost(knobs[s.id].start))
                for s in later
                if not knobs[s.id].weight
            )
            weights = kn.weight + sum(knobs[s.id].weight for s in later)
            share = (left - fixed) * kn.weight / weights
            allowed = min(max(share, own_min), left - later_min)
        else:
            allowed = left - later_min
        # An optimization stops at its deadline with what it has: it runs on a part of its
        # minimum; any other section needs all of it.
        if kn.backward and own_min * (ELASTIC_FLOOR if kn.elastic else 1.0) > left:
            runner.skip(
                spec,
                f"Skipped to stay within the {budget.seconds:g} s budget: at its smallest "
                f"({kn.describe(kn.minimum()) or 'as planned'}) this section needs about "
                f"{own_min:.0f} s and {max(left, 0):.0f} s were left. --budget "
                f"{suggest_budget(budget.seconds + own_min - max(left, 0))} would include it.",
            )
            continue
        target = allowed if kn.elastic else allowed * MARGIN
        chosen = kn.start
        if kn.stages and kn.cost(kn.start) > 0 and budget.estimate(kn.cost(kn.start)) > target:
            chosen, _ = fit(
                lambda v, kn=kn: budget.estimate(kn.cost(v)), kn.start, kn.stages, target
            )
        lowered = chosen != kn.start
        planned = replace(settings, **chosen, budgeted=lowered or settings.budgeted)
        if lowered:
            runner.slots[spec.id].text(
                f"Within the time budget: {kn.describe(chosen)} (asked for: "
                f"{kn.describe(kn.start)}; --full runs them all).",
                note=True,
            )
        predicted = kn.cost(chosen)
        deadline = None
        if kn.elastic:
            deadline = budget.clock() + min(max(allowed, budget.estimate(predicted)), left)
        seconds = runner.run(spec, prepared, planned, deadline)
        budget.observe(predicted, seconds)


def build_report(
    out: str | Path,
    subject: Subject,
    *,
    settings: Settings,
    layer: Any = None,
    target: int | None = None,
    title: str = "kerasviz report",
    progress: Progress | Callable[[str], None] | None = None,
    budget: Budget | None = None,
    sections: Sequence[SectionSpec] | None = None,
) -> Path:
    """Writes the report of one model on its images into ``out``; returns the HTML path.

    ``budget`` and ``sections`` are as in :func:`analyze`.
    """
    report = Report(out, title, f"{subject.name}: {len(subject.inputs)} images")
    analyze(
        report,
        [subject],
        settings,
        layer=layer,
        target=target,
        progress=progress,
        budget=budget,
        sections=sections,
    )
    return report.write()


def elapsed_line(path: Path, budget: Budget) -> str:
    """``wrote PATH in N s`` (of the budget, when there is one)."""
    of = f" (budget {budget.seconds:g} s)" if not budget.full else ""
    return f"wrote {path} in {budget.elapsed():.1f} s{of}"
