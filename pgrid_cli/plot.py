"""Pictures of grids (matplotlib): 2D projections and slices, and 3D isosurfaces.

Three modes (:data:`MODES`), all drawn in Cartesian Å with the box's true geometry:

* ``max``: per channel, the maximum over the box's third axis c, drawn over the a–b plane
  (each column of voxels is the skewed parallelogram it really is, so a hexagonal cell
  looks hexagonal), with every atom at its position projected along c.
* ``slice``: per channel, the layer k through the channel's densest voxel, contoured,
  with only the atoms near that layer: those whose centre lies within
  :func:`slice_distance` = ½·(layer thickness) + :data:`SLICE_SIGMAS`·σ of the layer's
  central plane (measured perpendicular to the a–b plane, through periodic images for
  crystals).
* ``iso``: one 3D picture, an isosurface per channel (marching cubes from scikit-image,
  one colour each) at a level of :data:`ISO_LEVEL` × the largest value of the drawn
  channels unless given, with the atoms as balls in their element colours (Jmol's).

Crystals (periodic boxes) are drawn with their cell outline; the 2D modes also draw the
neighbouring periodic images around the cell.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.box import Box
from .core.channels import CATCH_ALL, SINGLE, ChannelSpec, element_symbol
from .store.shard import ShardRecord

MODES = ("max", "slice", "iso")
#: Slice mode marks the atoms within ½·(layer thickness) + SLICE_SIGMAS·σ of the layer.
SLICE_SIGMAS = 1.0
#: Default isosurface level: this fraction of the largest value of the drawn channels.
ISO_LEVEL = 0.1
#: 2D modes: periodic images drawn around a crystal's cell, at least this many cells …
IMAGE_MARGIN = 0.25
#: … and enough for a view this wide (Å), up to one cell on each side.
MIN_VIEW = 7.0
#: Iso mode: atoms are balls of this fraction of their covalent radius (molecules,
#: crystals: smaller, as a crystal's picture holds many more atoms).
BALL_SCALE = {"molecule": 0.35, "crystal": 0.22}
#: Iso mode surface colours: an element channel takes its element's (Jmol) colour, but
#: these elements, whose Jmol colours vanish on white, take these; other channels (``*``,
#: ``all``) take the palette below in turn.
ISO_ELEMENT_COLOURS = {"H": "#7f9cc0", "He": "#9fb8c8"}
ISO_COLOURS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def channel_atoms(spec: ChannelSpec, numbers: np.ndarray) -> np.ndarray:
    """(C, M) bool: which atoms each channel holds."""
    out = np.zeros((spec.n_channels, len(numbers)), dtype=bool)
    try:
        chans = spec.assign(numbers)
    except ValueError:  # an atom without a channel: show it in none
        chans = np.array([_safe_channel(spec, int(z)) for z in numbers], dtype=np.int64)
    for a, c in enumerate(chans):
        if c >= 0:
            out[c, a] = True
    return out


def _safe_channel(spec: ChannelSpec, z: int) -> int:
    try:
        return int(spec.assign([z])[0])
    except ValueError:
        return -1


# ---------------------------------------------------------------------- geometry
def layer_thickness(box: Box) -> float:
    """Å: the thickness of one layer k of voxels, perpendicular to the a–b plane."""
    a, b, _ = box.axes
    return box.volume / float(np.linalg.norm(np.cross(a, b))) / box.shape[2]


def slice_distance(box: Box, sigma: float) -> float:
    """Å: slice mode marks the atoms whose centre is at most this far from the layer's
    central plane: half the layer thickness plus :data:`SLICE_SIGMAS`·σ."""
    return 0.5 * layer_thickness(box) + SLICE_SIGMAS * float(sigma)


def atoms_near_slice(box: Box, positions: Any, k: int, sigma: float) -> np.ndarray:
    """(M,) bool: the atoms within :func:`slice_distance` of layer ``k``'s central plane
    (the plane through the voxel centres of layer k, parallel to a and b). For a periodic
    box the nearest image along c counts."""
    if not 0 <= k < box.shape[2]:
        raise ValueError(f"layer {k} is outside the box (0 ≤ k < {box.shape[2]})")
    fc = box.fractional(positions)[:, 2] - (k + 0.5) / box.shape[2]
    if box.periodic:
        fc = (fc + 0.5) % 1.0 - 0.5
    height = layer_thickness(box) * box.shape[2]
    return np.abs(fc) * height <= slice_distance(box, sigma)


def plane_basis(box: Box) -> np.ndarray:
    """(2, 3): orthonormal in-plane directions of the a–b plane (e1 ∥ a). For a box with
    a along x and b in the x–y plane these are x and y."""
    a, b, _ = box.axes
    e1 = a / np.linalg.norm(a)
    e2 = b - (b @ e1) * e1
    return np.stack([e1, e2 / np.linalg.norm(e2)])


def project_ab(box: Box, frac_ab: np.ndarray) -> np.ndarray:
    """(..., 2) Å: in-plane coordinates of the points origin + f_a·a + f_b·b."""
    a, b, _ = box.axes
    f = np.asarray(frac_ab, dtype=np.float64)
    points = box.origin + f[..., :1] * a + f[..., 1:2] * b
    return points @ plane_basis(box).T


def face_spacings(box: Box) -> np.ndarray:
    """(3,) Å: the distance between the two faces of the box crossed by a, b and c."""
    return 1.0 / np.linalg.norm(np.linalg.inv(box.axes), axis=0)


def _margins(box: Box) -> tuple[float, float]:
    """Periodic images drawn beyond the cell along a and b in the 2D modes, in cells."""
    if not box.periodic:
        return 0.0, 0.0
    h = face_spacings(box)[:2]
    m = np.clip((MIN_VIEW / h - 1.0) / 2.0, IMAGE_MARGIN, 1.0)
    return float(m[0]), float(m[1])


def _repeats(box: Box) -> np.ndarray:
    """(3,) int: cells drawn along a, b, c in iso mode (1–3, for a view ≥ MIN_VIEW Å)."""
    if not box.periodic:
        return np.ones(3, dtype=np.int64)
    return np.clip(np.ceil(MIN_VIEW / face_spacings(box) - 1e-9), 1, 3).astype(np.int64)


def _is_xy(box: Box) -> bool:
    return bool(np.allclose(plane_basis(box), np.eye(3)[:2], atol=1e-9))


# ---------------------------------------------------------------------- drawing
def draw_grid(
    record: ShardRecord,
    spec: ChannelSpec,
    path: str | os.PathLike[str],
    *,
    channels: Sequence[str] | None = None,
    mode: str = "max",
    sigma: float | None = None,
    level: float | None = None,
    dpi: int = 110,
) -> Path:
    """Save a picture of one grid (see the module docstring for the modes).

    ``channels`` picks channels by name (default: every non-empty one). ``sigma`` (Å, the
    shard's σ) is needed by ``slice`` mode to choose the atoms it marks. ``level`` (iso
    mode) is the isosurface level as a fraction of the largest value of the drawn
    channels (default :data:`ISO_LEVEL`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    grid = np.asarray(record.grid, dtype=np.float32)
    names = list(spec.names)
    if channels:
        missing = [c for c in channels if c not in names]
        if missing:
            raise ValueError(f"no channel {', '.join(missing)} (channels: {', '.join(names)})")
        show = [names.index(c) for c in channels]
    else:
        show = [c for c in range(len(names)) if grid[c].max() > 0] or [0]
    if mode == "slice" and sigma is None:
        raise ValueError("slice mode needs sigma (Å) to choose the atoms near the slice")
    if mode == "iso":
        fig = _draw_iso(record, grid, names, show, ISO_LEVEL if level is None else level, dpi)
    else:
        fig = _draw_panels(record, grid, spec, show, mode, sigma or 0.0, dpi)
    out = Path(path)
    fig.savefig(out)
    return out


def _title(record: ShardRecord, width_in: float, fontsize: float) -> str:
    kind = "crystal" if record.box.periodic else "molecule"
    n = len(record.numbers)
    where = f"{Path(record.source).name}#{record.record}" if record.source else ""
    text = f"{record.name or '(no name)'} — {kind}, {n} atom{'s' * (n != 1)}"
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))  # ~0.55 em per character
    lines = textwrap.wrap(text, chars) + textwrap.wrap(where, chars)
    return "\n".join(lines[:3])


