"""Readers (pgrid_cli.readers): finding files, cutting records, parsing them with ASE, RDKit and
pymatgen, and rejecting bad records with a reason.

Truth comes from the libraries' own whole-file readers (ase.io.read(":"),
Chem.SDMolSupplier, CifParser on the path) and from the hand-written malformed corpus in
tests/data/malformed, whose expected outcome is listed record by record below.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import ase.io
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from rdkit import Chem, RDConfig

from pgrid_cli import readers as pio
from pgrid_cli.readers import (
    RawRecord,
    Rejection,
    Structure,
    detect_format,
    expand_inputs,
    iter_raw_records,
    iter_records,
)

from .conftest import SAMPLE

CORPUS = Path(__file__).parent / "data" / "malformed"
ASE_DATA = Path(ase.__file__).parent / "test" / "testdata"
MINERALS = sorted((ASE_DATA / "minerals").glob("*.cif"))
RDKIT_EGFR = Path(RDConfig.RDContribDir) / "PBF" / "testData" / "egfr.sdf"
RDKIT_NCI_2D = Path(RDConfig.RDDataDir) / "NCI" / "first_200.props.sdf"

#: The malformed corpus: per file, the outcome of every record (None = a Structure).
EXPECTED = {
    "frames.xyz": [
        None,
        pio.MALFORMED,
        None,
        pio.TRUNCATED,
        None,
        pio.PARSE_ERROR,
        pio.PARSE_ERROR,
        pio.UNKNOWN_ELEMENT,
        pio.NON_FINITE,
        pio.EMPTY,
        pio.BAD_CELL,
        pio.TRUNCATED,
    ],
    "records.sdf": [
        None,
        pio.NO_3D,
        pio.PARSE_ERROR,
        pio.EMPTY,
        pio.PARSE_ERROR,
        pio.EMPTY,
        pio.UNKNOWN_ELEMENT,
        None,
    ],
    "blocks.cif": [pio.PARSE_ERROR, None],
    "disorder.cif": [pio.DISORDER],
    "no_blocks.cif": [pio.MALFORMED],
    "not_gzip.xyz.gz": [pio.UNREADABLE],
    "empty.xyz": [],
    # Issue 9 (the adversarial audit): deflate data corrupted after three records ...
    "corrupt_deflate.sdf.gz": [None, None, None, pio.UNREADABLE],
    # ... count lines of Unicode digits (², ٣) and of 5000 digits, each before a good frame ...
    "count_lines.xyz": [pio.MALFORMED, None, pio.MALFORMED, None, pio.MALFORMED, None],
    # ... and occupancies -0.5, nan, inf, '.', 1.5 (invalid), 0 (a vacancy) and 1.0(1).
    "occupancy.cif": [pio.MALFORMED] * 5 + [pio.DISORDER, None],
}


def outcomes(path, **kw):
    return [None if isinstance(i, Structure) else i.kind for i in iter_records(path, **kw)]


# ---------------------------------------------------------------------- formats and files
@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.xyz", "xyz"),
        ("a.EXTXYZ", "xyz"),
        ("a.sdf", "sdf"),
        ("a.sdf.gz", "sdf"),
        ("a.mol", "sdf"),
        ("dir.v2/a.cif", "cif"),
        ("a.cif.GZ", "cif"),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


def test_detect_format_override_and_errors():
    assert detect_format("whatever.txt", "extxyz") == "xyz"
    assert detect_format("a.xyz", "SDF") == "sdf"
    with pytest.raises(ValueError, match=r"cannot tell the format of a\.pdbqt"):
        detect_format("a.pdbqt")
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format("archive.gz")
    with pytest.raises(ValueError, match="unknown format 'pdbqt'"):
        detect_format("a.xyz", "pdbqt")


def test_expand_inputs_directories_globs_and_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    (tmp_path / ".hidden").mkdir()
    for rel in ["z.xyz", "a.sdf", "b/m.cif", "b/deep/k.xyz.gz", ".hidden/h.xyz", ".dot.xyz"]:
        (tmp_path / rel).write_text("")
    (tmp_path / "README.md").write_text("not an input")
    got = expand_inputs([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "a.sdf",
        "b/deep/k.xyz.gz",
        "b/m.cif",
        "z.xyz",
    ]
    flat = expand_inputs([tmp_path], recursive=False)
    assert [p.name for p in flat] == ["a.sdf", "z.xyz"]
    # Inputs keep their order; a file reached twice is listed once; globs are sorted.
    got = expand_inputs([tmp_path / "z.xyz", str(tmp_path / "*.sdf"), tmp_path])
    assert [p.name for p in got] == ["z.xyz", "a.sdf", "k.xyz.gz", "m.cif"]
    # A file named explicitly is kept whatever its extension (its format is asked later).
    assert expand_inputs([tmp_path / "README.md"]) == [tmp_path / "README.md"]


def test_expand_inputs_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or directory"):
        expand_inputs([tmp_path / "missing.xyz"])
    with pytest.raises(ValueError, match="no files match"):
        expand_inputs([str(tmp_path / "*.sdf")])
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="no input files with a known extension"):
        expand_inputs([tmp_path])


# ---------------------------------------------------------------------- real files
def test_sdf_matches_rdkit_supplier():
    path = SAMPLE / "drugs.sdf"
    ours = list(iter_records(path))
    mols = list(Chem.SDMolSupplier(str(path), removeHs=False))
    assert len(ours) == len(mols) == 126
    for s, m in zip(ours, mols, strict=True):
        assert isinstance(s, Structure) and not s.periodic
        assert s.name == m.GetProp("_Name")
        assert_array_equal(s.numbers, [a.GetAtomicNum() for a in m.GetAtoms()])
        assert_allclose(s.positions, m.GetConformer().GetPositions(), rtol=0, atol=0)
    assert [s.record for s in ours] == list(range(126))


def test_sdf_atomic_numbers_from_symbols_or_rdkit():
    """pgrid reads the atomic numbers of a V2000 block off its element symbols (faster than
    asking RDKit atom by atom) and asks RDKit for anything else: they must agree with
    RDKit's atoms for V2000, V3000, D/T isotopes and query atoms alike."""
    from pgrid_cli.readers.sdf import atomic_numbers

    block = (SAMPLE / "drugs.sdf").read_text().split("$$$$\n")[0]
    mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
    ref = [a.GetAtomicNum() for a in mol.GetAtoms()]
    assert_array_equal(atomic_numbers(mol, block), ref)
    v3000 = Chem.MolToV3KMolBlock(mol)
    assert "V3000" in v3000
    assert_array_equal(atomic_numbers(Chem.MolFromMolBlock(v3000, sanitize=False), v3000), ref)
    lines = block.split("\n")
    h = next(i for i, ln in enumerate(lines[4:], 4) if ln[31:34].strip() == "H")
    for symbol, z in (("D", 1), ("T", 1), ("A", 0), ("Q", 0)):
        edited = "\n".join(
            [*lines[:h], lines[h][:31] + symbol.ljust(3) + lines[h][34:], *lines[h + 1 :]]
        )
        m = Chem.MolFromMolBlock(edited, sanitize=False, removeHs=False)
        got = atomic_numbers(m, edited)
        assert_array_equal(got, [a.GetAtomicNum() for a in m.GetAtoms()])
        assert got[h - 4] == z
    raw = RawRecord("x.sdf", 0, "sdf", edited, "x", 0)  # a query atom: no element
    assert pio.parse_record(raw).kind == pio.UNKNOWN_ELEMENT


