"""The report's time budget: what the model costs, and how much of each analysis fits.

Before the sections run, :func:`measure` times one forward pass and one forward+backward pass
of the model (and the first, traced call, which every new compiled step pays again). A
section's cost is then estimated from those numbers: rows of forward+backward work, scaled by
the share of the model's multiply-adds a truncated view runs and by the canvas area, plus a
trace per compiled step. Each heavy section lowers its sizes stage by stage (:func:`fit`) until
its estimate fits its share of the time left. :class:`Budget` keeps the clock and corrects
later estimates by how far the earlier ones were off (the machine's load changes), and
:class:`Work` lets a running optimization stop at its deadline with the images it has.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasviz._graph import is_graph_model, iter_layers
from kerasviz._layers import output_shape

#: The default budget in seconds on a CPU; with a GPU the default is the full settings.
CPU_BUDGET = 120.0
#: Deadline checks per optimization (each keeps a snapshot of the images).
CHECKS = 16
#: Kept back for writing the page and the process's exit, as a share of the budget.
RESERVE = 0.05


def multiply_adds(model: Any) -> list[tuple[str, float, float]]:
    """``(path, multiply-adds, elementwise work)`` per image for every leaf layer, in graph order.

    Convolutions and dense layers count ``output positions * kernel size`` multiply-adds; every
    layer counts its output size as elementwise work (normalization, activations, merges),
    which costs a CPU far more per operation than a multiply-add in a large convolution.
    """
    rows = []
    for path, layer in iter_layers(model):
        if is_graph_model(layer):
            continue
        try:
            shape = output_shape(layer)
        except (AttributeError, ValueError, IndexError):
            continue
        if any(s is None for s in shape[1:]):
            rows.append((path, 0.0, 0.0))
            continue
        positions = float(np.prod(shape[1:-1])) if len(shape) > 2 else 1.0
        macs = 0.0
        for weight in layer.weights:
            name = weight.path.rsplit("/", 1)[-1]
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                macs += positions * float(np.prod(weight.shape))
        rows.append((path, macs, float(np.prod(shape[1:]))))
    return rows


#: A multiply-add in a convolution costs about this share of an elementwise operation on a CPU.
ELEMENTWISE = 8.0


@dataclass(frozen=True)
class Costs:
    """What one image costs the model, measured at its input size.

    Attributes:
        forward: seconds per image for a forward pass.
        backward: seconds per image for a forward and a backward pass (input gradients).
        trace: seconds to trace and compile one new forward+backward step.
        work: share of the model's work up to and including each layer path (0..1].
        layers: share of the model's layers up to each path (tracing grows with it).
    """

    forward: float
    backward: float
    trace: float
    work: dict[str, float] = field(default_factory=dict)
    layers: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: Any, forward: float, backward: float, trace: float) -> Costs:
        """Costs with the per-layer shares of ``model``'s work (see :func:`multiply_adds`)."""
        rows = multiply_adds(model)
        weights = np.array([m + ELEMENTWISE * e for _, m, e in rows], np.float64)
        total = max(float(weights.sum()), 1.0)
        work = np.cumsum(weights) / total
        count = np.arange(1, len(rows) + 1) / max(len(rows), 1)
        return cls(
            forward,
            backward,
            trace,
            {p: float(w) for (p, _, _), w in zip(rows, work, strict=True)},
            {p: float(c) for (p, _, _), c in zip(rows, count, strict=True)},
        )

    def rows(self, n: float, layer: str | None = None, area: float = 1.0) -> float:
        """Seconds for ``n`` forward+backward rows through ``layer`` on ``area`` of the input."""
        share = 1.0 if layer is None else self.work.get(layer, 1.0)
        return n * self.backward * max(share * area, 0.02)

    def forward_rows(self, n: float, share: float = 1.0) -> float:
        """Seconds for ``n`` forward-only rows in compiled batches, through ``share`` of the
        model's work (a tail after a layer: ``1 - work[layer]``).

        A batched row costs about half a forward+backward row; the measured forward pass (one
        eager call) is an upper bound that small models overshoot.
        """
        return n * min(self.forward, self.backward / 2) * max(share, 0.02)

    def compile(self, layer: str | None = None, factor: float = 1.0) -> float:
        """Seconds to trace a new step through ``layer`` (an optimization loop: ``factor`` 2)."""
        share = 1.0 if layer is None else self.layers.get(layer, 1.0)
        return self.trace * factor * max(share, 0.05)


