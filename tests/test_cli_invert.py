"""``pgrid invert``: shards and .npy in, extended XYZ and a JSON report out; bad input
gives one clear line naming the structure while the others are still inverted."""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose
from pymatgen.io.cif import CifParser
from rdkit import Chem, RDLogger
from typer.testing import CliRunner

from pgrid_cli import Box, ChannelSpec, grid_batch
from pgrid_cli.cli import app
from pgrid_cli.invert import match_atoms
from pgrid_cli.invert.sources import GridItem, open_grids, parse_indices
from pgrid_cli.runs.invert import invert_item, invert_source, write_structures
from pgrid_cli.store.shard import ShardMeta, ShardWriter, shard_name

from .conftest import SAMPLE

SIGMA = 0.4
SHAPE = 40
ELEMENTS = ChannelSpec.parse("elements")
runner = CliRunner()


def structures() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(name, numbers, positions Å, lattice or None): 8 drugs (RDKit) and 3 crystals."""
    RDLogger.DisableLog("rdApp.*")
    out: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for m in Chem.SDMolSupplier(str(SAMPLE / "drugs.sdf"), removeHs=False):
        z = np.array([a.GetAtomicNum() for a in m.GetAtoms()])
        out.append((m.GetProp("_Name"), z, m.GetConformer().GetPositions(), None))
        if len(out) == 8:
            break
    for name in ("TiO2_rutile", "SiO2_alpha_quartz", "Cu_fcc_primitive"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = CifParser(str(SAMPLE / "crystals" / f"{name}.cif")).parse_structures()[0]
        out.append((name, np.array(s.atomic_numbers), s.cart_coords, s.lattice.matrix))
    return out


def write_shards(
    directory: Path, structs, splits=(6,), channels=ELEMENTS, sigma=SIGMA, names=None, sources=None
):
    """Grid ``structs`` and write them as shards split at ``splits`` (docs/format.md §6);
    ``names`` and ``sources`` default to the structures' names and "test"."""
    names = [s[0] for s in structs] if names is None else names
    sources = ["test"] * len(structs) if sources is None else sources
    directory.mkdir(parents=True, exist_ok=True)
    boxes = [
        Box.fit(p, SHAPE) if lat is None else Box.from_lattice(lat, SHAPE)
        for _, _, p, lat in structs
    ]
    grids = grid_batch(
        [s[2] for s in structs],
        boxes,
        sigma,
        channels=[channels.assign(s[1]) for s in structs],
        n_channels=channels.n_channels,
    )
    meta = ShardMeta(sigma=sigma, channels=channels.names, grid_shape=(SHAPE,) * 3)
    bounds = [0, *splits, len(structs)]
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        with ShardWriter(directory / shard_name(k), meta) as w:
            w.append(
                grids[a:b],
                boxes[a:b],
                [s[1] for s in structs[a:b]],
                [s[2] for s in structs[a:b]],
                names[a:b],
                sources[a:b],
                list(range(a, b)),
            )
    return grids, boxes


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    structs = structures()
    write_shards(d, structs)
    return d, structs


def invoke(*args: str):
    return runner.invoke(app, ["invert", *map(str, args)])


# ---------------------------------------------------------------------- round trip
def test_shard_directory_round_trip(shard_dir, tmp_path):
    d, structs = shard_dir
    out, rep = tmp_path / "atoms.xyz", tmp_path / "report.json"
    r = invoke(d, "-o", out, "--report", rep, "--workers", 1)
    assert r.exit_code == 0, r.output
    assert "exact composition" in r.output and "100.0%" in r.output
    frames = ase.io.read(out, index=":")
    assert len(frames) == len(structs)
    for (name, z, pos, lat), atoms in zip(structs, frames, strict=True):
        assert atoms.info["name"] == name
        chans = ELEMENTS.assign(z)
        # Elements come from channel names; the catch-all channel '*' gives X.
        star = ELEMENTS.names.index("*")
        got = [ELEMENTS.names.index(s) if s != "X" else star for s in atoms.get_chemical_symbols()]
        if lat is None:
            assert not any(atoms.pbc)
        else:  # crystals: the cell and pbc are written
            assert all(atoms.pbc) and np.allclose(atoms.cell.array, lat)
        m = match_atoms(atoms.positions, got, pos, chans, lattice=lat)
        assert m.exact_composition and m.rmsd < 2e-3, name
    report = json.loads(rep.read_text())
    s = report["summary"]
    assert s["structures"] == s["inverted"] == len(structs) and s["failed"] == 0
    assert s["exact_composition"] == 1.0 and s["atoms_within"] == 1.0
    assert s["median_rmsd"] < 1e-3
    first = report["structures"][0]
    assert first["name"] == structs[0][0] and first["match"]["within"] == len(structs[0][1])
    assert sum(first["counts"].values()) == len(structs[0][1])
    assert first["added"] == 0 and first["removed"] == 0 and first["residual"] < 1e-3


