"""``pgrid_cli.plot`` and ``pgrid show``: a smoke test per mode (a real, non-blank PNG),
the atoms slice mode marks, the Cartesian geometry of crystals and of isosurfaces."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from pgrid_cli import Box, ChannelSpec, grid
from pgrid_cli.cli import app
from pgrid_cli.plot import (
    MODES,
    SLICE_SIGMAS,
    atoms_near_slice,
    draw_grid,
    isosurface,
    layer_thickness,
    project_ab,
    slice_distance,
)
from pgrid_cli.store.shard import ShardRecord

from .conftest import SAMPLE, triclinic_lattice

SIGMA = 0.4
ELEMENTS = ChannelSpec.parse("elements")
SINGLE = ChannelSpec.parse("single")


def _record(numbers, positions, box, spec: ChannelSpec, name: str) -> ShardRecord:
    g = grid(positions, box, SIGMA, channels=spec.assign(numbers), n_channels=spec.n_channels)
    return ShardRecord(g, box, np.asarray(numbers), np.asarray(positions), name, "x/test.xyz", 3)


@pytest.fixture(scope="module")
def ethanol() -> ShardRecord:
    from ase.build import molecule

    m = molecule("CH3CH2OH")
    return _record(m.numbers, m.positions, Box.fit(m.positions, shape=28), ELEMENTS, "ethanol")


@pytest.fixture(scope="module")
def magnesium() -> ShardRecord:
    from ase.build import bulk

    mg = bulk("Mg")
    box = Box.from_lattice(mg.cell[:], shape=(16, 16, 24))
    return _record(mg.numbers, mg.positions, box, SINGLE, "Mg hcp")


def _colours(path) -> int:
    """Distinct RGB colours of a PNG (a blank or one-colour picture has very few)."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = (imread(path)[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    return len(np.unique(rgb, axis=0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["ethanol", "magnesium"])
def test_every_mode_draws_a_picture(tmp_path, mode, which, request):
    rec: ShardRecord = request.getfixturevalue(which)
    spec = SINGLE if which == "magnesium" else ELEMENTS
    out = draw_grid(rec, spec, tmp_path / f"{mode}.png", mode=mode, sigma=SIGMA, dpi=60)
    assert out.stat().st_size > 10_000
    assert _colours(out) > 200


def test_draw_grid_errors(tmp_path, ethanol):
    with pytest.raises(ValueError, match="unknown mode 'contour'"):
        draw_grid(ethanol, ELEMENTS, tmp_path / "g.png", mode="contour")
    with pytest.raises(ValueError, match="slice mode needs sigma"):
        draw_grid(ethanol, ELEMENTS, tmp_path / "g.png", mode="slice")
    with pytest.raises(ValueError, match="0 < level < 1"):
        draw_grid(ethanol, ELEMENTS, tmp_path / "g.png", mode="iso", level=2.0)
    with pytest.raises(ValueError, match="no channel Xe"):
        draw_grid(ethanol, ELEMENTS, tmp_path / "g.png", channels=["Xe"])


# ---------------------------------------------------------------------- slice atoms
def test_slice_selects_the_atoms_within_the_documented_distance():
    box = Box(origin=(-4.0, -4.0, -3.0), axes=np.diag([8.0, 8.0, 6.0]), shape=(16, 16, 12))
    k = 5  # layer 5 of 12: its central plane is at z = -3 + 5.5 · 0.5 = -0.25 Å
    h = layer_thickness(box)
    assert h == pytest.approx(0.5)
    limit = slice_distance(box, SIGMA)
    assert limit == pytest.approx(0.5 * h + SLICE_SIGMAS * SIGMA)
    offsets = np.array([0.0, 0.2, -0.64, 0.649, -0.651, 0.8, -2.0])
    pos = np.column_stack([np.zeros(7), np.linspace(-2, 2, 7), -0.25 + offsets])
    near = atoms_near_slice(box, pos, k, SIGMA)
    assert near.tolist() == (np.abs(offsets) <= limit).tolist()
    assert near.tolist() == [True, True, True, True, False, False, False]
    with pytest.raises(ValueError, match="outside the box"):
        atoms_near_slice(box, pos, 12, SIGMA)


def test_slice_distance_in_triclinic_and_periodic_cells():
    lat = triclinic_lattice()
    box = Box.from_lattice(lat, shape=(10, 10, 20))
    n = np.cross(lat[0], lat[1])
    n /= np.linalg.norm(n)
    height = lat[2] @ n  # distance between the a–b faces
    assert layer_thickness(box) == pytest.approx(height / 20)
    k = 0  # the layer at the bottom face: its periodic images sit below
    plane = (0.5 / 20) * lat[2]
    limit = slice_distance(box, SIGMA)
    # atoms displaced along the normal, and sideways in the plane (which must not count)
    along = np.array([0.0, 0.99, -0.99, 1.01, -1.01, 3.0]) * limit
    pos = plane + 0.3 * lat[0] + 0.6 * lat[1] + along[:, None] * n
    pos = np.vstack([pos, pos[1] + lat[2], pos[2] - 2 * lat[2]])  # periodic images
    near = atoms_near_slice(box, pos, k, SIGMA)
    assert near.tolist() == [True, True, True, False, False, False, True, True]


# ---------------------------------------------------------------------- geometry
def test_hexagonal_cells_are_drawn_hexagonal(magnesium):
    a = magnesium.box.lengths[0]
    corners = project_ab(magnesium.box, np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float))
    assert_allclose(corners[1], [a, 0], atol=1e-9)
    assert_allclose(corners[2], [-a / 2, a * np.sqrt(3) / 2], atol=1e-9)  # γ = 120°
    assert_allclose(corners[3], corners[1] + corners[2], atol=1e-9)


def test_isosurface_is_in_cartesian_space():
    """One atom in a skewed cell: its isosurface is a sphere around it (a wrong mapping
    from voxel indices to space would give a sheared ellipsoid)."""
    lat = triclinic_lattice(a=9.0, b=9.5, c=10.0)
    box = Box.from_lattice(lat, shape=(36, 38, 40))
    centre = box.cartesian([[0.5, 0.5, 0.5]])
    g = grid(centre, box, 0.6)[0]
    verts, faces = isosurface(g, box, 0.2 * g.max())
    assert len(faces) > 100
    r = np.linalg.norm(verts - centre, axis=1)
    assert r.std() / r.mean() < 0.03
    assert r.mean() == pytest.approx(0.6 * np.sqrt(-2 * np.log(0.2)), rel=0.1)


# ---------------------------------------------------------------------- command line
def test_show_command_modes(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "grid",
            str(SAMPLE / "crystals" / "SiO2_alpha_quartz.cif"),
            "-o",
            str(out),
            "--grid-size",
            "20",
            "--workers",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    for mode in MODES:
        png = tmp_path / f"{mode}.png"
        r = runner.invoke(app, ["show", str(out), "-o", str(png), "--mode", mode])
        assert r.exit_code == 0, r.output
        assert _colours(png) > 200
    r = runner.invoke(app, ["show", str(out), "-o", str(png), "--mode", "iso", "--level", "1.5"])
    assert r.exit_code == 2 and "0 < level < 1" in r.stderr