def measure(model: Any, image: np.ndarray, target: Any, forward_seconds: float) -> Costs:
    """Times two forward+backward passes of one image (the first one traces the step).

    The passes are :func:`kerasviz.saliency` calls, so a report that shows one image's saliency
    for the same target reuses the traced step.

    Args:
        model: the model.
        image: one model input ``(1, h, w, c)``.
        target: its class, ``(1,)``.
        forward_seconds: seconds per image of a forward pass, already measured.
    """
    import kerasviz

    start = time.perf_counter()
    kerasviz.saliency(model, image, target)
    first = time.perf_counter() - start
    start = time.perf_counter()
    kerasviz.saliency(model, image, target)
    second = time.perf_counter() - start
    return Costs.from_model(model, forward_seconds, second, max(first - second, 0.0))


def fit(
    cost: Callable[[dict[str, Any]], float],
    start: dict[str, Any],
    stages: Sequence[tuple[str, Any]],
    seconds: float,
) -> tuple[dict[str, Any], bool]:
    """Lowers the knobs of ``start`` stage by stage until ``cost(knobs) <= seconds``.

    Each stage ``(name, floor)`` lowers one knob towards ``floor``: if the floor fits, the
    largest value that fits is kept (a binary search, the cost growing with every knob) and
    the search stops; otherwise the knob stays at its floor and the next stage runs. Knobs
    never rise above their start.

    Returns:
        ``(knobs, fits)``: the chosen knobs, and whether they fit (otherwise the minimum).

    Example:
        >>> fit(lambda k: k["steps"] * k["channels"], {"steps": 96, "channels": 32},
        ...     [("steps", 32), ("channels", 8)], 512)
        ({'steps': 32, 'channels': 16}, True)
    """
    knobs = dict(start)
    if cost(knobs) <= seconds:
        return knobs, True
    for name, floor in stages:
        floor = min(int(floor), int(knobs[name]))
        trial = {**knobs, name: floor}
        if cost(trial) <= seconds:
            low, high = floor, int(knobs[name])
            while low < high:
                mid = (low + high + 1) // 2
                if cost({**knobs, name: mid}) <= seconds:
                    low = mid
                else:
                    high = mid - 1
            knobs[name] = low
            return knobs, True
        knobs = trial
    return knobs, False


def suggest_budget(seconds: float) -> int:
    """A round ``--budget`` at least ``seconds``: up to the next 10 s (next 60 s above 10 min)."""
    step = 60 if seconds > 600 else 10
    return int(max(step, math.ceil(seconds * 1.1 / step) * step))


class OutOfTime(Exception):
    """Raised inside an optimization's callback at its deadline; holds the images so far."""

    def __init__(self, images: np.ndarray, steps: int):
        super().__init__(f"stopped after {steps} steps at the time budget")
        self.images = images
        self.steps = steps


