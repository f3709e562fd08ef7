"""Inversion (grid → atoms): round trips on real molecules and crystals, close pairs,
noise, float16 storage, the error cases, and the scoring (Hungarian match)."""

from __future__ import annotations

import itertools
import math
import warnings

import ase.io
import cripser
import numpy as np
import pytest
from numpy.testing import assert_allclose
from pymatgen.io.cif import CifParser
from rdkit import Chem, RDLogger
from scipy.special import erf

from pgrid_cli import Box, ChannelSpec, grid, grid_batch
from pgrid_cli.invert import (
    AtomProfile,
    InversionError,
    InvertOptions,
    estimate_noise,
    find_peaks,
    invert_grid,
    match_atoms,
)
from pgrid_cli.invert.peaks import _persistent_maxima

from .conftest import MOSES100 as MOSES
from .conftest import SAMPLE

ELEMENTS = ChannelSpec.parse("elements")


def drugs(n: int, start: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, atomic numbers, positions Å) of drugs.sdf records (RDKit)."""
    RDLogger.DisableLog("rdApp.*")
    supplier = Chem.SDMolSupplier(str(SAMPLE / "drugs.sdf"), removeHs=False)
    out = []
    for i, m in enumerate(supplier):
        if i < start or m is None:
            continue
        z = np.array([a.GetAtomicNum() for a in m.GetAtoms()])
        out.append((m.GetProp("_Name"), z, m.GetConformer().GetPositions()))
        if len(out) == n:
            break
    return out


def crystals() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, numbers, Cartesian positions Å, lattice rows Å): every sample crystal."""
    out = []
    for path in sorted((SAMPLE / "crystals").glob("*.cif")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen's notes on rounding occupancies
            structures = CifParser(str(path)).parse_structures(primitive=False)
        for k, s in enumerate(structures):
            out.append(
                (f"{path.stem}[{k}]", np.array(s.atomic_numbers), s.cart_coords, s.lattice.matrix)
            )
    for k, a in enumerate(ase.io.iread(str(SAMPLE / "crystals" / "perovskite.extxyz"))):
        out.append((f"perovskite[{k}]", a.numbers, a.positions, a.cell.array))
    return out


def roundtrip(z, pos, box, sigma, channels=ELEMENTS, lattice=None, **kw):
    chans = channels.assign(z)
    g = grid(pos, box, sigma, channels=chans, n_channels=channels.n_channels)
    res = invert_grid(g, box, sigma, channels, **kw)
    return res, match_atoms(res.positions, res.channels, pos, chans, lattice=lattice)


# ---------------------------------------------------------------------- the peak height
def _voxel_masses(h: float, sigma: float, offset: float, n: int = 41) -> np.ndarray:
    """1D masses of voxels [k·h, (k+1)·h) − offset of a unit normal at 0 (scipy erf)."""
    edges = (np.arange(-n, n + 1) * h - offset) / (math.sqrt(2.0) * sigma)
    return 0.5 * np.diff(erf(edges))


@pytest.mark.parametrize("h", [(0.25, 0.25, 0.25), (0.2, 0.3, 0.45)])
@pytest.mark.parametrize("sigma", [0.3, 0.5])
def test_atom_profile_matches_erf(h, sigma):
    box = Box(np.zeros(3), np.diag(np.array(h) * 40), 40)
    prof = AtomProfile.of(box, sigma)
    centre = [_voxel_masses(hd, sigma, hd / 2) for hd in h]
    corner = [_voxel_masses(hd, sigma, 0.0) for hd in h]
    assert_allclose(prof.peak_max, np.prod([m.max() for m in centre]), rtol=1e-5)
    assert_allclose(prof.peak_min, np.prod([m.max() for m in corner]), rtol=1e-5)
    assert_allclose(prof.energy, np.prod([np.sum(m**2) for m in centre]), rtol=1e-5)
    assert prof.peak_min < prof.peak_max


# ---------------------------------------------------------------------- peaks
def test_peaks_of_isolated_atoms_are_within_a_voxel():
    rng = np.random.default_rng(3)
    corners = np.array(list(itertools.product((3.0, 8.5), repeat=3)))  # 5.5 Å apart
    pos = corners + rng.uniform(-0.5, 0.5, size=corners.shape)
    box = Box(np.zeros(3), np.eye(3) * 12.0, 48)
    g = grid(pos, box, 0.4)[0]
    peaks = find_peaks(g, box, 0.4)
    assert len(peaks) == len(pos)
    d = np.linalg.norm(peaks.positions[:, None] - pos[None], axis=-1).min(axis=1)
    assert np.all(d < 0.5 * 12.0 / 48)  # the sub-voxel estimate is inside the voxel
    prof = AtomProfile.of(box, 0.4)
    assert np.all(peaks.heights >= prof.peak_min * (1 - 1e-6))
    assert np.all(peaks.persistence >= 0.9 * prof.peak_min)


def _cripser_once(region: np.ndarray, threshold: float) -> set[tuple[int, ...]]:
    """Maxima persisting ≥ threshold by one plain cripser run over the whole region."""
    sub = np.pad(region, 2)
    sub[0, 0, 0] = 2 * sub.max() + 1  # a sentinel that only touches background
    ph = cripser.computePH_T(-sub, maxdim=0, location="birth")
    ph = ph[(ph[:, 0] == 0) & (ph[:, 2] < 1e300)]
    keep = ph[:, 2] - ph[:, 1] >= threshold
    return {tuple(v) for v in ph[keep, 3:6].astype(int) - 2}


def test_blob_decomposition_equals_one_cripser_run():
    # A blob of three voxels whose bounding-box corner is a maximum, and real channels
    # with and without noise.
    tiny = np.zeros((5, 5, 5))
    tiny[2, 1, 2], tiny[2, 2, 2], tiny[2, 3, 2] = 0.0075, 0.0066, 0.0068
    cases = [(tiny, 0.0064), (tiny, 0.0001)]
    rng = np.random.default_rng(8)
    for _, z, pos in drugs(4, start=70):
        box = Box.fit(pos, 40)
        for sigma, noise in ((0.3, 0.0), (0.5, 0.0), (0.4, 0.03)):
            g = grid(pos, box, sigma, channels=ELEMENTS.assign(z), n_channels=11)
            g += rng.normal(scale=noise * g.max(), size=g.shape).astype(np.float32)
            prof = AtomProfile.of(box, sigma)
            for c in np.flatnonzero(g.max(axis=(1, 2, 3)) > 0.1 * prof.peak_min):
                region = g[c].astype(np.float64)
                region[region <= 0.1 * prof.peak_min] = 0
                cases.append((region, 0.1 * prof.peak_min))
    for region, threshold in cases:
        vox, heights, persistence = _persistent_maxima(region, threshold)
        assert {tuple(v) for v in vox} == _cripser_once(region, threshold)
        assert_allclose(heights, region[tuple(vox.T)])
        assert np.all(persistence >= threshold)


def test_close_pair_is_one_peak_but_two_atoms():
    sigma = 0.5
    for d in (0.75, 0.9):  # 1.5σ and 1.8σ: the two Gaussians make a single maximum
        pos = np.array([[6.0, 6.0, 6.0], [6.0 + d, 6.1, 5.95]])
        box = Box(np.zeros(3), np.eye(3) * 12.0, 48)
        g = grid(pos, box, sigma)
        assert len(find_peaks(g[0], box, sigma)) == 1
        res = invert_grid(g, box, sigma, ChannelSpec.parse("single"))
        assert len(res) == 2 and res.added == 1
        m = match_atoms(res.positions, res.channels, pos, [0, 0])
        assert m.rmsd < 1e-3, (d, m)
        assert res.residual < 1e-3


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("sigma", [0.3, 0.5])
def test_drugs_round_trip(sigma):
    for name, z, pos in drugs(5, start=10):
        box = Box.fit(pos, 48, padding=2.0)
        res, m = roundtrip(z, pos, box, sigma)
        assert m.exact_composition, name
        assert m.rmsd < 2e-3 and m.within == len(z), (name, m)
        assert res.residual < 2e-3
        assert res.symbols == [ELEMENTS.element_of_channel(c) for c in res.channels]
        assert_allclose(res.counts.sum(), len(z))
        assert_allclose(res.expected.sum(), len(z), atol=1e-3)


def test_small_molecules_all_box_kinds():
    frames = list(ase.io.iread(str(SAMPLE / "small_molecules.xyz")))
    for a in frames[:12]:
        for kind in ("fit", "tight", "cube:14"):
            box = Box.for_molecule(kind, a.positions, 40, padding=2.5)
            _, m = roundtrip(a.numbers, a.positions, box, 0.4)
            assert m.exact_composition and m.rmsd < 2e-3, (a.info.get("name"), kind, m)


def test_single_channel_round_trip_and_element():
    single = ChannelSpec.parse("single")
    for _, z, pos in drugs(3):
        box = Box.fit(pos, 48)
        res, m = roundtrip(z, pos, box, 0.5, channels=single)
        assert m.exact_composition and m.rmsd < 2e-3
        assert set(res.symbols) == {"X"}
        res_c = invert_grid(grid(pos, box, 0.5), box, 0.5, single, element="c")
        assert set(res_c.symbols) == {"C"} and len(res_c) == len(z)


@pytest.mark.parametrize("channels", ["elements", "single"])
def test_moses_sigma_05(channels):
    spec = ChannelSpec.parse(channels)
    mols = list(ase.io.iread(str(MOSES), index=":8"))
    boxes = [Box.fit(a.positions, 64) for a in mols]
    grids = grid_batch(
        [a.positions for a in mols],
        boxes,
        0.5,
        channels=[spec.assign(a.numbers) for a in mols],
        n_channels=spec.n_channels,
    )
    for a, box, g in zip(mols, boxes, grids, strict=True):
        res = invert_grid(g, box, 0.5, spec)
        m = match_atoms(res.positions, res.channels, a.positions, spec.assign(a.numbers))
        assert m.exact_composition and m.within == len(a) and m.rmsd < 0.01


def test_crystals_round_trip_orthorhombic_and_triclinic():
    seen = set()
    for name, z, pos, lat in crystals():
        for sigma, n in ((0.3, 32), (0.5, 40)):
            box = Box.from_lattice(lat, n)
            seen.add(box.is_orthogonal)
            res, m = roundtrip(z, pos, box, sigma, lattice=lat)
            assert m.exact_composition, (name, sigma)
            assert m.rmsd < 2e-3 and m.within == len(z), (name, sigma, m)
            assert_allclose(res.lattice, lat)
            frac = box.fractional(res.positions)
            assert np.all((frac > -1e-9) & (frac < 1 + 1e-9)), name  # wrapped into the cell
            atoms = res.to_atoms()
            assert all(atoms.pbc) and np.allclose(atoms.cell.array, lat)
    assert seen == {True, False}  # both kinds of cell were tested


def test_atoms_on_voxel_corners_in_a_skewed_cell():
    # Atoms exactly on voxel corners make ties between voxels; in the triclinic cell
    # two diagonal voxels of one corner are both maxima for face neighbours.
    _, z, pos, lat = next(c for c in crystals() if c[0] == "perovskite[1]")
    box = Box.from_lattice(lat, 32)
    g = grid(pos, box, 0.3, channels=ELEMENTS.assign(z), n_channels=ELEMENTS.n_channels)
    c = int(ELEMENTS.assign(z)[0])
    assert len(find_peaks(g[c], box, 0.3)) == len(z)


# ---------------------------------------------------------------------- noise, storage
def test_noisy_grids():
    rng = np.random.default_rng(11)
    exact = 0
    cases = drugs(6, start=30)
    for _, z, pos in cases:
        box = Box.fit(pos, 48)
        chans = ELEMENTS.assign(z)
        g = grid(pos, box, 0.4, channels=chans, n_channels=ELEMENTS.n_channels)
        noise = rng.normal(scale=0.01 * g.max(), size=g.shape).astype(np.float32)
        g += noise
        res = invert_grid(g, box, 0.4, ELEMENTS)
        m = match_atoms(res.positions, res.channels, pos, chans)
        exact += m.exact_composition
        assert m.within >= len(z) - 1 and m.rmsd < 0.05
        # What is left unexplained is the noise (the fit absorbs a sliver of it).
        noise_share = np.linalg.norm(noise) / np.linalg.norm(g)
        assert 0.95 * noise_share < res.residual < 1.001 * noise_share
    assert exact >= len(cases) - 1


def test_noise_level_from_negative_voxels():
    rng = np.random.default_rng(9)
    _, z, pos = drugs(1, start=40)[0]
    box = Box.fit(pos, 48)
    g = grid(pos, box, 0.4, channels=ELEMENTS.assign(z), n_channels=ELEMENTS.n_channels)
    assert estimate_noise(g) == 0.0
    for level in (1e-4, 3e-3):
        noisy = g + rng.normal(scale=level, size=g.shape).astype(np.float32)
        assert_allclose(estimate_noise(noisy), level, rtol=0.03)


@pytest.mark.parametrize("noise", [0.03, 0.1])
def test_heavy_noise_raises_the_levels(noise):
    rng = np.random.default_rng(12)
    _, z, pos = drugs(1, start=60)[0]
    box = Box.fit(pos, 48)
    chans = ELEMENTS.assign(z)
    g = grid(pos, box, 0.4, channels=chans, n_channels=ELEMENTS.n_channels)
    g += rng.normal(scale=noise * g.max(), size=g.shape).astype(np.float32)
    res = invert_grid(g, box, 0.4, ELEMENTS)
    m = match_atoms(res.positions, res.channels, pos, chans)
    assert m.exact_composition and m.rmsd < 0.05, m


def test_not_a_density_is_an_error():
    box = Box(np.zeros(3), np.eye(3) * 10.0, 32)
    with pytest.raises(InversionError, match="channel C integrates to 32768, more than max_at"):
        invert_grid(np.ones((1, 32, 32, 32), np.float32), box, 0.4, ChannelSpec(["C"]))
    # All negative: no density at all, only (strong) noise.
    res = invert_grid(-np.ones((1, 32, 32, 32), np.float32), box, 0.4, ChannelSpec(["C"]))
    assert len(res) == 0


def test_noise_only_grid_gives_no_atoms():
    rng = np.random.default_rng(5)
    box = Box(np.zeros(3), np.eye(3) * 10.0, 40)
    peak = AtomProfile.of(box, 0.4).peak_max
    g = rng.normal(scale=0.01 * peak, size=(2, 40, 40, 40)).astype(np.float32)
    res = invert_grid(g, box, 0.4, ChannelSpec(["C", "H"]))
    assert len(res) == 0


def test_float16_grid():
    _, z, pos = drugs(1, start=50)[0]
    box = Box.fit(pos, 48)
    chans = ELEMENTS.assign(z)
    g = grid(pos, box, 0.4, channels=chans, n_channels=ELEMENTS.n_channels).astype(np.float16)
    res = invert_grid(g, box, 0.4, ELEMENTS)
    m = match_atoms(res.positions, res.channels, pos, chans)
    assert m.exact_composition and m.rmsd < 0.01


# ---------------------------------------------------------------------- bad input
def test_all_zero_grid_gives_zero_atoms():
    box = Box(np.zeros(3), np.eye(3) * 8.0, 16)
    res = invert_grid(np.zeros((11, 16, 16, 16), np.float32), box, 0.4, ELEMENTS)
    assert len(res) == 0 and res.residual == 0.0 and res.positions.shape == (0, 3)
    assert res.to_atoms().get_global_number_of_atoms() == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_an_error(bad):
    box = Box(np.zeros(3), np.eye(3) * 8.0, 16)
    g = grid([[4.0, 4.0, 4.0]], box, 0.4, n_channels=2)
    g[1, 3, 4, 5] = bad
    with pytest.raises(InversionError, match=r"NaN or infinite values \(channel H\)"):
        invert_grid(g, box, 0.4, ChannelSpec(["C", "H"]))


def test_metadata_errors():
    box = Box(np.zeros(3), np.eye(3) * 8.0, 16)
    g = np.zeros((2, 16, 16, 16), np.float32)
    spec = ChannelSpec(["C", "H"])
    with pytest.raises(InversionError, match="does not match its box"):
        invert_grid(g, box.with_shape(20), 0.4, spec)
    with pytest.raises(InversionError, match="no σ"):
        invert_grid(g, box, None, spec)  # type: ignore[arg-type]
    with pytest.raises(InversionError, match="positive width"):
        invert_grid(g, box, -1.0, spec)
    with pytest.raises(InversionError, match="no channel list"):
        invert_grid(g, box, 0.4, None)  # type: ignore[arg-type]
    with pytest.raises(InversionError, match="2 channels but the channel list has 11"):
        invert_grid(g, box, 0.4, ELEMENTS)
    with pytest.raises(InversionError, match=r"shape \(C, nx, ny, nz\)"):
        invert_grid(g[0], box, 0.4, spec)
    with pytest.raises(ValueError, match="not a chemical element"):
        invert_grid(g, box, 0.4, spec, element="Qq")
    with pytest.raises(ValueError, match="fraction"):
        InvertOptions(background=1.5)


# ---------------------------------------------------------------------- scoring
def _brute_force_rmsd(p, q, dist):
    best = math.inf
    for perm in itertools.permutations(range(len(q))):
        best = min(best, math.sqrt(np.mean([dist(p[i], q[j]) ** 2 for i, j in enumerate(perm)])))
    return best


def test_match_atoms_equals_brute_force():
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 5, size=(6, 3))
    found = ref[rng.permutation(6)] + rng.normal(scale=0.3, size=(6, 3))
    m = match_atoms(found, np.zeros(6), ref, np.zeros(6))
    assert_allclose(m.rmsd, _brute_force_rmsd(found, ref, lambda a, b: np.linalg.norm(a - b)))
    assert m.exact_composition and m.n_reference == 6


