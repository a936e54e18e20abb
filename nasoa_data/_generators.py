"""Generated built-ins: geometric shapes and formula-driven patterns (numpy only)."""

from __future__ import annotations

import math

import numpy as np

from ._refs import _PATTERN_NAMES, _SHAPE_NAMES

__all__ = ["render_patterns", "render_shapes"]


def _contrasting_colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of RGB colours in [0, 1] at least 0.45 apart, so every image is legible."""
    a = rng.random((n, 3))
    b = rng.random((n, 3))
    for _ in range(20):
        bad = np.linalg.norm(a - b, axis=1) < 0.45
        if not bad.any():
            break
        b[bad] = rng.random((int(bad.sum()), 3))
    bad = np.linalg.norm(a - b, axis=1) < 0.45
    b[bad] = np.where(a[bad] < 0.5, 1.0, 0.0)  # each channel >= 0.5 away: always legible
    return a, b


def _noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance uniform pixel noise (3x faster to draw than Gaussian)."""
    u = rng.random(shape, dtype=np.float32)
    u -= np.float32(0.5)
    u *= np.float32(np.sqrt(12.0))
    return u


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_shapes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32 RGB images of 8 shapes, classes in turn: random place, size, colour, noise."""
    side, ss = 32, 2  # 2x supersampling gives anti-aliased edges (the box filter assumes 2)
    k = len(_SHAPE_NAMES)
    y = np.arange(n, dtype=np.int64) % k
    radius = rng.uniform(5.0, 12.0, n)
    cx = rng.uniform(radius + 0.5, side - radius - 0.5)
    cy = rng.uniform(radius + 0.5, side - radius - 0.5)
    theta = rng.uniform(0, 2 * np.pi, n)
    # Squares and diamonds differ only by 45 degrees, and a cross turned 45 degrees is an X:
    # keep those nearly upright so that the class stays well defined.
    upright = np.isin(y, [1, 3, 5])
    theta[upright] = rng.uniform(-0.2, 0.2, int(upright.sum()))
    fg, bg = _contrasting_colours(n, rng)
    noise_sigma = rng.uniform(0.0, 0.1, n)
    grad = rng.normal(0, 0.15, (n, 2))  # a gentle background ramp, so the background varies

    coords = ((np.arange(side * ss) + 0.5) / ss).astype(np.float32)
    gy, gx = np.meshgrid(coords, coords, indexing="ij")
    masks = np.empty((n, side * ss, side * ss), dtype=np.float32)
    f32 = np.float32
    for cls in range(k):
        idx = np.nonzero(y == cls)[0]
        if idx.size == 0:
            continue
        inv_r = (1.0 / radius[idx]).astype(f32)
        cos = (np.cos(theta[idx]) * inv_r).astype(f32)[:, None, None]
        sin = (np.sin(theta[idx]) * inv_r).astype(f32)[:, None, None]
        dx = gx[None] - cx[idx].astype(f32)[:, None, None]
        dy = gy[None] - cy[idx].astype(f32)[:, None, None]
        u, v = cos * dx + sin * dy, cos * dy - sin * dx  # rotated, in radius units
        name = _SHAPE_NAMES[cls]
        if name in ("circle", "ring", "star", "crescent"):
            r2 = u * u + v * v
        if name == "circle":
            m = r2 <= 1.0
        elif name == "square":
            m = np.maximum(np.abs(u), np.abs(v)) <= 0.8
        elif name == "triangle":
            m = (v >= -0.5) & (np.sqrt(3) * np.abs(u) + v <= 1.0)
        elif name == "cross":
            au, av = np.abs(u), np.abs(v)
            m = ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
        elif name == "ring":
            m = (r2 <= 1.0) & (r2 >= 0.36)
        elif name == "diamond":
            m = np.abs(u) + np.abs(v) <= 1.0
        elif name == "star":
            m = np.sqrt(r2) <= 0.55 + 0.45 * np.cos(5 * np.arctan2(v, u))
        else:  # crescent
            m = (r2 <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.64)
        masks[idx] = m
    # 2x2 box filter as four strided adds: several times faster than mean(axis=(2, 4)).
    alpha = (masks[:, 0::2, 0::2] + masks[:, 1::2, 0::2] + masks[:, 0::2, 1::2]
             + masks[:, 1::2, 1::2])[..., None] * np.float32(0.25)  # fmt: skip
    pix = ((np.arange(side) + 0.5) / side - 0.5).astype(np.float32)
    g = grad.astype(np.float32)
    ramp = g[:, 0, None, None] * pix[None, :, None] + g[:, 1, None, None] * pix[None, None]
    img = ramp[..., None] + bg.astype(np.float32)[:, None, None, :]  # background
    img += alpha * (fg.astype(np.float32)[:, None, None, :] - img)  # alpha-blend the shape
    img += _noise(img.shape, rng) * noise_sigma.astype(np.float32)[:, None, None, None]
    return _to_uint8(img), y


def render_patterns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n 32x32 RGB formula-driven patterns (gratings, checkers, radial, noise), 20 classes."""
    side = 32
    k = len(_PATTERN_NAMES)
    y = np.arange(n, dtype=np.int64) % k
    coords = (np.arange(side) + 0.5) / side  # [0, 1)
    gy, gx = np.meshgrid(coords, coords, indexing="ij")
    gx, gy = gx[None], gy[None]
    value = np.empty((n, side, side), dtype=np.float64)
    for cls in range(k):
        idx = np.nonzero(y == cls)[0]
        m = idx.size
        if m == 0:
            continue

        def u(lo: float, hi: float, m: int = m) -> np.ndarray:
            return rng.uniform(lo, hi, m)[:, None, None]

        name = _PATTERN_NAMES[cls]
        phase = u(0, 2 * np.pi)
        if name.startswith("grating"):
            base = math.radians(float(name.rsplit("-", 1)[1]))
            ang = base + u(-0.14, 0.14)  # +-8 degrees: orientation is the class
            freq = u(1.5, 3.0) if "low" in name else u(5.0, 7.5)
            t = np.cos(ang) * gx + np.sin(ang) * gy
            v = 0.5 + 0.5 * np.cos(2 * np.pi * freq * t + phase)
        elif name.startswith("checker"):
            cells = u(6, 9) if name == "checker-small" else u(2, 3.5)
            ang = np.pi / 4 if name == "checker-diagonal" else 0.0
            a, b = np.cos(ang) * gx + np.sin(ang) * gy, -np.sin(ang) * gx + np.cos(ang) * gy
            off = u(0, 1)
            v = ((np.floor(a * cells + off) + np.floor(b * cells + off)) % 2).astype(float)
        elif name in ("rings", "spokes", "spiral"):
            cx, cy = u(0.3, 0.7), u(0.3, 0.7)
            r = np.hypot(gx - cx, gy - cy)
            th = np.arctan2(gy - cy, gx - cx)
            if name == "rings":
                v = 0.5 + 0.5 * np.cos(2 * np.pi * u(3, 6) * r + phase)
            elif name == "spokes":
                spokes = rng.integers(5, 10, m)[:, None, None]
                v = 0.5 + 0.5 * np.cos(spokes * th + phase)
            else:
                arms = rng.integers(2, 5, m)[:, None, None]
                v = 0.5 + 0.5 * np.cos(arms * th + 2 * np.pi * u(3, 5) * r + phase)
        elif name == "white-noise":
            v = rng.random((m, side, side))
        elif name == "smooth-noise":
            coarse = rng.random((m, 5, 5))
            v = _upsample_bilinear(coarse, side)
            v = (v - v.min(axis=(1, 2), keepdims=True)) / (np.ptp(v, axis=(1, 2), keepdims=True) + 1e-9)
        elif name == "plaid":
            ang = u(0, np.pi)
            f1, f2 = u(2, 5), u(2, 5)
            t1 = np.cos(ang) * gx + np.sin(ang) * gy
            t2 = -np.sin(ang) * gx + np.cos(ang) * gy
            v = 0.5 + 0.25 * (np.cos(2 * np.pi * f1 * t1 + phase) + np.cos(2 * np.pi * f2 * t2))
        elif name == "dots":
            f = u(3, 6)
            d = np.cos(2 * np.pi * f * gx + phase) * np.cos(2 * np.pi * f * gy + u(0, 6.3))
            v = (d > 0.5).astype(float)
        elif name == "zigzag":
            amp, f = u(0.05, 0.12), u(3, 6)
            tri = 2 * np.abs((gx * u(3, 5) + u(0, 1)) % 1 - 0.5)  # triangle wave along x
            v = 0.5 + 0.5 * np.cos(2 * np.pi * f * (gy + amp * tri * 4) + phase)
        else:  # hexagonal: three gratings 60 degrees apart
            ang, f = u(0, np.pi / 3), u(3, 5)
            acc = 0.0
            for j in range(3):
                a = ang + j * np.pi / 3
                acc = acc + np.cos(2 * np.pi * f * (np.cos(a) * gx + np.sin(a) * gy) + phase)
            v = (acc + 1.5) / 4.5
        value[idx] = np.broadcast_to(v, (m, side, side))
    c1, c2 = _contrasting_colours(n, rng)
    val = value[..., None]
    img = (c1[:, None, None, :] * (1 - val) + c2[:, None, None, :] * val).astype(np.float32)
    sigma = rng.uniform(0.0, 0.06, n).astype(np.float32)[:, None, None, None]
    img += _noise(img.shape, rng) * sigma
    return _to_uint8(img), y


def _upsample_bilinear(coarse: np.ndarray, side: int) -> np.ndarray:
    """Bilinear upsampling of (n, h, w) to (n, side, side), numpy only."""
    n, h, w = coarse.shape
    ys = np.linspace(0, h - 1, side)
    xs = np.linspace(0, w - 1, side)
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 2)
    fy = (ys - y0)[None, :, None]
    fx = (xs - x0)[None, None, :]
    a = coarse[:, y0][:, :, x0]
    b = coarse[:, y0][:, :, x0 + 1]
    c = coarse[:, y0 + 1][:, :, x0]
    d = coarse[:, y0 + 1][:, :, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