class Budget:
    """The report's clock: the seconds allowed, the seconds left, and an estimate correction.

    Args:
        seconds: the budget; None or 0 for the full settings (no planning).
        clock: a ``time.perf_counter``-like function.
        start: the clock value the budget counts from (default: now); the command passes the
            moment it started, so loading the model counts too.
    """

    def __init__(
        self,
        seconds: float | None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        start: float | None = None,
    ):
        self.seconds = float(seconds) if seconds else None
        self.clock = clock
        self.start = clock() if start is None else start
        self.correction = 1.0

    @property
    def full(self) -> bool:
        """True when nothing is planned down: today's full settings."""
        return self.seconds is None

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left before the budget ends, minus what writing the page needs."""
        if self.seconds is None:
            return math.inf
        return self.seconds * (1.0 - RESERVE) - self.elapsed()

    def estimate(self, seconds: float) -> float:
        """An estimate corrected by how far the earlier ones were off."""
        return seconds * self.correction

    def observe(self, predicted: float, actual: float) -> None:
        """Moves the correction towards ``actual / predicted`` (estimates of 1 s or more)."""
        if predicted >= 1.0 and actual > 0:
            ratio = min(max(actual / (predicted * self.correction), 0.25), 4.0)
            self.correction = float(np.clip(self.correction * ratio**0.6, 0.3, 5.0))


@dataclass
class Work:
    """What a running section reports to: progress units, and the deadline of optimizations.

    Attributes:
        deadline: the clock value at which optimizations stop (None: never).
        clock: the budget's clock.
        advance: ``advance(units)`` moves the section's progress bar.
        expect: ``expect(units)`` sets how many units the section will report.
        shared: results one section computes for a later one in the same report (the signed
            CAM's rows ride in Grad-CAM's batch).
    """

    deadline: float | None = None
    clock: Callable[[], float] = time.perf_counter
    advance: Callable[[float], None] = lambda units: None
    expect: Callable[[float], None] = lambda units: None
    shared: dict = field(default_factory=dict)

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - self.clock()

    def optimization(self, steps: int) -> dict[str, Any]:
        """Keyword arguments for ``maximize``/``filter_patterns``/``invert``: progress and the
        deadline, checked every sixteenth of the steps (:class:`OutOfTime` carries the images).

        The run stops at a check when the next stretch of steps, as long as the last one took,
        would end past the deadline: it ends before its deadline, not one stretch after.
        """
        every = max(1, math.ceil(steps / CHECKS))
        done, last = [0], [self.clock()]

        def callback(step: int, images: np.ndarray, rows: slice) -> None:
            self.advance(step - done[0])
            done[0] = step
            now = self.clock()
            stretch, last[0] = now - last[0], now
            if step < steps and self.deadline is not None and now + stretch > self.deadline:
                raise OutOfTime(images, step)

        return {"snapshot_every": every, "callback": callback, "progress": False}


def run_optimization(work: Work | None, steps: int, run: Callable[..., Any]) -> tuple[Any, int]:
    """``run(**kwargs)`` with ``work``'s progress and deadline; returns ``(images, steps done)``.

    ``run`` returns images or a result with ``.images``; at the deadline the images of the last
    check are returned instead.
    """
    if work is None:
        result = run()
        return np.asarray(getattr(result, "images", result)), steps
    try:
        result = run(**work.optimization(steps))
    except OutOfTime as stop:
        return stop.images, stop.steps
    work.advance(steps % max(1, math.ceil(steps / CHECKS)) or 0)
    return np.asarray(getattr(result, "images", result)), steps


@dataclass
class Knobs:
    """How a section's cost depends on its sizes, for :func:`fit`.

    Attributes:
        start: the sizes asked for (:class:`~kerasviz.report.subject.Settings` field names).
        stages: ``(name, floor)`` in the order they are lowered; the last floors are the
            section's minimum.
        cost: estimated seconds for given sizes (uncorrected).
        describe: what the sizes mean, for captions: "16 of 512 channels, 40 steps".
        weight: the section's share of the time left (0: a fixed cost, run as asked).
        backward: the section runs the model many times (forward+backward passes, or a
            black-box method's many forward passes): it is skipped, naming the ``--budget``
            that would include it, when one forward+backward pass or its minimum cannot fit.
        elastic: the section's optimizations stop at its deadline with the images so far
            (:class:`Work`), so it may start with less than its minimum.
    """

    start: dict[str, Any]
    stages: list[tuple[str, Any]] = field(default_factory=list)
    cost: Callable[[dict[str, Any]], float] = lambda knobs: 1.0
    describe: Callable[[dict[str, Any]], str] = lambda knobs: ""
    weight: float = 0.0
    backward: bool = True
    elastic: bool = False

    def minimum(self) -> dict[str, Any]:
        """The sizes with every stage at its floor."""
        return fit(self.cost, self.start, self.stages, -math.inf)[0]