def test_index_selection_and_workers_agree(shard_dir, tmp_path):
    d, structs = shard_dir
    out = tmp_path / "picked.xyz"
    r = invoke(d, "-o", out, "-i", "0,-1,2:11:3", "--quiet")  # 0, 10, 2, 5, 8
    assert r.exit_code == 0, r.output
    names = [a.info["name"] for a in ase.io.read(out, index=":")]
    assert names == [structs[i][0] for i in (0, 10, 2, 5, 8)]
    outs = []
    for workers in (1, 2):  # 11 structures: two chunks, so two processes
        out = tmp_path / f"w{workers}.xyz"
        r = invoke(d, "-o", out, "-i", "::-1", "--workers", workers, "--quiet")
        assert r.exit_code == 0, r.output
        outs.append(ase.io.read(out, index=":"))
    assert [a.info["index"] for a in outs[1]] == list(range(10, -1, -1))
    for a, b in zip(*outs, strict=True):  # the same atoms, whatever the process split
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert_allclose(a.positions, b.positions, atol=1e-9)


def test_npy_input_single_channel_element(tmp_path):
    name, z, pos, _ = structures()[3]
    box = Box.fit(pos, SHAPE)
    g = grid_batch([pos], [box], SIGMA)
    np.save(tmp_path / "g.npy", g)
    meta = {
        "sigma": SIGMA,
        "channels": "single",
        "box": {k: v for k, v in box.to_dict().items() if k != "shape"},
        "names": [name],
        "atoms": [{"numbers": z.tolist(), "positions": pos.tolist()}],
    }
    (tmp_path / "g.json").write_text(json.dumps(meta))
    out = tmp_path / "a.xyz"
    r = invoke(tmp_path / "g.npy", "-o", out, "--element", "C")
    assert r.exit_code == 0, r.output
    atoms = ase.io.read(out)
    assert set(atoms.get_chemical_symbols()) == {"C"} and len(atoms) == len(z)
    assert "100.0%" in r.output  # scored against the atoms in the JSON


def test_pgrid_grid_then_invert(tmp_path):
    """The real pipeline: `pgrid grid` shards (rounded storage), then `pgrid invert`."""
    out, rep = tmp_path / "grids", tmp_path / "r.json"
    inputs = [SAMPLE / "small_molecules.xyz", SAMPLE / "crystals"]
    r = runner.invoke(app, ["grid", *map(str, inputs), "-o", str(out), "--sigma", "0.4", "-q"])
    assert r.exit_code == 0, r.output
    r = invoke(out, "-o", tmp_path / "a.xyz", "--report", rep, "-q")
    assert r.exit_code == 0, r.output
    s = json.loads(rep.read_text())["summary"]
    assert s["structures"] == s["inverted"] == len(ase.io.read(tmp_path / "a.xyz", index=":"))
    assert s["structures"] > 25 and s["exact_composition"] == 1.0 and s["atoms_within"] == 1.0


def test_partial_occupancy_is_noted(tmp_path):
    cif = Path(__file__).parent / "data" / "malformed" / "disorder.cif"
    out = tmp_path / "grids"
    r = runner.invoke(app, ["grid", str(cif), "-o", str(out), "--disorder", "weight", "-q"])
    assert r.exit_code == 0, r.output
    r = invoke(out, "-o", tmp_path / "a.xyz", "-q")
    assert r.exit_code == 0
    assert "inversion assumes unit weights" in r.output


# ---------------------------------------------------------------------- bad input
def test_missing_sigma_and_nan_name_the_structure(shard_dir, tmp_path):
    _, structs = shard_dir
    d = tmp_path / "bad"
    write_shards(d, structs[:6], splits=(3,))
    with h5py.File(d / shard_name(0), "r+") as f:
        del f.attrs["sigma"]  # shard 0 (structures 0-2) lost its σ
    with h5py.File(d / shard_name(1), "r+") as f:
        g = f["grids"][1]
        g[1, 10, 10, 10] = np.nan
        f["grids"][1] = g  # structure 4 has a NaN
    out, rep = tmp_path / "a.xyz", tmp_path / "r.json"
    r = invoke(d, "-o", out, "--report", rep)
    assert r.exit_code == 0, r.output
    assert "shard-00000.h5: no sigma attribute" in r.output
    assert f"structure 4 ({structs[4][0]}): grid has NaN or infinite values" in r.output
    assert "Traceback" not in r.output
    frames = ase.io.read(out, index=":")
    assert [a.info["name"] for a in frames] == [structs[3][0], structs[5][0]]
    report = json.loads(rep.read_text())
    assert [s["ok"] for s in report["structures"]] == [False, False, False, True, False, True]
    assert report["summary"]["failed"] == 4
    strict = invoke(d, "-o", out, "--strict", "-q")
    assert strict.exit_code == 1