def test_gzipped_sdf_equals_plain(tmp_path):
    gz = tmp_path / "drugs.sdf.gz"
    with open(SAMPLE / "drugs.sdf", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain = list(iter_records(SAMPLE / "drugs.sdf"))
    packed = list(iter_records(gz))
    assert len(packed) == len(plain)
    for a, b in zip(plain, packed, strict=True):
        assert a.name == b.name
        assert_array_equal(a.positions, b.positions)


@pytest.mark.skipif(not RDKIT_EGFR.exists(), reason="RDKit's Contrib/PBF/testData/egfr.sdf absent")
def test_rdkit_contrib_sdf():
    ours = list(iter_records(RDKIT_EGFR))
    mols = list(Chem.SDMolSupplier(str(RDKIT_EGFR), removeHs=False, sanitize=False))
    assert len(ours) == len(mols) == 365
    for s, m in zip(ours, mols, strict=True):
        assert isinstance(s, Structure)
        assert_allclose(s.positions, m.GetConformer().GetPositions(), rtol=0, atol=0)
        assert_array_equal(s.numbers, [a.GetAtomicNum() for a in m.GetAtoms()])


@pytest.mark.skipif(not RDKIT_NCI_2D.exists(), reason="RDKit's Data/NCI/first_200.props.sdf absent")
def test_2d_records_are_rejected_not_gridded_flat():
    items = list(iter_records(RDKIT_NCI_2D))
    assert len(items) == 200
    assert all(isinstance(i, Rejection) and i.kind == pio.NO_3D for i in items)
    assert items[7].record == 7 and "no 3D coordinates" in items[7].reason


def test_xyz_matches_ase():
    for path in [SAMPLE / "small_molecules.xyz", SAMPLE / "crystals" / "perovskite.extxyz"]:
        ours = list(iter_records(path))
        frames = ase.io.read(path, index=":")
        assert len(ours) == len(frames)
        for s, a in zip(ours, frames, strict=True):
            assert_array_equal(s.numbers, a.numbers)
            assert_allclose(s.positions, a.positions, rtol=0, atol=0)
            assert s.name == a.info.get("name", "")
            if a.pbc.all():
                assert_allclose(s.lattice, a.cell[:], rtol=0, atol=0)
            else:
                assert s.lattice is None


def test_extxyz_from_ase_testdata():
    path = ASE_DATA / "opls_structure_ext.xyz"
    if not path.exists():
        pytest.skip("ASE's opls_structure_ext.xyz absent")
    ours = list(iter_records(path))
    frames = ase.io.read(path, index=":")
    assert len(ours) == len(frames) >= 1
    for s, a in zip(ours, frames, strict=True):
        assert_array_equal(s.numbers, a.numbers)
        assert_allclose(s.positions, a.positions, rtol=0, atol=0)


@pytest.mark.skipif(not MINERALS, reason="ASE's testdata/minerals CIFs absent")
@pytest.mark.parametrize("path", MINERALS, ids=[p.stem for p in MINERALS])
def test_cod_cifs_match_ase(path):
    """pymatgen (our reader) and ASE's own CIF reader agree on the unit cell's content."""
    (s,) = list(iter_records(path))
    assert isinstance(s, Structure) and s.periodic
    atoms = ase.io.read(path, format="cif")
    assert sorted(s.numbers.tolist()) == sorted(atoms.numbers.tolist())
    assert abs(np.linalg.det(s.lattice)) == pytest.approx(atoms.cell.volume, rel=1e-6)
    assert s.name == path.stem.removeprefix("cod_")


def test_sample_crystals():
    counts = {
        p.name: [len(s) for s in iter_records(p)] for p in sorted((SAMPLE / "crystals").glob("*"))
    }
    assert counts == {
        "Cu_fcc_primitive.cif": [1],
        "NaCl.cif": [8],
        "Si.cif": [8],
        "SiO2_alpha_quartz.cif": [9],
        "TiO2_rutile.cif": [6],
        "multi.cif": [8, 4],
        "perovskite.extxyz": [5, 2],
    }
    (cu,) = list(iter_records(SAMPLE / "crystals" / "Cu_fcc_primitive.cif"))
    lengths = np.linalg.norm(cu.lattice, axis=1)
    assert_allclose(lengths, 2.556, atol=1e-3)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_corpus_every_record_accounted(name):
    path = CORPUS / name
    items = list(iter_records(path))
    assert [None if isinstance(i, Structure) else i.kind for i in items] == EXPECTED[name]
    records = [i.record for i in items]
    if name == "not_gzip.xyz.gz":
        assert records == [-1]  # the file itself could not be read
    else:
        assert records == list(range(len(items)))
    for i in items:
        assert i.source == str(path)
        if isinstance(i, Rejection):
            assert i.reason and "\n" not in i.reason
            assert set(i.to_json()) == {"source", "record", "name", "reason", "kind"}


def test_malformed_reasons_are_specific():
    frames = list(iter_records(CORPUS / "frames.xyz"))
    assert "expected the number of atoms" in frames[1].reason and "'three'" in frames[1].reason
    assert "4 atoms announced but 2 atom lines" in frames[3].reason
    assert frames[3].name == "cut_short"
    assert frames[6].reason == "unknown element symbol 'Xx'"
    assert 'pbc="T T F"' in frames[10].reason
    sdf = list(iter_records(CORPUS / "records.sdf"))
    assert (
        sdf[2].reason == "RDKit cannot parse the record: Atom line too short: 'garbage' on line 6"
    )
    assert sdf[4].reason == "RDKit cannot parse the record: Element 'Xx' not found"
    assert sdf[1].name == "methanol_2d"
    cif = list(iter_records(CORPUS / "blocks.cif"))
    assert "could not convert string to float: 'abc'" in cif[0].reason


def test_rdkit_errors_are_captured_not_printed(capfd):
    list(iter_records(CORPUS / "records.sdf"))
    out, err = capfd.readouterr()
    assert "Atom line too short" not in out + err


def test_truncated_gzip_rejects_where_it_breaks(tmp_path):
    data = gzip.compress((SAMPLE / "drugs.sdf").read_bytes())
    path = tmp_path / "cut.sdf.gz"
    path.write_bytes(data[: len(data) // 2])
    items = list(iter_records(path))
    assert all(isinstance(i, Structure) for i in items[:-1])
    last = items[-1]
    assert isinstance(last, Rejection) and last.kind == pio.UNREADABLE
    assert last.record == len(items) - 1 and "rest of the file is unreadable" in last.reason
    assert 20 < len(items) < 126


def test_read_error_inside_the_first_record(tmp_path):
    path = tmp_path / "cut.xyz.gz"
    xyz = np.random.default_rng(0).normal(size=(500, 3))
    frame = "500\ncloud\n" + "".join(f"He {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in xyz)
    data = gzip.compress(frame.encode())
    path.write_bytes(data[: len(data) // 2])  # the stream breaks inside the first frame
    (item,) = list(iter_records(path))
    assert (item.record, item.kind) == (0, pio.UNREADABLE)
    assert "read error at line" in item.reason


def test_binary_junk_is_rejected_not_fatal(tmp_path):
    junk = np.random.default_rng(4).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    for ext in ("xyz", "sdf", "cif"):
        path = tmp_path / f"junk.{ext}"
        path.write_bytes(junk)
        items = list(iter_records(path))
        assert items and all(isinstance(i, Rejection) for i in items)
        assert all(i.kind == pio.MALFORMED for i in items), [i.reason for i in items]


def test_unopenable_file_is_one_rejection(tmp_path):
    (tmp_path / "dir.xyz").mkdir()
    (item,) = list(iter_raw_records(tmp_path / "dir.xyz", "xyz"))
    assert isinstance(item, Rejection)
    assert item.record == -1 and item.kind == pio.UNREADABLE
    assert item.reason.startswith("cannot open the file")


def test_cif_framing_respects_text_fields(tmp_path):
    path = tmp_path / "t.cif"
    path.write_text("# preamble\ndata_one\n_title\n;\ndata_not_a_block\n;\n_x 1\ndata_two\n_x 2\n")
    raws = list(iter_raw_records(path, "cif"))
    assert [r.name for r in raws] == ["one", "two"]
    assert all(isinstance(r, RawRecord) for r in raws)
    assert "data_not_a_block" in raws[0].text and raws[0].text.startswith("# preamble")


def test_xyz_blank_lines_between_frames(tmp_path):
    path = tmp_path / "gaps.xyz"
    path.write_text("1\na\nH 0 0 0\n\n\n1\nb\nHe 0 0 0\n\n")
    items = list(iter_records(path))
    assert [i.name for i in items] == ["a", "b"]
    assert [int(i.numbers[0]) for i in items] == [1, 2]


# ---------------------------------------------------------------------- disorder
def test_disorder_policies():
    path = CORPUS / "disorder.cif"
    (rej,) = list(iter_records(path))
    assert isinstance(rej, Rejection) and rej.kind == pio.DISORDER
    assert "disorder policy majority or weight" in rej.reason
    (maj,) = list(iter_records(path, options=pio.ReadOptions("majority")))
    # Fe 0.7 / Co 0.3 → Fe; Fe 1.0 stays; Ni 0.4 (vacancy 0.6) is dropped.
    assert sorted(maj.numbers.tolist()) == [26, 26]
    assert_allclose(maj.weights, 1.0)
    (w,) = list(iter_records(path, options=pio.ReadOptions("weight")))
    got = sorted(zip(w.numbers.tolist(), w.weights.tolist(), strict=True))
    assert got == [(26, 0.7), (26, 1.0), (27, 0.3), (28, 0.4)]
    a = 2.87
    assert_allclose(np.diag(w.lattice), [a, a, a], atol=1e-12)
    with pytest.raises(ValueError, match="unknown disorder policy"):
        list(iter_records(path, options=pio.ReadOptions("random")))


# ---------------------------------------------------------------------- issue 9: the audit
def test_corrupt_deflate_rejects_the_record_and_ends_the_file(tmp_path):
    """Item 3: bytes 2000–2040 of a gzipped SDF flipped → zlib.error, caught like any
    other read error: the records before it are read, the one being read is rejected."""
    data = bytearray(gzip.compress((SAMPLE / "drugs.sdf").read_bytes(), mtime=0))
    data[2000:2041] = bytes(b ^ 0xFF for b in data[2000:2041])
    path = tmp_path / "b.sdf.gz"
    path.write_bytes(bytes(data))
    items = list(iter_records(path))
    assert items and all(isinstance(i, Structure) for i in items[:-1])
    last = items[-1]
    assert isinstance(last, Rejection) and last.kind == pio.UNREADABLE
    assert last.record == len(items) - 1 and "rest of the file is unreadable" in last.reason
    assert "decompressing" in last.reason
    # Corrupt from the start: the file itself is unreadable (record -1).
    head = bytearray(gzip.compress((SAMPLE / "drugs.sdf").read_bytes(), mtime=0))
    head[12:60] = bytes(60 - 12)
    path.write_bytes(bytes(head))
    (item,) = list(iter_records(path))
    assert (item.record, item.kind) == (-1, pio.UNREADABLE), item.reason


def test_count_lines_must_be_ascii_digits():
    """Item 4: '²' and '٣' pass str.isdigit() but int() refuses them; 5000 digits pass
    isdigit() but int() refuses them too (Python's digit limit)."""
    items = list(iter_records(CORPUS / "count_lines.xyz"))
    assert [getattr(i, "name", "") for i in items[1::2]] == [
        "after_superscript",
        "after_arabic_indic",
        "after_long_count",
    ]
    assert "expected the number of atoms" in items[0].reason and "'²'" in items[0].reason
    assert "'٣'" in items[2].reason


def test_invalid_occupancies_are_rejected():
    """Item 12: pymatgen drops a site of occupancy -0.5, nan, '.' or 0 and writes 7 of
    8 atoms; pgrid checks the raw values and rejects the block instead."""
    items = list(iter_records(CORPUS / "occupancy.cif"))
    names = [i.name for i in items]
    assert names == ["negative", "not_a_number", "infinite", "dot", "above_one", "vacant", "full"]
    reasons = [i.reason for i in items[:6]]
    assert "site O1 has occupancy -0.5" in reasons[0]
    assert "site O1 has occupancy nan" in reasons[1]
    assert "site O1 has occupancy inf" in reasons[2]
    assert "site O1 has occupancy '.'" in reasons[3]
    assert "site O1 has occupancy 1.5" in reasons[4]
    assert "partial occupancy" in reasons[5] and "O1" in reasons[5]
    assert len(items[6]) == 8
    # The other policies keep a vacancy out (it is one), but never an invalid value.
    for policy in ("majority", "weight"):
        got = list(iter_records(CORPUS / "occupancy.cif", options=pio.ReadOptions(policy)))
        assert [None if isinstance(i, Structure) else i.kind for i in got] == [
            pio.MALFORMED
        ] * 5 + [None, None]
        assert [len(i) for i in got[5:]] == [7, 8]


class Hung(Exception):
    """Raised by :func:`deadline` (not an OSError, which a reader would catch)."""


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""

    def expire(*_):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _one_rejection_each(files):
    """{file name: reason} of inputs that must each give one rejection of the file."""
    reasons = {}
    for f in files:
        got = list(iter_raw_records(f, detect_format(f, "xyz")))
        assert len(got) == 1 and isinstance(got[0], Rejection), f
        assert (got[0].record, got[0].kind) == (-1, pio.UNREADABLE)
        reasons[f.name] = got[0].reason
    return reasons


def test_fifos_sockets_and_devices_are_rejected_never_opened(tmp_path):
    """Item 7: a FIFO (opening it would wait for a writer forever), a socket and a
    device, in a directory or named, give one rejection each (record -1)."""
    d = tmp_path / "in"
    d.mkdir()
    os.mkfifo(d / "a_fifo.xyz")
    (d / "good.xyz").write_text("1\nname=ok\nC 0 0 0\n")
    (d / "null.sdf").symlink_to("/dev/null")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.cif"))
    try:
        with deadline(20):
            files = expand_inputs([d])
            names = [f.name for f in files]
            assert names == ["a_fifo.xyz", "good.xyz", "null.sdf", "sock.cif"]
            (good,) = list(iter_raw_records(files.pop(1), "xyz"))
            assert isinstance(good, RawRecord)
            reasons = _one_rejection_each(files)
            named = _one_rejection_each(expand_inputs([d / "a_fifo.xyz", "/dev/null"]))
    finally:
        sock.close()
    assert "not a regular file (a FIFO)" in reasons["a_fifo.xyz"]
    assert "not a regular file (a socket)" in reasons["sock.cif"]
    assert "not a regular file (a character device)" in reasons["null.sdf"]
    assert named.keys() == {"a_fifo.xyz", "null"}


def test_symlink_loops_are_one_rejection(tmp_path):
    """Item 7: a symlink loop, found in a directory or named, is one rejection."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "loop.xyz").symlink_to(d / "loop.xyz")
    (d / "ping.sdf").symlink_to(d / "pong.sdf")
    (d / "pong.sdf").symlink_to(d / "ping.sdf")
    files = expand_inputs([d])
    assert [f.name for f in files] == ["loop.xyz", "ping.sdf", "pong.sdf"]
    reasons = _one_rejection_each(files)
    assert all("too many levels of symbolic links" in r.lower() for r in reasons.values())
    assert _one_rejection_each(expand_inputs([d / "loop.xyz"])).keys() == {"loop.xyz"}


def test_unreadable_directory_is_one_rejection(tmp_path, monkeypatch):
    """Item 7: a directory that cannot be listed is one rejection (record -1), whether
    it was named or found in a walk; the other files are read."""
    d = tmp_path / "in"
    locked = d / "locked"
    locked.mkdir(parents=True)
    (d / "ok.xyz").write_text("1\nname=ok\nC 0 0 0\n")
    (locked / "hidden_by_permissions.xyz").write_text("1\nx\nC 0 0 0\n")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files = expand_inputs([d])
    assert [f.relative_to(d).as_posix() for f in files] == ["locked", "ok.xyz"]
    reasons = _one_rejection_each(files[:1])
    assert "cannot list the directory: Permission denied" in reasons["locked"]
    (named,) = expand_inputs([locked])
    assert detect_format(named) == "directory"
    assert _one_rejection_each([named]).keys() == {"locked"}


def test_special_files_in_a_run(tmp_path):
    """Item 7 end to end: the run finishes and accounts for every input."""
    from pgrid_cli.runs.grid import GridOptions, grid_files

    d = tmp_path / "in"
    d.mkdir()
    os.mkfifo(d / "a_fifo.xyz")
    (d / "good.xyz").write_text("1\nname=ok\nC 0 0 0\n")
    (d / "loop.sdf").symlink_to(d / "loop.sdf")
    with deadline(60):
        s = grid_files([d], tmp_path / "out", GridOptions(grid_size=8), workers=0)
    assert (s.read, s.written, s.rejected_by_kind) == (3, 1, {pio.UNREADABLE: 2})
    errors = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e["source"]).name for e in errors) == ["a_fifo.xyz", "loop.sdf"]


def test_unreadable_directory_for_real(tmp_path):
    """Item 7 with real permissions (skipped where they do not bind, e.g. for root with
    CAP_DAC_OVERRIDE): a directory that cannot be listed, and a file below it."""
    d = tmp_path / "in"
    (d / "locked").mkdir(parents=True)
    (d / "ok.xyz").write_text("1\nname=ok\nC 0 0 0\n")
    (d / "locked" / "x.xyz").write_text("1\nname=x\nC 0 0 0\n")
    (d / "locked").chmod(0)
    try:
        try:
            os.listdir(d / "locked")
            pytest.skip("permissions do not stop this user")
        except PermissionError:
            pass
        files = expand_inputs([d, d / "locked" / "x.xyz"])
        assert [f.name for f in files] == ["locked", "ok.xyz", "x.xyz"]
        reasons = _one_rejection_each([files[0], files[2]])
        assert reasons["locked"] == "cannot list the directory: Permission denied"
        assert reasons["x.xyz"] == "cannot open the file: Permission denied"
    finally:
        (d / "locked").chmod(0o755)


def _write(path: bytes, text: str) -> None:
    with open(path, "wb") as fh:
        fh.write(text.encode())


def test_file_names_that_are_not_utf8(tmp_path):
    """Item 5: a file name that is not UTF-8 (or holds a newline) is read, and its
    ``source`` is one printable line from which the name's bytes can be recovered."""
    from pgrid_cli.runs.grid import GridOptions, grid_files
    from pgrid_cli.store.shard import ShardSet

    root = os.fsencode(tmp_path / "in")
    os.mkdir(root)
    bad = os.path.join(root, b"a\xff.xyz")  # not UTF-8
    odd = os.path.join(root, b'q"\\\n\x1b.xyz')  # a quote, a backslash, a newline, ESC
    _write(bad, "1\nname=one\nC 0 0 0\nthree\nname=bad\nC 0 0 0\n")
    _write(odd, "1\nname=two\nN 0 0 0\n")
    want_bad = str(tmp_path / "in") + "/a\\xff.xyz"
    want_odd = str(tmp_path / "in") + '/q"\\\\\\n\\x1b.xyz'
    out = tmp_path / "out"
    s = grid_files([os.fsdecode(root)], out, GridOptions(grid_size=8), workers=0)
    assert (s.read, s.written) == (3, 2)
    assert sorted(r.source for r in ShardSet(out)) == sorted([want_bad, want_odd])
    (err,) = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert (err["source"], err["record"]) == (want_bad, 1)
    assert pio.source_name(os.fsdecode(bad)) == want_bad
    assert pio.source_name(odd) == want_odd
    assert pio.source_bytes(want_bad) == bad and pio.source_bytes(want_odd) == odd
    assert pio.source_name("plain/é ü.xyz") == "plain/é ü.xyz"  # ordinary names unchanged

    items = list(iter_records(os.fsdecode(bad)))
    assert [type(i) for i in items] == [Structure, Rejection]
    assert {i.source for i in items} == {want_bad}


def _sdf_record(name: str, extra_lines: int = 0) -> str:
    """A record of drugs.sdf named ``name``, with a data field of ``extra_lines`` lines."""
    text = (SAMPLE / "drugs.sdf").read_text().split("$$$$\n")[0]
    text = name + text[text.index("\n") :]
    if extra_lines:
        text += "> <junk>\n" + "".join("0123456789" * 6 + "\n" for _ in range(extra_lines)) + "\n"
    return text


def test_oversize_records_are_rejected_and_reading_goes_on(tmp_path):
    """Item 13: a record larger than ``max_record_bytes`` is not accumulated: reading
    skips to the next separator and rejects it with the reason; the next one is read."""
    limit = 64 << 10
    opts = pio.ReadOptions(max_record_bytes=limit)
    sdf = tmp_path / "big.sdf"
    big = _sdf_record("big", extra_lines=20_000)  # 1.2 MB
    sdf.write_text(
        _sdf_record("first") + "$$$$\n" + big + "$$$$\n" + _sdf_record("third") + "$$$$\n" + big
    )
    got = list(iter_records(sdf, options=opts))
    assert [None if isinstance(i, Structure) else i.kind for i in got] == [
        None,
        pio.TOO_LARGE,
        None,
        pio.TOO_LARGE,
    ]
    assert [i.name for i in got] == ["first", "big", "third", "big"]
    assert "larger than 64 KiB" in got[1].reason and "max_record_bytes" in got[1].reason
    assert [i.record for i in got] == [0, 1, 2, 3]
    # The default limit reads the same file whole.
    assert [type(i) for i in iter_records(sdf)] == [Structure] * 4

    xyz = tmp_path / "big.xyz"
    n = 30_000
    xyz.write_text(
        f"{n}\nname=cloud\n" + "He 0.000000 0.000000 0.000000\n" * n + "1\nname=after\nC 0 0 0\n"
    )
    got = list(iter_records(xyz, options=opts))
    assert [(type(i), i.name) for i in got] == [(Rejection, "cloud"), (Structure, "after")]
    assert got[0].kind == pio.TOO_LARGE

    cif = tmp_path / "big.cif"
    atoms = "".join(f"He{i} He 0.5 0.5 {i / n:.6f}\n" for i in range(n))
    good = (SAMPLE / "crystals" / "NaCl.cif").read_text()
    cif.write_text(good.replace("data_NaCl", "data_huge") + atoms + good)
    got = list(iter_records(cif, options=opts))
    assert [(type(i), i.name) for i in got] == [(Rejection, "huge"), (Structure, "NaCl")]
    assert got[0].kind == pio.TOO_LARGE


@pytest.mark.parametrize("fmt", ["xyz", "sdf", "cif"])
def test_a_long_single_line_stays_in_bounded_memory(tmp_path, fmt):
    """Item 13: an 8 MB file of one line, read with a 256 KiB limit, never holds it."""
    path = tmp_path / f"line.{fmt}"
    with open(path, "w") as fh:
        fh.write("1" if fmt == "xyz" else "data_x" if fmt == "cif" else "")
        for _ in range(64):
            fh.write("0123456789abcdef" * 8192)  # 128 KiB at a time, no newline
        fh.write("\n1\nname=after\nC 0 0 0\n" if fmt == "xyz" else "\n")
    tracemalloc.start()
    try:
        items = list(iter_raw_records(path, fmt, max_record_bytes=256 << 10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak / 2**20:.1f} MiB for an 8 MiB line"
    assert isinstance(items[0], Rejection) and items[0].record == 0
    assert items[0].kind in (pio.TOO_LARGE, pio.MALFORMED)
    if fmt == "xyz":
        assert isinstance(items[-1], RawRecord) and items[-1].name == "after"


def test_record_size_limit_is_checked():
    assert pio.ReadOptions().max_record_bytes == pio.MAX_RECORD_BYTES == 64 << 20
    with pytest.raises(ValueError, match="max_record_bytes"):
        pio.ReadOptions(max_record_bytes=0)


# ---------------------------------------------------------------------- VASP and pymatgen JSON
def _crystals():
    """Two crystals built with pymatgen: hexagonal (a triclinic-style cell) and cubic."""
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    wurtzite = PmgStructure(
        Lattice.hexagonal(3.25, 5.21),
        ["Zn", "Zn", "O", "O"],
        [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.38], [2 / 3, 1 / 3, 0.88]],
    )
    nacl = PmgStructure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return [wurtzite, nacl]


def _same(got: Structure, want) -> None:
    assert_array_equal(got.numbers, [site.specie.Z for site in want])
    assert_allclose(got.lattice, want.lattice.matrix, rtol=0, atol=1e-6)
    assert_allclose(got.positions, want.cart_coords, rtol=0, atol=1e-5)


def test_poscar_and_contcar_written_by_pymatgen_and_ase(tmp_path):
    """Issue 14: POSCAR/CONTCAR (by name) and .vasp files are read, not refused."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Poscar

    wurtzite, nacl = _crystals()
    Poscar(wurtzite).write_file(tmp_path / "POSCAR")
    Poscar(nacl).write_file(tmp_path / "CONTCAR_relaxed")
    ase.io.write(tmp_path / "nacl.vasp", AseAtomsAdaptor.get_atoms(nacl), format="vasp")
    files = expand_inputs([tmp_path])
    assert sorted(f.name for f in files) == ["CONTCAR_relaxed", "POSCAR", "nacl.vasp"]
    assert {detect_format(f) for f in files} == {"vasp"}
    (s,) = iter_records(tmp_path / "POSCAR")
    _same(s, wurtzite)
    (s,) = iter_records(tmp_path / "CONTCAR_relaxed")
    _same(s, nacl)
    (s,) = iter_records(tmp_path / "nacl.vasp")
    _same(s, nacl)
    # VASP 4 (no species line) with a comment that names no species either: it cannot be
    # read without the POTCAR, and says so in one line.
    lines = (tmp_path / "POSCAR").read_text().splitlines()
    coords = [" ".join(ln.split()[:3]) for ln in lines[8:]]  # no species after them either
    vasp4 = ["relaxed", *lines[1:5], *lines[6:8], *coords]
    (tmp_path / "POSCAR_vasp4").write_text("\n".join(vasp4) + "\n")
    (rej,) = iter_records(tmp_path / "POSCAR_vasp4")
    assert isinstance(rej, Rejection) and rej.kind == pio.PARSE_ERROR


def test_pymatgen_json_one_a_list_and_entries(tmp_path):
    """Issue 14: pymatgen Structure JSON, a list of them, and ComputedStructureEntry
    objects (their energy kept as a property), plain or gzipped."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    wurtzite, nacl = _crystals()
    (tmp_path / "one.json").write_text(json.dumps(wurtzite.as_dict()))
    with gzip.open(tmp_path / "list.json.gz", "wt") as f:
        json.dump([wurtzite.as_dict(), nacl.as_dict()], f)
    entries = [
        ComputedStructureEntry(nacl, -27.5, entry_id="mp-22862", data={"band_gap": 5.0}),
        ComputedStructureEntry(wurtzite, -18.25, entry_id="mp-2133"),
    ]
    (tmp_path / "entries.json").write_text(json.dumps([e.as_dict() for e in entries]))
    (one,) = iter_records(tmp_path / "one.json")
    _same(one, wurtzite)
    a, b = iter_records(tmp_path / "list.json.gz")
    _same(a, wurtzite)
    _same(b, nacl)
    assert (a.record, b.record) == (0, 1)
    e0, e1 = iter_records(tmp_path / "entries.json")
    _same(e0, nacl)
    assert e0.name == "mp-22862" and e1.name == "mp-2133"
    assert e0.info["properties"]["energy"] == pytest.approx(-27.5)
    assert e0.info["properties"]["band_gap"] == 5.0


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("{not json", "malformed record", "not valid JSON"),
        ("[]", "empty structure", "empty JSON list"),
        ('[{"@class": "Molecule"}, 3]', "parse error", "not a pymatgen Structure"),
    ],
)
def test_bad_json_is_one_rejection_per_record(tmp_path, text, kind, reason):
    (tmp_path / "bad.json").write_text(text)
    items = list(iter_records(tmp_path / "bad.json"))
    assert all(isinstance(r, Rejection) for r in items)
    assert items[0].kind == kind and reason in items[0].reason
