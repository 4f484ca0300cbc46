"""Synthetic images with ground-truth masks: one shape on a cluttered, textured background.

Every image holds exactly one object (circle, square, triangle or star) with a random position,
size and colour, upright up to a small random tilt. The background is smooth colour noise with a
gradient, soft blotches and hard-edged distractor strokes (lines and arcs) whose colours come
from the same distribution as the object's, so colour is no cue: a classifier has to find the
object and read its shape. The object's colour is chosen to contrast with the background under
it (in RGB and in luminance), so it always stays visible. The mask is exactly the set of pixels
painted with the object's colour, so localization metrics have a true answer.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("circle", "square", "triangle", "star")

_CHUNK = 64  # images rendered at once; bounds the memory of the vectorised rendering
_LINES = 4  # distractor line slots per image (each switched off at random)
_ARCS = 2  # distractor arc slots per image
_BLOTCHES = 4  # soft blotches per image
_MAX_VERTICES = 10  # polygons are padded to this many vertices (the star has 10)
_CANDIDATES = 12  # colours tried per object to find one that contrasts with its background
_MIN_CONTRAST = 0.5  # Euclidean RGB distance wanted between object and mean background under it
_MIN_LUMA = 0.3  # luminance difference wanted too: an edge that does not rely on hue alone
_BG_SPREAD = 0.6  # background values are squeezed towards 0.5 by this factor
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RADIUS = (0.18, 0.32)  # object circumradius range, as a fraction of the image size
_TILT_DEGREES = 10.0  # shapes are upright up to this rotation either way
_F = np.float32


def _interp_matrix(grid: int, size: int) -> np.ndarray:
    """``(size, grid)`` weights that upsample a ``grid``-point signal smoothly to ``size`` pixels."""
    pos = np.linspace(0.0, grid - 1.0, size)
    i0 = np.minimum(np.floor(pos).astype(int), grid - 2)
    t = pos - i0
    t = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible creases at the grid points
    m = np.zeros((size, grid), _F)
    m[np.arange(size), i0] = 1.0 - t
    m[np.arange(size), i0 + 1] = t
    return m


def _upsample(low: np.ndarray, size: int) -> np.ndarray:
    """Upsample ``low`` ``(b, g, g, c)`` smoothly to ``(b, size, size, c)`` with two GEMMs."""
    b, g, _, c = low.shape
    m = _interp_matrix(g, size)
    x = np.ascontiguousarray(np.transpose(low, (0, 1, 3, 2))).reshape(-1, g) @ m.T
    x = np.transpose(x.reshape(b, g, c, size), (0, 1, 3, 2))  # columns done: (b, g, size, c)
    return np.matmul(m, np.ascontiguousarray(x).reshape(b, g, size * c)).reshape(b, size, size, c)


def _background(p: dict, size: int) -> np.ndarray:
    """Smooth textured background ``(b, size, size, 3)``, composed on a coarse grid.

    Noise at three scales, a linear colour gradient and soft Gaussian blotches are all smooth,
    so they are mixed on a ``g x g`` grid and upsampled once.
    """
    g = p["low3"].shape[1]
    img = _upsample(p["low1"], g)
    img += _F(0.45) * (_upsample(p["low2"], g) - _F(0.5))
    img += _F(0.15) * (p["low3"] - _F(0.5))
    # Pixel coordinates of the grid points under _interp_matrix.
    at = (np.arange(g, dtype=_F) * _F((size - 1) / (g - 1)) + _F(0.5))[None, :]
    c = at - _F(size / 2.0)
    ramp = p["g_cos"][:, None, None] * c[:, None, :] + p["g_sin"][:, None, None] * c[:, :, None]
    img += (ramp / _F(size))[..., None] * p["g_colour"][:, None, None, :]
    for k in range(_BLOTCHES):  # a fixed count of layers painted in order
        s2 = (2.0 * p["bl_s"][:, k] ** 2)[:, None]
        gx = np.exp(-((at - p["bl_x"][:, k, None]) ** 2) / s2)
        gy = np.exp(-((at - p["bl_y"][:, k, None]) ** 2) / s2)
        alpha = (p["bl_a"][:, k, None, None] * gy[:, :, None] * gx[:, None, :])[..., None]
        img += alpha * (p["bl_colour"][:, k, None, None, :] - img)
    return _upsample(_F(0.5) + _F(_BG_SPREAD) * (img - _F(0.5)), size)


def _polygon_vertices(labels: np.ndarray, radius: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Vertices ``(b, _MAX_VERTICES, 2)`` relative to the centre, as (x, y).

    Squares and triangles repeat their last vertex; a repeated vertex adds an edge of zero
    height, which never flips the crossing-number test. Circles get unused vertices.
    """
    k = np.arange(_MAX_VERTICES)
    sides = np.where(labels == 1, 4, 3)[:, None]
    k_poly = np.minimum(k[None, :], sides - 1)
    theta_poly = angle[:, None] + 2.0 * np.pi * k_poly / sides
    r_poly = np.broadcast_to(radius[:, None], theta_poly.shape)
    # Five-pointed star: alternating outer and inner radius.
    theta_star = angle[:, None] + np.pi * k[None, :] / 5.0
    r_star = radius[:, None] * np.where(k % 2 == 0, 1.0, 0.45)[None, :]
    is_star = (labels == 3)[:, None]
    theta = np.where(is_star, theta_star, theta_poly)
    r = np.where(is_star, r_star, r_poly)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)


