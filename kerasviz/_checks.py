"""Argument checks shared by every public function: one place, one wording.

Each check returns the normalized value or raises a ValueError that names the argument, what
was expected and what was received (DESIGN.md, house rule 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (numpy ints included, bools not) in ``[minimum, maximum]``."""
    ok = _is_int(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            raise ValueError(
                f"Expected `{name}` to be an int in [{minimum}, {maximum}]. "
                f"Received: {name}={value!r}."
            )
        if minimum is not None:
            what = f"an int >= {minimum}"
        elif maximum is not None:
            what = f"an int <= {maximum}"
        else:
            what = "an int"
        raise ValueError(f"Expected `{name}` to be {what}. Received: {name}={value!r}.")
    return int(value)


def positive_int(value: Any, name: str) -> int:
    """An int >= 1 (a count: steps, samples, channels, rows per pass)."""
    return integer(value, name, minimum=1)


def optional_positive_int(value: Any, name: str) -> int | None:
    """None, or an int >= 1."""
    return None if value is None else positive_int(value, name)


def number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """A finite real number in the interval from ``low`` to ``high`` (open ends as told)."""
    ok = _is_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        if low is not None and high is not None:
            what = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        elif low is not None:
            what = f"{'>' if open_low else '>='} {low}"
        elif high is not None:
            what = f"{'<' if open_high else '<='} {high}"
        else:
            what = "finite"
        raise ValueError(f"Expected `{name}` to be a number {what}. Received: {name}={value!r}.")
    return float(value)


def boolean(value: Any, name: str) -> bool:
    """True or False (numpy bools included)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"Expected `{name}` to be True or False. Received: {name}={value!r}.")
    return bool(value)


def choice(value: Any, allowed: Sequence[Any], name: str) -> Any:
    """One of ``allowed`` (strings, None or other hashable constants)."""
    hashable = value is None or isinstance(value, str | int | float | bool)
    if not hashable or value not in allowed:
        raise ValueError(
            f"Expected `{name}` to be one of {list(allowed)}. Received: {name}={value!r}."
        )
    return value


def value_range(value: Any, name: str = "value_range") -> tuple[float, float]:
    """``(low, high)`` with finite ``low < high``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low, high = math.nan, math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"Expected `{name}` to be (low, high) with finite low < high. "
            f"Received: {name}={value!r}."
        )
    return low, high


def in_value_range(
    array: np.ndarray, bounds: tuple[float, float], name: str, range_name: str = "value_range"
) -> None:
    """Rejects pixels outside ``bounds``: nothing is ever clipped silently.

    The message gives the inputs' actual range and the two usual ways out.
    """
    if array.size == 0:
        return
    low, high = float(np.min(array)), float(np.max(array))
    # A float32 round trip of the bounds must not reject images exactly at the bounds.
    slack = 1e-6 * max(1.0, abs(bounds[0]), abs(bounds[1]))
    if low < bounds[0] - slack or high > bounds[1] + slack:
        raise ValueError(
            f"Expected `{name}` values inside {range_name}={tuple(bounds)}. Received: values "
            f"in [{low:g}, {high:g}]. Pass `{range_name}` matching the images (for example "
            f"(0, 255) for 8-bit images fed to a model that rescales inside), or rescale them."
        )


def finite(array: np.ndarray, name: str) -> None:
    """Rejects NaN and Inf."""
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Expected `{name}` to be finite. Received: values with NaN or Inf.")