def test_match_atoms_minimum_image():
    lat = np.array([[4.0, 0.0, 0.0], [2.0, 3.5, 0.0], [0.5, 0.5, 5.0]])  # triclinic
    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 1, size=(5, 3)) @ lat
    shift = rng.integers(-1, 2, size=(5, 3)) @ lat  # whole lattice vectors
    found = ref + shift + rng.normal(scale=0.02, size=(5, 3))
    m = match_atoms(found, np.zeros(5), ref, np.zeros(5), lattice=lat)

    def mic(a, b):
        return min(
            np.linalg.norm(a - b + np.array(n) @ lat)
            for n in itertools.product(range(-2, 3), repeat=3)
        )

    assert_allclose(m.rmsd, _brute_force_rmsd(found, ref, mic), rtol=1e-12)
    assert m.rmsd < 0.1 and m.within == 5


def test_match_atoms_counts_by_channel():
    ref = np.array([[0.0, 0, 0], [1.5, 0, 0], [3.0, 0, 0]])
    # Channel 1 lost an atom; channel 0's atom sits 0.2 Å off.
    m = match_atoms([[0.2, 0, 0], [1.5, 0, 0]], [0, 1], ref, [0, 1, 1], tolerance=0.1)
    assert not m.exact_composition
    assert m.within == 1 and m.n_reference == 3
    assert_allclose(m.rmsd, math.sqrt(0.2**2 / 2))
    empty = match_atoms(np.zeros((0, 3)), [], ref, [0, 1, 1])
    assert math.isnan(empty.rmsd) and empty.within == 0