def _object_masks(p: dict, labels: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Boolean ``(b, h, w)``: a disc for circles, the even-odd rule for polygons.

    A pixel row's crossings with an edge depend on the row only, so each edge costs one
    comparison per pixel; this handles the non-convex star exactly.
    """
    dx = xs[None, None, :] - p["cx"][:, None, None]  # (b, 1, w)
    dy = xs[None, :, None] - p["cy"][:, None, None]  # (b, h, 1)
    disc = dx * dx + dy * dy <= (p["disc_r"] ** 2)[:, None, None]
    verts = p["verts"]
    nxt = np.roll(verts, -1, axis=1)
    inside = np.zeros(disc.shape, bool)
    for e in range(_MAX_VERTICES):  # a fixed count of polygon edges
        x0, y0 = verts[:, e, 0, None, None], verts[:, e, 1, None, None]
        x1, y1 = nxt[:, e, 0, None, None], nxt[:, e, 1, None, None]
        straddles = (y0 > dy) != (y1 > dy)  # (b, h, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = np.where(straddles, x0 + (dy - y0) * (x1 - x0) / (y1 - y0), -np.inf)
        inside ^= dx < x_cross
    return np.where((labels == 0)[:, None, None], disc, inside)


def _stroke_index(p: dict, xs: np.ndarray) -> np.ndarray:
    """``(b, h, w)`` uint8: 0 for no stroke, else 1 + the index of the topmost stroke."""
    b = p["cx"].shape[0]
    size = xs.shape[0]
    index = np.zeros((b, size, size), np.uint8)
    x = xs[None, None, :]
    y = xs[None, :, None]
    for k in range(_LINES):  # fixed stroke slots, painted in order
        ax, ay = p["lx"][:, k, None, None], p["ly"][:, k, None, None]
        ux, uy = p["lux"][:, k, None, None], p["luy"][:, k, None, None]
        half = p["llen"][:, k, None, None] / 2.0
        # Rectangle of the stroke's width around the segment, in the segment's own frame.
        along = ((x - ax) * ux) + ((y - ay) * uy)
        across = ((x - ax) * uy) - ((y - ay) * ux)
        hit = (np.abs(along - half) <= half) & (np.abs(across) <= p["lw"][:, k, None, None])
        index[hit & p["l_on"][:, k, None, None]] = k + 1
    for k in range(_ARCS):
        cx, cy = p["ax"][:, k, None, None], p["ay"][:, k, None, None]
        rx, ry = x - cx, y - cy
        r2 = rx * rx + ry * ry
        lo = (p["ar"][:, k] - p["aw"][:, k]) ** 2
        hi = (p["ar"][:, k] + p["aw"][:, k]) ** 2
        ring = (r2 >= lo[:, None, None]) & (r2 <= hi[:, None, None])
        # Span <= pi: the wedge is the intersection of two half-planes through the centre.
        c0, s0 = p["a_c0"][:, k, None, None], p["a_s0"][:, k, None, None]
        c1, s1 = p["a_c1"][:, k, None, None], p["a_s1"][:, k, None, None]
        wedge = (c0 * ry - s0 * rx >= 0) & (rx * s1 - ry * c1 >= 0)
        index[ring & wedge & p["a_on"][:, k, None, None]] = _LINES + k + 1
    return index


def _render(p: dict, labels: np.ndarray, size: int, rng: np.random.Generator):
    """Render one chunk from its parameters; returns float32 images and bool masks."""
    b = labels.shape[0]
    xs = np.arange(size, dtype=_F) + _F(0.5)
    img = _background(p, size)
    # Distractor strokes, hard-edged, in colours drawn like the object's colours.
    index = _stroke_index(p, xs)
    palette = np.concatenate([np.zeros((b, 1, 3), _F), p["st_colour"]], axis=1)
    strokes = palette[np.arange(b)[:, None, None], index]
    np.copyto(img, strokes, where=(index > 0)[..., None])
    np.clip(img, 0.0, 1.0, out=img)
    # The object, painted last so that its mask is exactly its pixels.
    masks = _object_masks(p, labels, xs)
    area = np.maximum(masks.sum(axis=(1, 2)), 1)
    under = np.einsum("bhwc,bhw->bc", img, masks.astype(_F)) / area[:, None]
    dist = np.linalg.norm(p["obj_cands"] - under[:, None, :], axis=-1)  # (b, candidates)
    luma = np.abs((p["obj_cands"] - under[:, None, :]) @ _LUMA)  # (b, candidates)
    ok = (dist >= _MIN_CONTRAST) & (luma >= _MIN_LUMA)
    pick = np.where(ok.any(axis=1), ok.argmax(axis=1), luma.argmax(axis=1))
    colour = p["obj_cands"][np.arange(b), pick]
    np.copyto(img, colour[:, None, None, :], where=masks[..., None])
    # Mild sensor noise everywhere; it keeps flat regions from being perfectly flat.
    img += _F(0.07) * (rng.random(img.shape, dtype=_F) - _F(0.5))
    np.clip(img, 0.0, 1.0, out=img)
    return img, masks


def _sample_params(labels: np.ndarray, size: int, rng: np.random.Generator) -> dict:
    n = labels.shape[0]

    def u(low, high, shape):
        return rng.uniform(low, high, shape).astype(_F)

    p: dict = {}
    p["low1"] = u(0.1, 0.9, (n, 4, 4, 3))
    p["low2"] = u(0.0, 1.0, (n, 9, 9, 3))
    grid = max(9, size // 4 + 1)  # the background's grid: about 4 pixels per point
    p["low3"] = u(0.0, 1.0, (n, grid, grid, 3))
    g_angle = u(0.0, 2.0 * np.pi, n)
    p["g_cos"], p["g_sin"] = np.cos(g_angle), np.sin(g_angle)
    p["g_colour"] = u(-0.4, 0.4, (n, 3))
    p["bl_x"] = u(0.0, size, (n, _BLOTCHES))
    p["bl_y"] = u(0.0, size, (n, _BLOTCHES))
    p["bl_s"] = u(0.04, 0.14, (n, _BLOTCHES)) * _F(size)
    p["bl_a"] = u(0.3, 0.8, (n, _BLOTCHES))
    p["bl_colour"] = u(0.0, 1.0, (n, _BLOTCHES, 3))
    # Lines: start point, unit direction, length, half width.
    p["l_on"] = rng.random((n, _LINES)) < 0.75
    p["lx"] = u(0.0, size, (n, _LINES))
    p["ly"] = u(0.0, size, (n, _LINES))
    direction = u(0.0, 2.0 * np.pi, (n, _LINES))
    p["lux"], p["luy"] = np.cos(direction), np.sin(direction)
    p["llen"] = u(0.15, 0.6, (n, _LINES)) * _F(size)
    p["lw"] = u(0.75, 1.75, (n, _LINES)) * _F(size / 128.0)
    # Arcs: centre, radius, half width, start angle and span (at most pi).
    p["a_on"] = rng.random((n, _ARCS)) < 0.75
    p["ax"] = u(0.0, size, (n, _ARCS))
    p["ay"] = u(0.0, size, (n, _ARCS))
    p["ar"] = u(0.06, 0.3, (n, _ARCS)) * _F(size)
    p["aw"] = u(0.75, 1.75, (n, _ARCS)) * _F(size / 128.0)
    a0 = u(0.0, 2.0 * np.pi, (n, _ARCS))
    a1 = a0 + u(0.4, 1.0, (n, _ARCS)) * _F(np.pi)
    p["a_c0"], p["a_s0"], p["a_c1"], p["a_s1"] = np.cos(a0), np.sin(a0), np.cos(a1), np.sin(a1)
    p["st_colour"] = u(0.0, 1.0, (n, _LINES + _ARCS, 3))
    # The object: circumradius, centre fully inside the image, rotation, candidate colours.
    radius = u(*_RADIUS, n) * _F(size)
    margin = radius + _F(2.0)
    p["cx"] = margin + u(0.0, 1.0, n) * (size - 2.0 * margin)
    p["cy"] = margin + u(0.0, 1.0, n) * (size - 2.0 * margin)
    # Upright shapes (square axis-aligned, triangle and star pointing up), tilted a little.
    upright = np.where(labels == 1, np.pi / 4.0, -np.pi / 2.0)
    tilt = u(-1.0, 1.0, n) * _F(np.deg2rad(_TILT_DEGREES))
    p["verts"] = _polygon_vertices(labels, radius, upright + tilt).astype(_F)
    p["disc_r"] = _F(0.8) * radius  # a circle of the full circumradius would dwarf the polygons
    p["obj_cands"] = u(0.0, 1.0, (n, _CANDIDATES, 3))
    return p


def shapes(n: int, *, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of one shape each on a cluttered background, with labels and exact masks.

    Classes (see ``CLASS_NAMES``): 0 circle, 1 square, 2 triangle, 3 star, balanced to within
    one image and shuffled. Objects lie fully inside the image, with a circumradius of 18-32%
    of ``size``, a tilt of at most 10 degrees, and a flat colour plus mild pixel noise.
    The output is a pure function of ``(n, size, seed)``. 2000 images of 128x128 take about
    2 s on a 2-core CPU.

    Args:
        n: number of images, at least 1.
        size: height and width in pixels, at least 32.
        seed: random seed.

    Returns:
        ``(images, labels, masks)``: float32 ``(n, size, size, 3)`` in [0, 1], int64 ``(n,)``,
        and bool ``(n, size, size)``, True exactly on the object's pixels.

    Reference:
        Synthetic data with known object masks to score explanations, as in Arras et al.,
        "CLEVR-XAI: A benchmark dataset for the ground truth evaluation of neural network
        explanations", Information Fusion 2022.

    Example:
        >>> images, labels, masks = kerasviz.datasets.shapes(8, size=64, seed=1)
        >>> images.shape, labels.shape, masks.shape
        ((8, 64, 64, 3), (8,), (8, 64, 64))
    """
    for name, value, low in (("n", n, 1), ("size", size, 32)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(
                f"Expected `{name}` to be an integer >= {low}. Received: {name}={value!r}"
            )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"Expected `seed` to be an integer. Received: seed={seed!r}")
    n, size = int(n), int(size)
    rng = np.random.default_rng(int(seed))
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    params = _sample_params(labels, size, rng)
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), bool)
    for start in range(0, n, _CHUNK):  # chunks bound the memory of the vectorised rendering
        sl = slice(start, min(start + _CHUNK, n))
        chunk = {key: value[sl] for key, value in params.items()}
        images[sl], masks[sl] = _render(chunk, labels[sl], size, rng)
    return images, labels, masks