def _draw_panels(
    record: ShardRecord,
    grid: np.ndarray,
    spec: ChannelSpec,
    show: list[int],
    mode: str,
    sigma: float,
    dpi: int,
) -> Any:
    from matplotlib.figure import Figure

    box = record.box
    names = list(spec.names)
    held = channel_atoms(spec, np.asarray(record.numbers))
    frac = box.fractional(record.positions)
    if box.periodic:
        frac = frac % 1.0
    tiles = [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)] if box.periodic else [(0, 0)]
    images = [(i, j) for i in range(-1, 3) for j in range(-1, 3)] if box.periodic else [(0, 0)]
    nx, ny, _ = box.shape
    fa, fb = np.meshgrid(np.arange(nx + 1) / nx, np.arange(ny + 1) / ny, indexing="ij")
    corners = np.stack([fa, fb], axis=-1)
    ma, mb = _margins(box)
    view = project_ab(box, np.array([[-ma, -mb], [1 + ma, -mb], [1 + ma, 1 + mb], [-ma, 1 + mb]]))
    outline = project_ab(box, np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], float))
    span = view.max(axis=0) - view.min(axis=0)
    aspect = float(np.clip(span[1] / span[0], 0.4, 2.5))

    ncols = min(4, len(show))
    nrows = -(-len(show) // ncols)
    width = 3.6 * ncols + 0.6 if ncols > 1 else 4.8
    fig = Figure(figsize=(width, 3.3 * aspect * nrows + 0.9), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, c in zip(axes, show, strict=False):
        g = grid[c]
        if mode == "max":
            image = g.max(axis=2)
            label = "max over c"
            near = np.ones(len(frac), dtype=bool)
        else:
            k = int(np.unravel_index(int(np.argmax(g)), g.shape)[2])
            image = g[:, :, k]
            label = f"layer k = {k} of {box.shape[2]}"
            near = atoms_near_slice(box, record.positions, k, sigma)
        vmax = float(image.max()) or 1.0
        for ti, tj in tiles:
            xy = project_ab(box, corners + np.array([ti, tj]))
            im = ax.pcolormesh(
                xy[..., 0],
                xy[..., 1],
                image,
                cmap="magma",
                vmin=0.0,
                vmax=vmax,
                shading="flat",
                rasterized=True,
            )
            if mode == "slice" and image.max() > 0:
                centres = project_ab(box, (corners[:-1, :-1] + corners[1:, 1:]) / 2 + (ti, tj))
                ax.contour(
                    centres[..., 0],
                    centres[..., 1],
                    image,
                    levels=np.linspace(0, vmax, 6)[1:-1],
                    colors="white",
                    linewidths=0.5,
                )
        if box.periodic:  # the cell: a white line with a dark edge, visible on any colour
            ax.plot(outline[:, 0], outline[:, 1], color="black", linewidth=2.4)
            ax.plot(outline[:, 0], outline[:, 1], color="white", linewidth=1.0)
        else:
            ax.plot(outline[:, 0], outline[:, 1], color="0.5", linewidth=0.6)
        mine, others = near & held[c], near & ~held[c]
        for sel, style in (
            (others, {"s": 8, "c": "0.65", "linewidths": 0}),
            (mine, {"s": 26, "facecolors": "none", "edgecolors": "cyan", "linewidths": 0.9}),
        ):
            ab = np.concatenate([frac[sel, :2] + t for t in images])
            if box.periodic:  # every image on the drawn tiles, their far edges included
                ab = ab[np.all((ab > -1 - 1e-6) & (ab < 2 + 1e-6), axis=1)]
            pts = project_ab(box, ab)
            ax.scatter(pts[:, 0], pts[:, 1], **style)
        ax.set_xlim(view[:, 0].min(), view[:, 0].max())
        ax.set_ylim(view[:, 1].min(), view[:, 1].max())
        ax.set_aspect("equal")
        ax.set_facecolor("white")
        ax.set_title(f"{_channel_title(names[c])}: {label}", fontsize=9)
        xy_axes = _is_xy(box)
        ax.set_xlabel("x (Å)" if xy_axes else "along a (Å)", fontsize=8)
        ax.set_ylabel("y (Å)" if xy_axes else "in the a–b plane, ⊥ a (Å)", fontsize=8)
        ax.tick_params(labelsize=7)
        bar = fig.colorbar(im, ax=ax, shrink=0.8)
        bar.set_label("atoms per voxel", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    for ax in axes[len(show) :]:
        ax.set_axis_off()
    fig.suptitle(_title(record, width, 10), fontsize=10)
    return fig


def _draw_iso(
    record: ShardRecord,
    grid: np.ndarray,
    names: list[str],
    show: list[int],
    level: float,
    dpi: int,
) -> Any:
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    if not 0.0 < level < 1.0:
        raise ValueError(f"--level is a fraction of the maximum, 0 < level < 1; got {level}")
    box = record.box
    reps = _repeats(box)  # crystals: a few cells, so that the picture shows the crystal
    view_box = Box(
        box.origin,
        box.axes * reps[:, None],
        tuple(np.multiply(box.shape, reps)),
        periodic=box.periodic,
    )
    numbers = np.asarray(record.numbers)
    pos = np.asarray(record.positions, dtype=np.float64).reshape(-1, 3)
    if box.periodic:  # every image in the drawn cells, those on their far faces too
        frac = box.fractional(pos) % 1.0
        r = [range(-1, n + 1) for n in reps]
        shifts = np.array([[i, j, k] for i in r[0] for j in r[1] for k in r[2]], np.float64)
        images = (frac[None] + shifts[:, None]).reshape(-1, 3)
        keep = np.all((images > -1e-6) & (images < reps + 1e-6), axis=1)
        pos = box.cartesian(images[keep])
        numbers = np.tile(numbers, len(shifts))[keep]
    top = float(max(grid[c].max() for c in show))
    fig = Figure(figsize=(6.4, 6.4), dpi=dpi, layout="constrained")
    ax = fig.add_subplot(projection="3d")
    handles = []
    others = iter(ISO_COLOURS * len(show))
    for c in show:
        colour = _surface_colour(names[c], others)
        verts, faces = isosurface(np.tile(grid[c], reps), view_box, level * top)
        if len(faces):
            mesh = Poly3DCollection(
                verts[faces], facecolors=colour, linewidths=0, alpha=0.35, shade=True
            )
            ax.add_collection3d(mesh)
        handles.append(
            Line2D(
                [],
                [],
                color=colour,
                linewidth=6,
                alpha=0.6,
                label=f"{_channel_title(names[c])} density",
            )
        )
    if not box.periodic:
        bonds = _bonds(numbers, pos)
        if len(bonds):
            ax.add_collection3d(Line3DCollection(bonds, colors="0.35", linewidths=2.0))
    lo, hi = _iso_limits(view_box, pos)
    if len(pos):
        z = np.clip(numbers, 0, len(jmol_colors) - 1)
        # balls of BALL_SCALE × the covalent radius, at the scale of the view
        points_per_angstrom = 0.55 * 6.4 * 72 / float((hi - lo).max())
        scale = BALL_SCALE["crystal" if box.periodic else "molecule"]
        size = (2 * scale * covalent_radii[z] * points_per_angstrom) ** 2
        ax.scatter(
            pos[:, 0],
            pos[:, 1],
            pos[:, 2],
            s=size,
            c=jmol_colors[z],
            edgecolors="0.2",
            linewidths=0.4,
            alpha=1.0,
            depthshade=False,
        )
        for zz in sorted(set(z.tolist())):
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    linestyle="",
                    markersize=7,
                    markerfacecolor=jmol_colors[zz],
                    markeredgecolor="0.2",
                    label=element_symbol(zz),
                )
            )
    if box.periodic:
        if reps.prod() > 1:
            ax.add_collection3d(
                Line3DCollection(_box_edges(view_box), colors="0.7", linewidths=0.6)
            )
        ax.add_collection3d(Line3DCollection(_box_edges(box), colors="0.1", linewidths=1.2))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect((1.0, 1.0, 1.0), zoom=1.0 if box.periodic else 1.25)
    elev, azim = _view(box, pos)
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
    if box.periodic:  # name the unit cell's edges
        for vec, name in zip(box.axes, "abc", strict=True):
            ax.text(*(box.origin + 1.12 * vec), name, fontsize=10, fontweight="bold")
    else:
        _triad(ax, lo, hi)
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    title = _title(record, 6.4, 10)
    cells = f", {'×'.join(str(r) for r in reps)} cells (unit cell in black)" if box.periodic else ""
    fig.suptitle(
        f"{title}\nisosurfaces at {level:g} × max = {level * top:.3g} atoms per voxel{cells}",
        fontsize=10,
    )
    return fig


def _surface_colour(name: str, palette: Any) -> Any:
    """An element channel's Jmol colour (see :data:`ISO_ELEMENT_COLOURS`), or the next
    colour of ``palette``."""
    from ase.data import atomic_numbers
    from ase.data.colors import jmol_colors

    if name in ISO_ELEMENT_COLOURS:
        return ISO_ELEMENT_COLOURS[name]
    if name in atomic_numbers and name not in (CATCH_ALL, SINGLE):
        return tuple(jmol_colors[atomic_numbers[name]])
    return next(palette)


def _triad(ax: Any, lo: np.ndarray, hi: np.ndarray) -> None:
    """x, y, z arrows of 1/8 of the view in a corner, so the picture keeps its axes."""
    size = float((hi - lo).max()) / 8
    for d, name in enumerate("xyz"):
        v = np.zeros(3)
        v[d] = size
        ax.quiver(*lo, *v, color="0.3", linewidth=1.0, arrow_length_ratio=0.25)
        ax.text(*(lo + 1.3 * v), name, fontsize=8, color="0.3")


def isosurface(values: np.ndarray, box: Box, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of one channel at ``level`` (atoms per voxel): vertices (V, 3) in
    Cartesian Å and triangles (F, 3). Sample points are the voxel centres. The grid is
    padded with a layer of zeros, so every surface is closed: cut by the box's faces, as
    viewers draw a crystal's density inside its cell."""
    from skimage.measure import marching_cubes

    v = np.asarray(values, dtype=np.float32)
    if not v.max() > level:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    padded = np.pad(v, 1)
    step = max(1, int(np.ceil(max(box.shape) / 80)))
    spacing = tuple(float(s) for s in box.lengths / np.asarray(box.shape))
    verts, faces, _, _ = marching_cubes(padded, level, spacing=spacing, step_size=step)
    index = verts / np.asarray(spacing) - 1.0  # voxel index units, 0 = centre of voxel 0
    frac = (index + 0.5) / np.asarray(box.shape, dtype=np.float64)
    return box.cartesian(frac), faces


def _bonds(numbers: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(B, 2, 3): the bonds of a molecule, pairs closer than 1.15 × the sum of their
    covalent radii."""
    from ase.data import covalent_radii

    if len(pos) < 2 or len(pos) > 2000:
        return np.zeros((0, 2, 3))
    r = covalent_radii[np.clip(numbers, 0, len(covalent_radii) - 1)]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    i, j = np.nonzero(np.triu(d < 1.15 * (r[:, None] + r[None]), k=1))
    return np.stack([pos[i], pos[j]], axis=1)


def _box_edges(box: Box) -> np.ndarray:
    """(12, 2, 3): the edges of the box."""
    corners = box.cartesian(np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]))
    pairs = [(p, q) for p in range(8) for q in range(p + 1, 8) if bin(p ^ q).count("1") == 1]
    return np.array([[corners[p], corners[q]] for p, q in pairs])


def _iso_limits(box: Box, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal-scale limits: the cells for crystals, the atoms + 2 Å for molecules."""
    if box.periodic or len(pos) == 0:
        pts = _box_edges(box).reshape(-1, 3)
    else:
        pts = np.concatenate([pos - 2.0, pos + 2.0])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    half = max(half, 1.0)
    lo, hi = centre - half, centre + half
    return lo, hi


def _view(box: Box, pos: np.ndarray) -> tuple[float, float]:
    """(elev, azim) in degrees. Molecules: looking along their thinnest direction (the
    normal of a planar molecule), tilted 30° towards the middle one. Crystals: in the
    cell's frame (x ∥ a, y in the a–b plane), an oblique view 22° above the a–b plane and
    52° round from a towards −b (not along a row of a cubic or hexagonal lattice)."""
    if box.periodic or len(pos) < 3:
        e1, e2 = plane_basis(box)
        e3 = np.cross(e1, e2)
        el, az = np.radians(22.0), np.radians(-52.0)
        d = np.cos(el) * (np.cos(az) * e1 + np.sin(az) * e2) + np.sin(el) * e3
    else:
        _, vecs = np.linalg.eigh(np.cov((pos - pos.mean(axis=0)).T))
        thin, mid = vecs[:, 0], vecs[:, 1]
        if thin[2] < 0:
            thin = -thin
        d = np.cos(np.radians(30)) * thin + np.sin(np.radians(30)) * mid
    d = d / np.linalg.norm(d)
    elev = float(np.degrees(np.arcsin(np.clip(d[2], -1, 1))))
    return elev, float(np.degrees(np.arctan2(d[1], d[0])))


def _channel_title(name: str) -> str:
    if name == SINGLE:
        return "all atoms"
    if name == CATCH_ALL:
        return "other elements (*)"
    return name


__all__ = [
    "ISO_LEVEL",
    "MODES",
    "SLICE_SIGMAS",
    "atoms_near_slice",
    "channel_atoms",
    "draw_grid",
    "element_symbol",
    "isosurface",
    "layer_thickness",
    "slice_distance",
]
