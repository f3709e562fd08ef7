"""``pgrid_cli.export`` and ``pgrid export``: every format read back by an independent
reader (ASE, pymatgen, gridDataFormats, mrcfile, or a few lines of parsing here), on real
grids: a molecule (benzene in a non-cubic box) and crystals (hexagonal Mg, a skewed
triclinic Si cell, cubic NaCl).

What is checked for each format: the values (in the format's units and convention), the
first point = pgrid's box origin + ½ voxel, the voxel vectors, the axis order and the
atoms where the format carries them.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from ase.units import Bohr
from numpy.testing import assert_allclose, assert_array_equal
from typer.testing import CliRunner

from pgrid_cli import Box, ChannelSpec, grid
from pgrid_cli.cli import app
from pgrid_cli.export import (
    Format,
    channel_path,
    export_record,
    first_point,
    format_for_path,
    formats,
    get_format,
    register,
    select_channels,
    write,
)
from pgrid_cli.store.shard import ShardRecord, ShardSet

from .conftest import SAMPLE, triclinic_lattice

SIGMA = 0.4


def _record(numbers, positions, box, channels: ChannelSpec, name: str) -> ShardRecord:
    g = grid(
        positions, box, SIGMA, channels=channels.assign(numbers), n_channels=channels.n_channels
    )
    return ShardRecord(g, box, np.asarray(numbers), np.asarray(positions), name, "test", 0)


@pytest.fixture(scope="module")
def benzene() -> ShardRecord:
    """Benzene in a tight box with a different voxel count per axis (catches axis mix-ups)."""
    from ase.build import molecule

    m = molecule("C6H6")
    box = Box.tight(m.positions, shape=(20, 24, 28), padding=2.5)
    return _record(m.numbers, m.positions, box, ChannelSpec.parse("elements"), "benzene")


@pytest.fixture(scope="module")
def magnesium() -> ShardRecord:
    """Hexagonal Mg (γ = 120°), one periodic cell, non-cubic voxel counts."""
    from ase.build import bulk

    mg = bulk("Mg")
    box = Box.from_lattice(mg.cell[:], shape=(18, 18, 30), origin=(0.3, -0.2, 0.1))
    return _record(mg.numbers, mg.positions, box, ChannelSpec.parse("single"), "Mg")


@pytest.fixture(scope="module")
def triclinic() -> ShardRecord:
    """Two atoms in a general triclinic cell (no right angle, not in standard orientation)."""
    lat = triclinic_lattice() @ _rotation()
    box = Box.from_lattice(lat, shape=(16, 20, 24))
    frac = np.array([[0.1, 0.2, 0.3], [0.6, 0.55, 0.8]])
    return _record([14, 8], frac @ lat, box, ChannelSpec.parse("Si,O"), "SiO")


def _rotation() -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()


def _wrapped(d: np.ndarray) -> np.ndarray:
    """Fractional differences brought into [-½, ½)."""
    return (d + 0.5) % 1.0 - 0.5


# ---------------------------------------------------------------------- registry
def test_registry_and_suffixes(tmp_path):
    assert {f.name for f in formats()} == {"cube", "dx", "chgcar", "mrc"}
    assert format_for_path("a/b.CUBE").name == "cube"
    assert format_for_path("x.dx").name == "dx"
    assert format_for_path("x.map").name == "mrc"
    assert format_for_path("run/CHGCAR").name == "chgcar"
    assert format_for_path("x.chgcar").name == "chgcar"
    with pytest.raises(ValueError, match="cannot tell the export format"):
        format_for_path("x.xyz")
    with pytest.raises(ValueError, match="unknown export format 'vtk'"):
        get_format("vtk")
    with pytest.raises(ValueError, match="registered twice"):
        register(get_format("cube"))
    assert channel_path(tmp_path / "g.cube", "C") == tmp_path / "g.C.cube"
    assert channel_path(tmp_path / "CHGCAR", "Si") == tmp_path / "CHGCAR.Si"


def test_a_new_format_is_one_registration(tmp_path, benzene, monkeypatch):
    import pgrid_cli.export as export

    seen = {}

    def writer(path, g, box, atoms, quantity, comment):
        seen.update(shape=g.shape, atoms=atoms, quantity=quantity)
        path.write_text(comment)

    monkeypatch.setattr(export, "_FORMATS", dict(export._FORMATS))
    register(Format("toy", (".toy",), writer, "a test format"))
    out = write(tmp_path / "g.toy", benzene.grid[1], benzene.box, quantity="amount")
    assert out.read_text() == "" and seen == {
        "shape": (20, 24, 28),
        "atoms": None,
        "quantity": "amount",
    }


def test_write_checks_its_arguments(tmp_path, benzene):
    g, box = benzene.grid[1], benzene.box
    with pytest.raises(ValueError, match="does not match the box"):
        write(tmp_path / "g.cube", g[:, :, :-1], box)
    with pytest.raises(ValueError, match="unknown quantity"):
        write(tmp_path / "g.cube", g, box, quantity="charge")
    with pytest.raises(ValueError, match="both numbers and positions"):
        write(tmp_path / "g.cube", g, box, numbers=benzene.numbers)
    bad = np.array(g)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write(tmp_path / "g.cube", bad, box)


# ---------------------------------------------------------------------- cube
def _read_cube_ase(path):
    from ase.io.cube import read_cube

    with open(path) as fh:
        return read_cube(fh)


@pytest.mark.parametrize("which", ["benzene", "magnesium", "triclinic"])
def test_cube_round_trip_ase(tmp_path, which, request):
    rec: ShardRecord = request.getfixturevalue(which)
    c = int(np.argmax(rec.grid.sum(axis=(1, 2, 3))))
    g, box = rec.grid[c].astype(np.float64), rec.box
    path = write(tmp_path / "g.cube", g, box, numbers=rec.numbers, positions=rec.positions)
    d = _read_cube_ase(path)
    # values: atoms per Bohr³, %e (7 significant digits)
    per_bohr3 = g / (box.voxel_volume / Bohr**3)
    assert d["data"].shape == box.shape
    assert_allclose(d["data"], per_bohr3, rtol=1e-6, atol=1e-12)
    assert_allclose(d["data"].sum() * box.voxel_volume / Bohr**3, g.sum(), rtol=1e-6)
    # the first point is pgrid's origin + ½ voxel; voxel vectors a/nx, b/ny, c/nz
    assert_allclose(d["origin"], box.origin + 0.5 * box.voxel_axes.sum(axis=0), atol=1e-6)
    assert_allclose(d["spacing"], box.voxel_axes, atol=1e-6)
    assert_allclose(d["atoms"].cell[:], box.axes, atol=3e-5)
    assert_array_equal(d["atoms"].numbers, rec.numbers)
    assert_allclose(d["atoms"].positions, rec.positions, atol=1e-6)


def test_cube_round_trip_pymatgen(tmp_path, benzene, magnesium):
    from pymatgen.io.common import VolumetricData

    for rec in (benzene, magnesium):
        g = rec.grid.sum(axis=0, dtype=np.float64)
        path = write(tmp_path / "g.cube", g, rec.box, numbers=rec.numbers, positions=rec.positions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pymatgen's np.fromstring
            v = VolumetricData.from_cube(str(path))
        assert_allclose(
            v.data["total"], g / (rec.box.voxel_volume / Bohr**3), rtol=1e-6, atol=1e-12
        )
        assert_allclose(v.structure.lattice.matrix, rec.box.axes, atol=3e-5)
        # pymatgen gives positions relative to the cube's origin (the first point)
        assert_allclose(v.structure.cart_coords + first_point(rec.box), rec.positions, atol=2e-6)
        assert [s.specie.Z for s in v.structure] == rec.numbers.tolist()


def test_cube_amount_keeps_values(tmp_path, benzene):
    g = benzene.grid[1]
    write(tmp_path / "g.cube", g, benzene.box, quantity="amount", comment="carbon\nchannel")
    text = (tmp_path / "g.cube").read_text()
    assert text.splitlines()[0] == "carbon channel [atoms per voxel]"
    assert_allclose(_read_cube_ase(tmp_path / "g.cube")["data"], g, rtol=1e-6, atol=1e-12)


# ---------------------------------------------------------------------- dx
def _parse_dx(path):
    """The OpenDX 'data follows' subset, parsed here without gridData."""
    counts = origin = None
    delta, values = [], []
    lines = iter(path.read_text().splitlines())
    for line in lines:
        w = line.split()
        if not w or w[0] == "#":
            continue
        if "gridpositions" in w:
            counts = [int(x) for x in w[w.index("counts") + 1 :]]
        elif w[0] == "origin":
            origin = np.array(w[1:], dtype=float)
        elif w[0] == "delta":
            delta.append(np.array(w[1:], dtype=float))
        elif "follows" in w:
            for data_line in lines:
                if data_line.startswith("attribute"):
                    break
                values.extend(float(x) for x in data_line.split())
    return np.array(origin), np.array(delta), np.array(values).reshape(counts)


def test_dx_round_trip_griddata(tmp_path, benzene):
    from gridData import Grid

    g, box = benzene.grid[1].astype(np.float64), benzene.box
    path = write(tmp_path / "g.dx", g, box)
    dx = Grid(str(path))
    assert_allclose(dx.grid, g / box.voxel_volume, rtol=0, atol=1e-14)
    assert_allclose(dx.origin, box.origin + 0.5 * box.voxel_axes.sum(axis=0), atol=1e-6)
    assert_allclose(dx.delta, np.diag(box.voxel_axes), rtol=1e-6)
    # gridData's edges are the voxel faces: they must be pgrid's voxel boundaries
    for d in range(3):
        faces = box.origin[d] + np.arange(box.shape[d] + 1) * box.voxel_axes[d, d]
        assert_allclose(dx.edges[d], faces, atol=2e-5)


@pytest.mark.parametrize("which", ["magnesium", "triclinic"])
def test_dx_triclinic_delta_rows(tmp_path, which, request):
    from gridData import OpenDX

    rec: ShardRecord = request.getfixturevalue(which)
    g, box = rec.grid[0].astype(np.float64), rec.box
    path = write(tmp_path / "g.dx", g, box)
    origin, delta, values = _parse_dx(path)
    assert_allclose(values, g / box.voxel_volume, rtol=0, atol=1e-14)
    assert_allclose(origin, first_point(box), atol=1e-6)
    assert_allclose(delta, box.voxel_axes, rtol=1e-6, atol=1e-7)
    field = OpenDX.field(0)
    field.read(str(path))  # gridData's parser agrees (its Grid refuses skewed deltas)
    assert_allclose(field.components["positions"].delta, box.voxel_axes, rtol=1e-6, atol=1e-7)
    data = field.components["data"].array.reshape(box.shape)
    assert_allclose(data, g / box.voxel_volume, rtol=0, atol=1e-14)


# ---------------------------------------------------------------------- chgcar
@pytest.mark.parametrize("which", ["magnesium", "triclinic"])
def test_chgcar_round_trip_ase(tmp_path, which, request):
    from ase.calculators.vasp import VaspChargeDensity

    rec: ShardRecord = request.getfixturevalue(which)
    g, box = rec.grid.sum(axis=0, dtype=np.float64), rec.box
    path = write(tmp_path / "CHGCAR", g, box, numbers=rec.numbers, positions=rec.positions)
    chg = VaspChargeDensity(str(path))
    atoms = chg.atoms[-1]
    # ASE divides the file's ρ·V by the cell volume: density per Å³ (the volume from the
    # lattice as written, 6 decimals: relative error ~1e-7)
    assert_allclose(chg.chg[-1], g / box.voxel_volume, rtol=1e-6, atol=1e-14)
    assert_allclose(atoms.cell[:], box.axes, atol=1e-6)
    assert_array_equal(atoms.numbers, rec.numbers)
    # CHGCAR point (i, j, k) is at fractional (i, j, k)/n: the atoms were moved by
    # −(origin + ½ voxel) so that they keep their place relative to the voxel centres
    shift = 0.5 / np.asarray(box.shape)
    d = atoms.get_scaled_positions(wrap=False) + shift - box.fractional(rec.positions)
    assert np.abs(_wrapped(d)).max() < 2e-6


def test_chgcar_round_trip_pymatgen(tmp_path, magnesium):
    from pymatgen.io.vasp.outputs import Chgcar

    g, box = magnesium.grid[0].astype(np.float64), magnesium.box
    path = write(tmp_path / "Mg.chgcar", g, box, numbers=[12, 12], positions=magnesium.positions)
    chg = Chgcar.from_file(str(path))
    n = np.prod(box.shape)
    assert_allclose(chg.data["total"], g * n, rtol=1e-10, atol=1e-12)  # ρ·V_cell
    assert_allclose(chg.data["total"].sum() / n, 2.0, rtol=1e-5)  # the number of atoms
    assert_allclose(chg.structure.lattice.matrix, box.axes, atol=1e-6)
    assert [s.specie.symbol for s in chg.structure] == ["Mg", "Mg"]


def test_chgcar_refuses_molecules_and_amounts(tmp_path, benzene, magnesium):
    z, pos = benzene.numbers, benzene.positions
    with pytest.raises(ValueError, match="molecule box, not a cell: export it as cube or dx"):
        write(tmp_path / "CHGCAR", benzene.grid[1], benzene.box, numbers=z, positions=pos)
    with pytest.raises(ValueError, match="ρ·V_cell"):
        write(
            tmp_path / "CHGCAR",
            magnesium.grid[0],
            magnesium.box,
            quantity="amount",
            numbers=magnesium.numbers,
            positions=magnesium.positions,
        )
    with pytest.raises(ValueError, match="needs the atoms"):
        write(tmp_path / "CHGCAR", magnesium.grid[0], magnesium.box)


# ---------------------------------------------------------------------- mrc
def test_mrc_round_trip_mrcfile(tmp_path, benzene):
    import mrcfile

    g, box = benzene.grid[1].astype(np.float64), benzene.box
    path = write(tmp_path / "g.mrc", g, box, comment="benzene carbon")
    out = io.StringIO()
    assert mrcfile.validate(str(path), print_file=out), out.getvalue()
    with mrcfile.open(path) as mrc:
        h = mrc.header
        assert mrc.data.shape == box.shape[::-1]  # z slowest, x fastest
        assert (int(h.mapc), int(h.mapr), int(h.maps)) == (1, 2, 3)
        assert_allclose(mrc.data.transpose(2, 1, 0), g / box.voxel_volume, rtol=1e-6, atol=1e-9)
        voxel = np.array([mrc.voxel_size.x, mrc.voxel_size.y, mrc.voxel_size.z])
        assert_allclose(voxel, np.diag(box.voxel_axes), rtol=1e-6)
        origin = np.array([h.origin.x, h.origin.y, h.origin.z])
        assert_allclose(origin, box.origin + 0.5 * box.voxel_axes.sum(axis=0), atol=1e-5)
        assert (int(h.nxstart), int(h.nystart), int(h.nzstart)) == (0, 0, 0)
        assert_allclose([h.cellb.alpha, h.cellb.beta, h.cellb.gamma], 90.0)
        labels = [bytes(h.label[k]).decode() for k in range(int(h.nlabl))]
        assert any(lb.startswith("benzene carbon [atoms/A^3]") for lb in labels), labels


def test_mrc_round_trip_griddata(tmp_path, benzene):
    """gridData's MRC reader applies the header's axis order and origin itself."""
    from gridData import Grid

    g, box = benzene.grid[6].astype(np.float64), benzene.box  # hydrogen
    path = write(tmp_path / "g.mrc", g, box, quantity="amount")
    m = Grid(str(path))
    assert_allclose(m.grid, g, rtol=1e-6, atol=1e-9)
    assert_allclose(m.origin, first_point(box), atol=1e-5)
    assert_allclose(m.delta, np.diag(box.voxel_axes), rtol=1e-6)


def test_mrc_refuses_skewed_and_rotated_boxes(tmp_path, magnesium, triclinic):
    for rec in (magnesium, triclinic):
        with pytest.raises(ValueError, match=r"triclinic .* export this box as cube or dx"):
            write(tmp_path / "g.mrc", rec.grid[0], rec.box)
    rotated = Box.from_lattice(np.diag([4.0, 5.0, 6.0]) @ _rotation(), shape=8)
    with pytest.raises(ValueError, match="perpendicular but not along"):
        write(tmp_path / "g.mrc", np.zeros(rotated.shape), rotated)


# ---------------------------------------------------------------------- records
def test_select_channels(benzene):
    names = ChannelSpec.parse("elements")
    picked = select_channels(benzene.grid, names, "all")
    assert [label for label, _ in picked] == ["H", "C"]  # the non-empty ones
    ((label, total),) = select_channels(benzene.grid, names, "sum")
    assert label is None and total.sum() == pytest.approx(12.0, rel=1e-5)
    assert select_channels(benzene.grid, names, "C")[0][0] is None
    assert [lb for lb, _ in select_channels(benzene.grid, names, "C,N,*")] == ["C", "N", "other"]
    assert_array_equal(select_channels(benzene.grid, names, "other")[0][1], benzene.grid[10])
    with pytest.raises(ValueError, match="no channel Xe"):
        select_channels(benzene.grid, names, "Xe")
    with pytest.raises(ValueError, match="every channel of this grid is empty"):
        select_channels(np.zeros_like(benzene.grid), names, "all")


def test_export_record_names_files_per_channel(tmp_path, benzene, magnesium):
    spec = ChannelSpec.parse("elements")
    written = export_record(benzene, tmp_path / "b.cube", spec)
    assert written == [tmp_path / "b.H.cube", tmp_path / "b.C.cube"]
    d = _read_cube_ase(written[1])
    assert_allclose(d["data"], benzene.grid[1] / (benzene.box.voxel_volume / Bohr**3), rtol=1e-6)
    assert len(d["atoms"]) == 12  # every atom goes with every channel
    assert (tmp_path / "b.C.cube").read_text().startswith("pgrid benzene (test#0) channel C")
    # a single-channel set writes to the path as given
    assert export_record(magnesium, tmp_path / "Mg.dx", ["all"]) == [tmp_path / "Mg.dx"]
    assert export_record(benzene, tmp_path / "s.mrc", spec, channel="sum") == [tmp_path / "s.mrc"]


# ---------------------------------------------------------------------- command line
runner = CliRunner()


def pgrid(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, text):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.stderr


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    for src, name in ((SAMPLE / "small_molecules.xyz", "mol"), (SAMPLE / "crystals", "xtal")):
        r = pgrid("grid", src, "-o", out / name, "--grid-size", 20, "--workers", 0)
        assert r.exit_code == 0, r.output
    return out


def test_cli_export_molecule(tmp_path, shards):
    mol = ShardSet(shards / "mol")
    i = next(k for k, r in enumerate(mol) if r.name == "benzene")
    rec = mol[i]
    r = pgrid("export", shards / "mol", "--index", i, "-o", tmp_path / "b.cube")
    assert r.exit_code == 0, r.output
    assert "b.H.cube" in r.stdout and "b.C.cube" in r.stdout
    d = _read_cube_ase(tmp_path / "b.C.cube")
    assert_allclose(d["data"], rec.grid[1] / (rec.box.voxel_volume / Bohr**3), rtol=1e-6)
    assert_allclose(d["atoms"].positions, rec.positions, atol=1e-6)

    r = pgrid(
        "export",
        shards / "mol",
        "-i",
        i,
        "-o",
        tmp_path / "b.map",
        "-c",
        "sum",
        "--quantity",
        "amount",
    )
    assert r.exit_code == 0, r.output
    import mrcfile

    with mrcfile.open(tmp_path / "b.map") as m:
        assert_allclose(m.data.transpose(2, 1, 0), rec.grid.sum(axis=0), rtol=1e-6, atol=1e-9)

    r = pgrid(
        "export", shards / "mol", "-i", i, "-o", tmp_path / "b.out", "--format", "dx", "-c", "H"
    )
    assert r.exit_code == 0, r.output
    assert_allclose(
        _parse_dx(tmp_path / "b.out")[2], rec.grid[0] / rec.box.voxel_volume, atol=1e-14
    )

    one_line_error(
        pgrid("export", shards / "mol", "-i", i, "-o", tmp_path / "CHGCAR"), "cube or dx"
    )
    one_line_error(pgrid("export", shards / "mol", "-o", tmp_path / "b.xyz"), "suffix")
    one_line_error(
        pgrid("export", shards / "mol", "-i", 99, "-o", tmp_path / "b.dx"), "out of range"
    )
    one_line_error(
        pgrid("export", shards / "mol", "-o", tmp_path / "b.dx", "-c", "Xe"), "no channel Xe"
    )
    one_line_error(
        pgrid("export", shards / "mol", "-o", tmp_path / "b.dx", "--quantity", "x"), "quantity"
    )


def test_cli_export_crystals(tmp_path, shards):
    from ase.calculators.vasp import VaspChargeDensity

    xtal = ShardSet(shards / "xtal")
    i = next(k for k, r in enumerate(xtal) if r.name == "SiO2")  # α-quartz, hexagonal
    rec = xtal[i]
    r = pgrid("export", shards / "xtal", "-i", i, "-o", tmp_path / "CHGCAR", "-c", "sum")
    assert r.exit_code == 0, r.output
    chg = VaspChargeDensity(str(tmp_path / "CHGCAR"))
    assert_allclose(chg.chg[-1], rec.grid.sum(axis=0) / rec.box.voxel_volume, rtol=1e-6, atol=1e-9)
    assert chg.atoms[-1].get_chemical_formula() == "O6Si3"
    one_line_error(pgrid("export", shards / "xtal", "-i", i, "-o", tmp_path / "q.mrc"), "triclinic")
    j = next(k for k, r in enumerate(xtal) if r.name == "NaCl")  # cubic: MRC is fine
    r = pgrid("export", shards / "xtal", "-i", j, "-o", tmp_path / "nacl.mrc")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.glob("nacl.*.mrc")) == ["nacl.Cl.mrc", "nacl.other.mrc"]