def test_shape_mismatch_and_missing_channels_npy(tmp_path):
    box = Box(np.zeros(3), np.eye(3) * 8.0, 16)
    np.save(tmp_path / "g.npy", np.zeros((2, 1, 16, 16, 16), np.float32))
    boxes = [box.to_dict(), box.with_shape(20).to_dict()]
    (tmp_path / "g.json").write_text(json.dumps({"sigma": 0.4, "channels": ["C"], "boxes": boxes}))
    out = tmp_path / "a.xyz"
    r = invoke(tmp_path / "g.npy", "-o", out)
    assert r.exit_code == 0, r.output
    assert "structure 1: grid shape (16, 16, 16) does not match its box (20, 20, 20)" in r.output
    frames = ase.io.read(out, index=":")
    assert len(frames) == 1 and len(frames[0]) == 0  # the all-zero grid: zero atoms
    (tmp_path / "g.json").write_text(json.dumps({"sigma": 0.4, "box": boxes[0]}))
    r = invoke(tmp_path / "g.npy", "-o", out)
    assert r.exit_code == 3  # nothing could be inverted
    assert "structure 0: no channel list given for this grid" in r.output
    assert "no structure could be inverted" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/a.pdb"], "write .xyz or .extxyz"),
        (["-o", "{tmp}/nodir/a.xyz"], "no such directory"),
        (["-o", "{tmp}/a.xyz", "-i", "0:x"], "bad index '0:x'"),
        (["-o", "{tmp}/a.xyz", "-i", "99"], "index 99 is out of range (11 structures)"),
        (["-o", "{tmp}/a.xyz", "--element", "Qq"], "'Qq' is not a chemical element symbol"),
        (["-o", "{tmp}/a.xyz", "--meta", "{tmp}/m.json"], "--meta is for .npy grids"),
    ],
)
def test_bad_options_one_line(shard_dir, tmp_path, args, message):
    d, _ = shard_dir
    r = invoke(d, *[a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a.xyz").exists()


def test_unreadable_inputs(tmp_path):
    r = invoke(tmp_path / "missing", "-o", tmp_path / "a.xyz")
    assert r.exit_code == 2 and "no such shard file or directory" in r.output
    (tmp_path / "g.npy").write_text("not numpy")
    r = invoke(tmp_path / "g.npy", "-o", tmp_path / "a.xyz")
    assert r.exit_code == 2 and "not a readable .npy array" in r.output
    np.save(tmp_path / "h.npy", np.zeros((1, 4, 4, 4), np.float32))
    r = invoke(tmp_path / "h.npy", "-o", tmp_path / "a.xyz")
    assert r.exit_code == 2 and "no metadata file for h.npy" in r.output


def test_parse_indices():
    assert parse_indices(None, 4) == [0, 1, 2, 3]
    assert parse_indices("3,1,1,-1", 5) == [3, 1, 4]
    assert parse_indices("::2, 1:3", 6) == [0, 2, 4, 1]
    assert parse_indices("7:", 5) == []
    with pytest.raises(ValueError, match="out of range"):
        parse_indices("-6", 5)
    with pytest.raises(ValueError, match="bad index"):
        parse_indices("1:2:3:4", 5)


def test_output_appears_only_when_complete(shard_dir, tmp_path):
    d, _ = shard_dir
    out = tmp_path / "a.xyz"
    stream = write_structures(out, invert_source(open_grids(d), [0, 1, 2]))
    next(stream)
    assert not out.exists() and (tmp_path / "a.xyz.partial").exists()
    stream.close()  # the consumer stops early (Ctrl-C): nothing half-written is left
    assert not out.exists() and not (tmp_path / "a.xyz.partial").exists()
    assert len(list(write_structures(out, invert_source(open_grids(d), [0, 1])))) == 2
    assert len(ase.io.read(out, index=":")) == 2


def test_sources_and_names_with_newlines_quotes_and_backslashes(tmp_path):
    """Issue 9 item 14: the comment line quotes ``source`` and ``name`` by the extended-XYZ
    rules, so ASE reads every frame back; a newline (or another control character, or a
    byte that is not UTF-8) is written as a backslash escape, quotes and backslashes
    come back exactly."""
    structs = structures()[:2]
    d = tmp_path / "shards"
    sources = ['dir/new\nline "quoted" back\\slash.sdf', "tab\there {a} [b] 'c'.sdf"]
    names = ['name with "quotes"\tand\\backslash', "x=y"]
    grids, boxes = write_shards(d, structs, splits=(), names=names, sources=sources)
    out = tmp_path / "a.xyz"
    r = invoke(d, "-o", out, "-q")
    assert r.exit_code == 0, r.output
    frames = ase.io.read(out, index=":")
    assert [len(a) for a in frames] == [len(s[1]) for s in structs]
    assert frames[0].info["source"] == 'dir/new\\nline "quoted" back\\slash.sdf'
    assert frames[1].info["source"] == "tab\\there {a} [b] 'c'.sdf"
    assert frames[0].info["name"] == 'name with "quotes"\\tand\\backslash'
    assert frames[1].info["name"] == "x=y"
    # A .npy whose name is not UTF-8: its source is written with the byte escaped.
    item = GridItem(
        0, "n", "g\udcff.npy", 0, grid=grids[0], box=boxes[0], sigma=SIGMA, channels=ELEMENTS
    )
    list(write_structures(tmp_path / "b.xyz", [invert_item(item)]))
    (atoms,) = ase.io.read(tmp_path / "b.xyz", index=":")
    assert atoms.info["source"] == "g\\xff.npy" and len(atoms) == len(structs[0][1])
