"""The native kernel against independent truth: the float64 NumPy reference, analytic sums,
periodic symmetry, finite differences — on every instruction-set path of this CPU."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import ndtr

from pgrid_cli import (
    Batch,
    Box,
    ChannelSpec,
    _core,
    gradient_batch,
    grid,
    grid_batch,
    grid_gradient,
    render_batch,
)
from pgrid_cli.core.reference import reference_gradient, reference_grid

from .conftest import triclinic_lattice

ABS_TOL = 1e-6  # docs/format.md §3: axis-aligned / orthogonal boxes
TRIC_REL = 1e-4  # docs/format.md §3: triclinic cells, relative to the grid maximum


def _random_molecule(rng, m=25, spread=2.5):
    return rng.normal(size=(m, 3)) * spread


# ---------------------------------------------------------------------- orthogonal boxes
@pytest.mark.parametrize("shape", [(24, 26, 28), (16, 16, 16), (12, 9, 37), (5, 7, 3), (32, 32, 1)])
def test_molecule_box_matches_reference(isa, shape):
    rng = np.random.default_rng(sum(shape))
    pos = _random_molecule(rng)
    chans = rng.integers(0, 3, size=len(pos))
    box = Box(Box.fit(pos).origin, Box.fit(pos).axes, shape)
    ref = reference_grid(pos, box, 0.5, channels=chans, n_channels=3)
    got = grid(pos, box, 0.5, channels=chans, n_channels=3, isa=isa)
    assert got.dtype == np.float32 and got.shape == (3, *shape) and got.flags.c_contiguous
    assert_allclose(got, ref, rtol=0, atol=ABS_TOL)


def test_real_molecules_match_reference(isa, ase_molecules, drug_molecules):
    spec = ChannelSpec.parse("elements")
    for name, pos, z in ase_molecules + drug_molecules:
        for sigma, n in ((0.3, 32), (0.5, 24), (1.0, 16)):
            box = Box.fit(pos, shape=n)
            ref = reference_grid(pos, box, sigma, channels=spec.assign(z), n_channels=11)
            got = grid(pos, box, sigma, channels=spec.assign(z), n_channels=11, isa=isa)
            assert_allclose(got, ref, rtol=0, atol=ABS_TOL, err_msg=f"{name} sigma={sigma}")


def test_tight_and_rotated_boxes(isa):
    rng = np.random.default_rng(7)
    pos = _random_molecule(rng, 15)
    tight = Box.tight(pos, shape=(20, 14, 10), padding=1.0)  # non-cubic voxels
    assert_allclose(
        grid(pos, tight, 0.4, isa=isa), reference_grid(pos, tight, 0.4), atol=ABS_TOL, rtol=0
    )
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # orthogonal but not axis-aligned
    rot = Box(pos.mean(0) - 6.0, q * 12.0, (18, 18, 18))
    assert rot.is_orthogonal
    assert_allclose(
        grid(pos, rot, 0.6, isa=isa), reference_grid(pos, rot, 0.6), atol=ABS_TOL, rtol=0
    )


def test_atoms_outside_box_contribute_their_inside_part(isa):
    box = Box(origin=(0, 0, 0), axes=np.eye(3) * 4.0, shape=8)
    pos = np.array([[-1.0, 2.0, 2.0], [2.0, 2.0, 4.7], [30.0, 2.0, 2.0]])  # last one far away
    got = grid(pos, box, 0.5, isa=isa)
    assert_allclose(got, reference_grid(pos, box, 0.5), atol=ABS_TOL, rtol=0)
    # Analytic: atom 0's part in x >= 0, atom 1's in z <= 4, none of atom 2; both lose
    # the bit beyond 4 sigma along their other two axes.
    inside_4s = (ndtr(4.0) - ndtr(-4.0)) ** 2
    expect = ((1 - ndtr(1.0 / 0.5)) + ndtr(-0.7 / 0.5)) * inside_4s
    assert_allclose(got.sum(), expect, rtol=1e-5)


def test_normalisation_when_box_holds_atoms(isa, ase_molecules):
    for _, pos, _ in ase_molecules:
        box = Box.fit(pos, shape=40, padding=5 * 0.4 + 0.1)  # every atom at least 5 sigma inside
        assert_allclose(grid(pos, box, 0.4, isa=isa).sum(dtype=np.float64), len(pos), rtol=1e-5)


def test_per_atom_sigma_and_weights(isa):
    rng = np.random.default_rng(3)
    pos = _random_molecule(rng, 12)
    sig = rng.uniform(0.2, 1.2, size=12)
    w = rng.uniform(-1.0, 3.0, size=12)  # negative weights (charges) are allowed
    box = Box.fit(pos, shape=20)
    got = grid(pos, box, sig, weights=w, isa=isa)
    assert_allclose(got, reference_grid(pos, box, sig, weights=w), atol=ABS_TOL, rtol=0)


def test_empty_structure_gives_zero_grid(isa):
    box = Box(origin=(0, 0, 0), axes=np.eye(3) * 5, shape=6)
    out = np.full((2, 6, 6, 6), 7.0, dtype=np.float32)
    grid(np.zeros((0, 3)), box, 0.5, n_channels=2, out=out, isa=isa)
    assert not out.any()


# ---------------------------------------------------------------------- periodic cells
@pytest.mark.parametrize("sigma", [0.3, 0.7, 2.5, 6.0])  # 6 Å: the Gaussian spans several cells
def test_periodic_orthorhombic_matches_reference(isa, sigma):
    rng = np.random.default_rng(int(sigma * 10))
    lat = np.diag([5.0, 6.0, 7.5])
    pos = rng.uniform(-0.2, 1.2, size=(9, 3)) @ lat  # some atoms outside the cell
    box = Box.from_lattice(lat, shape=(15, 18, 21))
    got = grid(pos, box, sigma, isa=isa)
    assert_allclose(got, reference_grid(pos, box, sigma), atol=ABS_TOL, rtol=0)
    assert_allclose(got.sum(dtype=np.float64), len(pos), rtol=1e-5)


@pytest.mark.parametrize("periodic", [True, False])
def test_triclinic_matches_reference(isa, periodic):
    rng = np.random.default_rng(11)
    lat = triclinic_lattice()
    pos = rng.uniform(0.1, 0.9, size=(6, 3)) @ lat
    box = Box(np.zeros(3), lat, (12, 13, 14), periodic)
    assert not box.is_orthogonal
    ref = reference_grid(pos, box, 0.6)
    got = grid(pos, box, 0.6, isa=isa)
    assert_allclose(got, ref, atol=TRIC_REL * ref.max(), rtol=0)
    if periodic:
        assert_allclose(got.sum(dtype=np.float64), len(pos), rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.15, 0.4, 1.5])
def test_triclinic_sums_to_atoms_per_cell(isa, sigma):
    lat = triclinic_lattice(4.0, 4.5, 5.0, 70, 110, 60)
    rng = np.random.default_rng(5)
    pos = rng.uniform(size=(5, 3)) @ lat
    g = grid(pos, Box.from_lattice(lat, shape=(20, 22, 24)), sigma, isa=isa)
    assert_allclose(g.sum(dtype=np.float64), 5.0, rtol=1e-5)


@pytest.mark.parametrize("h_over_sigma", [2.0, 9.0, 20.0])  # one rule / 16 nodes / composite
def test_triclinic_coarse_voxels(isa, h_over_sigma):
    lat = triclinic_lattice(3.0, 3.2, 3.4)
    box = Box.from_lattice(lat, shape=(5, 5, 5))
    sigma = float(box.lengths.max() / 5 / h_over_sigma)
    pos = np.array([[0.37, 0.41, 0.52], [0.8, 0.15, 0.33]]) @ lat
    ref = reference_grid(pos, box, sigma)
    got = grid(pos, box, sigma, isa=isa)
    assert_allclose(got, ref, atol=TRIC_REL * ref.max(), rtol=0)
    assert_allclose(got.sum(dtype=np.float64), 2.0, rtol=1e-5)


def test_triclinic_sigma_too_narrow_for_voxels():
    lat = triclinic_lattice(30.0, 32.0, 34.0)
    with pytest.raises(ValueError, match="sigma is too narrow for these triclinic voxels"):
        grid(np.zeros((1, 3)), Box.from_lattice(lat, 4), 0.05)


@pytest.mark.parametrize("lattice", ["ortho", "tric"])
def test_periodic_roll_invariance(isa, lattice):
    lat = np.diag([6.0, 7.0, 8.0]) if lattice == "ortho" else triclinic_lattice()
    shape = (12, 14, 16)
    box = Box.from_lattice(lat, shape)
    rng = np.random.default_rng(2)
    pos = rng.uniform(size=(7, 3)) @ lat
    g0 = grid(pos, box, 0.5, isa=isa)
    step = box.voxel_axes
    for axis, shift in ((0, 1), (1, 3), (2, -2)):
        moved = grid(pos + shift * step[axis], box, 0.5, isa=isa)
        tol = ABS_TOL if lattice == "ortho" else TRIC_REL * g0.max()
        assert_allclose(moved, np.roll(g0, shift, axis=1 + axis), atol=tol, rtol=0)


def test_crystals_from_sample_data(isa):
    import warnings

    from pymatgen.io.cif import CifParser

    from .conftest import SAMPLE

    for path in sorted((SAMPLE / "crystals").glob("*.cif")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen notes about rounded coordinates
            structures = CifParser(str(path)).parse_structures(primitive=False)
        for s in structures:
            box = Box.from_lattice(s.lattice.matrix, shape=(10, 11, 12))
            got = grid(s.cart_coords, box, 0.5, isa=isa)
            ref = reference_grid(s.cart_coords, box, 0.5)
            tol = ABS_TOL if box.is_orthogonal else TRIC_REL * ref.max()
            assert_allclose(got, ref, atol=tol, rtol=0, err_msg=path.name)
            assert_allclose(got.sum(dtype=np.float64), len(s), rtol=1e-5)


# ---------------------------------------------------------------------- gradients
def _fd_gradient(pos, box, sigma, dgrid, h=1e-3):
    """Central differences of L = sum(dgrid * grid) with the float64 reference."""
    out = np.zeros_like(pos)
    for a in range(len(pos)):
        for d in range(3):
            p, m = pos.copy(), pos.copy()
            p[a, d] += h
            m[a, d] -= h
            lp = float(np.sum(dgrid * reference_grid(p, box, sigma)))
            lm = float(np.sum(dgrid * reference_grid(m, box, sigma)))
            out[a, d] = (lp - lm) / (2 * h)
    return out


@pytest.mark.parametrize("kind", ["molecule", "periodic", "triclinic"])
def test_gradient_matches_reference_and_finite_differences(isa, kind):
    rng = np.random.default_rng(9)
    if kind == "molecule":
        pos = _random_molecule(rng, 5, 1.5)
        box = Box.fit(pos, shape=(14, 15, 16))
    else:
        lat = np.diag([5.0, 5.5, 6.0]) if kind == "periodic" else triclinic_lattice(5, 5.5, 6)
        pos = rng.uniform(size=(4 if kind == "periodic" else 2, 3)) @ lat
        box = Box.from_lattice(lat, shape=(10, 11, 12) if kind == "periodic" else (8, 9, 10))
    dgrid = rng.normal(size=(1, *box.shape)).astype(np.float32)
    got = grid_gradient(pos, box, 0.5, dgrid, isa=isa)
    ref = reference_gradient(pos, box, 0.5, dgrid.astype(np.float64))
    scale = np.abs(ref).max()
    tol = 1e-5 * scale if kind != "triclinic" else 1e-4 * scale
    assert_allclose(got, ref, atol=tol, rtol=0)
    assert_allclose(
        got, _fd_gradient(pos, box, 0.5, dgrid.astype(np.float64)), atol=1e-4 * scale + tol, rtol=0
    )


def test_weight_gradient_is_unit_grid_sum(isa):
    rng = np.random.default_rng(4)
    pos = _random_molecule(rng, 6, 1.0)
    box = Box.fit(pos, shape=16)
    w = rng.uniform(0.5, 2.0, size=6)
    dgrid = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
    _, dw = grid_gradient(pos, box, 0.4, dgrid, weights=w, isa=isa, return_weights=True)
    for a in range(6):  # L is linear in w_a: dL/dw_a = sum(dgrid * grid of atom a alone)
        alone = reference_grid(pos[a : a + 1], box, 0.4)
        assert_allclose(dw[a], np.sum(dgrid * alone), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- threads and layout
def _batch(rng, n=7, shape=20, channels=3):
    pos = [_random_molecule(rng, int(rng.integers(0, 30))) for _ in range(n)]
    pos[2] = np.zeros((0, 3))  # an empty structure in the middle
    boxes = [Box.cube(p if len(p) else np.zeros((1, 3)), 14.0, shape) for p in pos]
    chans = [rng.integers(0, channels, size=len(p)) for p in pos]
    return Batch.from_structures(pos, boxes, 0.5, channels=chans, n_channels=channels)


@pytest.mark.parametrize("streaming", [0, 1])
def test_empty_channels_and_planes_are_written_as_zeros(isa, streaming):
    # Planes no atom reaches are zeroed directly (not by the tiles): an output full of
    # NaN must come back with exact zeros there, and the reference elsewhere.
    pos = np.array([[1.0, 1.2, 1.4], [1.3, 0.9, 1.1]])
    box = Box(np.zeros(3), np.eye(3) * 12.0, (24, 16, 20))  # atoms in the first planes only
    chans = np.array([0, 2], np.int32)
    out = np.full((1, 4, 24, 16, 20), np.nan, np.float32)
    _core.grid_batch(
        pos,
        np.array([0, 2]),
        chans,
        np.full(2, 0.4),
        np.ones(2),
        np.zeros((1, 3)),
        box.axes[None],
        np.zeros(1, bool),
        out,
        1,
        isa,
        streaming,
    )
    ref = reference_grid(pos, box, 0.4, channels=chans, n_channels=4)
    assert_allclose(out[0], ref, atol=1e-6, rtol=0)
    assert np.all(out[0, 1] == 0) and np.all(out[0, 3] == 0)
    assert np.all(out[0, 0, 12:] == 0)  # 6σ = 2.4 Å = 4.8 planes from the atoms


@pytest.mark.parametrize("streaming", [0, 1])
def test_threads_and_streaming_give_identical_output(isa, streaming):
    rng = np.random.default_rng(12)
    b = _batch(rng)
    outs = []
    for threads in (1, 2, 3, 8):
        out = np.full(b.grid_shape, np.nan, dtype=np.float32)
        _core.grid_batch(
            b.positions,
            b.offsets,
            b.channels,
            b.sigmas,
            b.weights,
            b.origins,
            b.axes,
            b.periodic,
            out,
            threads=threads,
            isa=isa,
            streaming=streaming,
        )
        outs.append(out)
    for o in outs[1:]:
        assert_array_equal(o, outs[0])
    ref = np.stack(
        [
            reference_grid(
                b.positions[b.offsets[s] : b.offsets[s + 1]],
                b.box(s),
                0.5,
                channels=b.channels[b.offsets[s] : b.offsets[s + 1]],
                n_channels=3,
            )
            for s in range(b.n_structures)
        ]
    )
    assert_allclose(outs[0], ref, atol=ABS_TOL, rtol=0)


def test_single_large_structure_split_over_threads(isa):
    """One structure, several threads: planes are shared out; the result is unchanged."""
    rng = np.random.default_rng(13)
    lat = np.diag([9.0, 10.0, 11.0])
    pos = rng.uniform(size=(60, 3)) @ lat
    for box in (Box.from_lattice(lat, 48), Box.from_lattice(triclinic_lattice(9, 10, 11), 24)):
        one = grid(pos, box, 0.5, threads=1, isa=isa)
        for t in (2, 5):
            assert_array_equal(grid(pos, box, 0.5, threads=t, isa=isa), one)


def test_batch_matches_one_at_a_time(isa):
    rng = np.random.default_rng(14)
    b = _batch(rng)
    whole = render_batch(b, isa=isa)
    for s in range(b.n_structures):
        sl = slice(b.offsets[s], b.offsets[s + 1])
        one = grid(b.positions[sl], b.box(s), 0.5, channels=b.channels[sl], n_channels=3, isa=isa)
        assert_array_equal(whole[s], one)


def test_grid_batch_friendly_form():
    rng = np.random.default_rng(15)
    pos = [_random_molecule(rng, 5) for _ in range(3)]
    boxes = [Box.fit(p, shape=12) for p in pos]
    out = grid_batch(pos, boxes, [0.4, 0.5, np.full(5, 0.6)])
    assert out.shape == (3, 1, 12, 12, 12)
    for s, sig in enumerate((0.4, 0.5, 0.6)):
        assert_allclose(out[s, 0], reference_grid(pos[s], boxes[s], sig)[0], atol=ABS_TOL, rtol=0)


# ---------------------------------------------------------------------- special functions
def test_normal_cdf_is_double_precision(isa):
    t = np.concatenate([np.linspace(-40, 40, 20001), [-9.2, 9.2, 0.0, -1e-300, 1e-300]])
    cdf, pdf = _core.normal_cdf(t, isa)
    assert_allclose(cdf, ndtr(t), rtol=0, atol=5e-16)
    tail = (t < -3) & (t > -9.19)  # the fitted range keeps relative digits in the tail ...
    assert_allclose(cdf[tail], ndtr(t[tail]), rtol=1e-13, atol=1e-300)
    far = t <= -9.19  # ... and beyond it the kernel returns 0: erfc(6.5)/2 < 2e-20
    assert np.all(cdf[far] <= 2e-20) and np.all(ndtr(t[far]) <= 2e-20)
    # exp(-t²/2) inherits the rounding of t²/2 itself (in NumPy too): ~ (t²/2)·eps.
    exact = np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)
    normal = exact > 1e-300  # below, the kernel flushes exp to 0
    rel = np.abs(pdf - exact)[normal] / exact[normal]
    assert np.all(rel <= 8e-16 * np.maximum(1.0, 0.5 * t[normal] ** 2) + 1e-15)  # both sides round
    assert np.all(pdf[~normal] <= 1e-300)


# ---------------------------------------------------------------------- API messages
def test_api_messages_name_what_is_wrong(monkeypatch):
    """Issue 9, item 17: a wrong argument gets a message about that argument, never an
    AttributeError, a pybind signature dump or a silent truncation."""
    pos = np.zeros((1, 3))
    box = Box.fit(pos, 8)
    with pytest.raises(TypeError, match=r"^box must be a pgrid_cli\.Box, got str$"):
        grid(pos, "box")
    with pytest.raises(TypeError, match=r"^box must be a pgrid_cli\.Box"):
        grid_gradient(pos, "box", 0.5, np.ones((1, 8, 8, 8), np.float32))
    for threads in (2**31, 0, -3):
        with pytest.raises(ValueError, match=r"^threads must be between 1 and 1024"):
            grid(pos, box, threads=threads)
    with pytest.raises(ValueError, match=r"^threads must be a whole number"):
        grid(pos, box, threads=1.5)
    with pytest.raises(ValueError, match=r"channels\[0\] must hold whole numbers"):
        grid(pos, box, channels=[1.7], n_channels=2)
    with pytest.raises(ValueError, match="must hold whole numbers"):
        grid_batch([pos], [box], channels=[np.array([np.nan])], n_channels=2)
    # A float that is a whole number is still a channel index.
    g = grid(pos, box, channels=np.array([1.0]), n_channels=2)
    assert g[0].sum() == 0 and g[1].sum() > 0.99
    for bad in ("-1", "0", "nan", "lots"):
        monkeypatch.setenv("PGRID_MAX_GRID_BYTES", bad)
        with pytest.raises(ValueError, match="PGRID_MAX_GRID_BYTES must be a positive number"):
            grid(pos, box)
    monkeypatch.setenv("PGRID_MAX_GRID_BYTES", "1000")
    with pytest.raises(ValueError, match=r"needs .* GiB, more than the .* limit"):
        grid(pos, box)


# ---------------------------------------------------------------------- validation
def _args(m=3, b=1, shape=(4, 4, 4), c=1):
    return dict(
        positions=np.zeros((m, 3)),
        offsets=np.array([0, m], dtype=np.int64)[: b + 1],
        channels=np.zeros(m, np.int32),
        sigmas=np.full(m, 0.5),
        weights=np.ones(m),
        origins=np.zeros((b, 3)),
        axes=np.tile(np.eye(3) * 4, (b, 1, 1)),
        periodic=np.zeros(b, bool),
        out=np.zeros((b, c, *shape), np.float32),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"positions": np.zeros((3, 2))}, "positions has shape"),
        ({"positions": np.zeros((3, 3), np.float32)}, "positions must have dtype float64"),
        ({"positions": np.zeros((6, 3))[::2]}, "positions must be C-contiguous"),
        ({"channels": np.zeros(3, np.int64)}, "channels must have dtype int32"),
        ({"channels": np.array([0, 1, 0], np.int32)}, r"channel 1 is out of range \[0, 1\)"),
        ({"channels": np.array([0, -1, 0], np.int32)}, "channel -1 is out of range"),
        ({"sigmas": np.array([0.5, 0.0, 0.5])}, "sigma must be a positive length"),
        ({"sigmas": np.array([0.5, np.nan, 0.5])}, "sigma must be a positive length"),
        ({"weights": np.array([1.0, np.inf, 1.0])}, "weight is not finite"),
        (
            {"positions": np.array([[0, 0, 0], [np.nan, 0, 0], [0, 0, 0.0]])},
            r"atom 1: position \(nan",
        ),
        ({"offsets": np.array([0, 2], np.int64)}, "offsets must end at the number of atoms"),
        ({"offsets": np.array([1, 3], np.int64)}, "offsets must start at 0"),
        # An offset past the atoms in the middle must be caught before any atom is read.
        (
            {
                "offsets": np.array([0, 100, 3], np.int64),
                "origins": np.zeros((2, 3)),
                "axes": np.tile(np.eye(3) * 4, (2, 1, 1)),
                "periodic": np.zeros(2, bool),
                "out": np.zeros((2, 1, 4, 4, 4), np.float32),
            },
            "non-decreasing",
        ),
        ({"axes": np.zeros((1, 3, 3))}, "degenerate"),
        ({"axes": np.full((1, 3, 3), np.nan)}, "not finite"),
        ({"origins": np.zeros((2, 3))}, "origins has shape"),
        ({"out": np.zeros((1, 1, 4, 4, 4), np.float64)}, "out must have dtype float32"),
        ({"out": np.zeros((2, 1, 4, 4, 4), np.float32)}, "out holds 2 structures"),
        ({"out": np.zeros((1, 1, 4, 4, 4), np.float32)[..., ::1].T.copy().T}, "C-contiguous"),
        ({"out": np.zeros((1, 4, 4, 4), np.float32)}, "out must have 5 dimensions"),
    ],
)
def test_native_boundary_rejects_bad_arrays(change, message):
    args = _args()
    args.update(change)
    with pytest.raises(ValueError, match=message):
        _core.grid_batch(**args)


def _one_args(m=3, c=1):
    return dict(
        positions=np.zeros((m, 3)),
        channels=None,
        sigma=0.5,
        origin=np.zeros(3),
        axes=np.eye(3) * 4,
        periodic=False,
        out=np.zeros((c, 4, 4, 4), np.float32),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"positions": np.zeros((3, 3), np.float32)}, "positions must have dtype float64"),
        ({"channels": np.zeros(3, np.int64)}, "channels must have dtype int32"),
        ({"channels": np.zeros(2, np.int32)}, "channels has shape"),
        ({"channels": np.array([0, 1, 0], np.int32)}, r"channel 1 is out of range \[0, 1\)"),
        ({"sigma": 0.0}, "sigma must be a positive length"),
        ({"sigma": "wide"}, "sigma must be a real number"),
        ({"origin": np.zeros(2)}, "origin has shape"),
        ({"axes": np.zeros((3, 3))}, "degenerate"),
        ({"positions": np.array([[0, 0, 0], [np.nan, 0, 0], [0, 0, 0.0]])}, "atom 1"),
        ({"out": np.zeros((1, 1, 4, 4, 4), np.float32)}, "out must have 4 dimensions"),
    ],
)
def test_grid_one_boundary_rejects_bad_arguments(change, message):
    # The one-structure entry point grid() uses: every argument checked as in grid_batch.
    args = _one_args()
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        _core.grid_one(**args)


def test_grid_one_equals_grid_batch_bitwise():
    rng = np.random.default_rng(3)
    pos = rng.uniform(0.5, 3.5, size=(7, 3))
    chans = rng.integers(0, 2, size=7).astype(np.int32)
    one = np.full((2, 4, 4, 4), np.nan, np.float32)
    _core.grid_one(pos, chans, 0.6, np.zeros(3), np.eye(3) * 4, False, one)
    batch = _args(m=7, c=2)
    batch.update(positions=pos, channels=chans, sigmas=np.full(7, 0.6))
    _core.grid_batch(**batch)
    assert np.array_equal(one, batch["out"][0])


def test_bounds_are_min_and_max_and_refuse_empty_or_non_finite():
    pos = np.random.default_rng(0).normal(size=(9, 3))
    assert _core.bounds(pos) == (*pos.min(0).tolist(), *pos.max(0).tolist())
    with pytest.raises(ValueError, match="no atoms"):
        _core.bounds(np.zeros((0, 3)))
    for bad, at in [(np.nan, (4, 1)), (np.nan, (0, 0)), (np.inf, (8, 2)), (-np.inf, (0, 1))]:
        p = pos.copy()
        p[at] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            _core.bounds(p)


def test_native_boundary_rejects_read_only_output_and_bad_isa():
    args = _args()
    args["out"].flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        _core.grid_batch(**args)
    with pytest.raises(ValueError, match="unknown instruction set 'sse9'"):
        _core.grid_batch(**_args(), isa="sse9")


def test_sigma_too_wide_for_cell_is_an_error():
    lat = np.eye(3) * 1.0
    with pytest.raises(ValueError, match="too wide for this periodic cell"):
        grid(np.zeros((1, 3)), Box.from_lattice(lat, 4), 20.0)
    with pytest.raises(ValueError, match="too wide for this periodic cell"):
        grid(np.zeros((1, 3)), Box.from_lattice(triclinic_lattice(1, 1, 1), 4), 20.0)


def test_memory_cap_is_checked_before_allocating(monkeypatch):
    import pgrid_cli

    pos = np.zeros((1, 3))
    box = Box.cube(pos, 10.0, 1100)  # 5 GiB
    with pytest.raises(ValueError, match=r"more than the 4\.00 GiB limit"):
        grid(pos, box, 0.5)
    pgrid_cli.set_memory_limit(1 << 20)
    try:
        with pytest.raises(ValueError, match=r"more than the 0\.00 GiB limit"):
            grid(pos, Box.cube(pos, 10.0, 128), 0.5)
    finally:
        pgrid_cli.set_memory_limit(None)
    monkeypatch.setenv("PGRID_MAX_GRID_BYTES", "100")
    with pytest.raises(ValueError, match="limit"):
        grid(pos, Box.cube(pos, 10.0, 8), 0.5)
    monkeypatch.setenv("PGRID_MAX_GRID_BYTES", "lots")
    with pytest.raises(ValueError, match="PGRID_MAX_GRID_BYTES must be a positive number"):
        grid(pos, Box.cube(pos, 10.0, 8), 0.5)


def test_python_api_validation():
    pos = np.zeros((2, 3))
    box = Box.cube(pos, 5.0, 4)
    with pytest.raises(ValueError, match=r"positions must have shape \(M, 3\)"):
        grid(np.zeros((2, 4)), box, 0.5)
    with pytest.raises(ValueError, match="out has shape"):
        grid(pos, box, 0.5, out=np.zeros((1, 5, 4, 4), np.float32))
    with pytest.raises(ValueError, match="writeable, C-contiguous float32"):
        grid(pos, box, 0.5, out=np.zeros((1, 4, 4, 4), np.float64))
    with pytest.raises(ValueError, match="threads must be between 1 and 1024"):
        grid(pos, box, 0.5, threads=0)
    with pytest.raises(ValueError, match=r"sigma\[0\] must have shape \(2,\)"):
        grid(pos, box, np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="one grid shape"):
        grid_batch([pos, pos], [box, box.with_shape(5)])
    with pytest.raises(ValueError, match="got 2 structures but 1 boxes"):
        grid_batch([pos, pos], [box])
    with pytest.raises(ValueError, match=r"dgrid must have shape \(C, nx, ny, nz\)"):
        grid_gradient(pos, box, 0.5, np.zeros((4, 4, 4)))


def test_isa_selection(monkeypatch):
    import sys

    from pgrid_cli import available_isas, kernel_info, resolve_isa

    assert available_isas()[0] == "scalar"
    monkeypatch.setenv("PGRID_ISA", "scalar")
    assert resolve_isa() == "scalar" and kernel_info()["isa"] == "scalar"
    monkeypatch.setenv("PGRID_ISA", "mmx")
    with pytest.raises(ValueError, match="PGRID_ISA='mmx' is not an instruction set"):
        grid(np.zeros((1, 3)), Box.cube(np.zeros((1, 3)), 4.0, 4), 0.5)
    monkeypatch.delenv("PGRID_ISA")
    # A path the CPU lacks is a clear error: pretend this CPU has only the scalar path.
    # (pgrid_cli.grid the attribute is the function; the module is in sys.modules.)
    monkeypatch.setattr(sys.modules["pgrid_cli.core.kernel"], "available_isas", lambda: ["scalar"])
    with pytest.raises(
        ValueError, match="isa=avx512 asks for an instruction set this CPU does not"
    ):
        resolve_isa("avx512")
    monkeypatch.setenv("PGRID_ISA", "avx2")
    with pytest.raises(ValueError, match=r"PGRID_ISA=avx2 .* \(supported: scalar\)"):
        resolve_isa()


#: Words of which a boundary ValueError must name at least one: the argument at fault.
_ARGUMENT_WORDS = re.compile(
    r"\b(positions?|offsets|channels?|sigmas?|weights?|origins?|axes|periodic|out)\b"
)


def _fuzz_reference(args, cache):
    """The float64 reference of a batch the kernel accepted, and its tolerance per structure.

    Atoms of an open box more than 1e6 Å from it, or wider than 1e6 Å, contribute below
    1e-18 of their weight to any voxel and would only overflow the reference's index
    arithmetic, so they are left out of it. ``cache`` maps a structure's inputs to its
    reference (a corruption elsewhere leaves it unchanged).
    """
    offsets, out = args["offsets"], args["out"]
    for s in range(len(offsets) - 1):
        a0, a1 = int(offsets[s]), int(offsets[s + 1])
        box = Box(args["origins"][s], args["axes"][s], out.shape[2:], bool(args["periodic"][s]))
        pos = args["positions"][a0:a1]
        keep = np.ones(len(pos), bool)
        if not box.periodic:
            far = np.abs(pos - box.origin).max(axis=1, initial=0) >= 1e6
            keep = ~far & (args["sigmas"][a0:a1] < 1e6)
        atoms = [pos[keep]] + [args[k][a0:a1][keep] for k in ("sigmas", "channels", "weights")]
        key = b"".join(a.tobytes() for a in [*atoms, box.origin, box.axes]) + bytes(
            [box.periodic, out.shape[1]]
        )
        if key not in cache:
            cache[key] = reference_grid(
                atoms[0],
                box,
                atoms[1],
                channels=atoms[2],
                n_channels=out.shape[1],
                weights=atoms[3],
            )
        ref = cache[key]
        w = np.abs(args["weights"][a0:a1])
        if box.is_orthogonal:
            tol = ABS_TOL * max(1.0, float(w.max(initial=0)))
        else:  # 1e-4 of the maximum, and the 5.5-sigma truncation (< 2e-8 of an atom)
            tol = TRIC_REL * float(np.abs(ref).max()) + 2e-8 * float(w.sum())
        yield s, ref, tol


def test_native_boundary_survives_random_garbage():
    """Seeded fuzzing of the bindings. Each trial grids a valid batch (the control) and a copy
    with one or two arguments corrupted. The control must match the float64 reference; the
    corrupted call must either match the reference of what it was given (a benign
    corruption) or raise a ValueError that names an argument, never any other error, and
    none may crash the interpreter. Enough corrupted calls must complete for the test to
    mean something: a kernel that raised on everything would fail it."""
    rng = np.random.default_rng(2024)
    dtypes = [np.float64, np.float32, np.int64, np.int32, bool]
    completed = 0
    cache: dict[bytes, np.ndarray] = {}
    for trial in range(400):
        b = int(rng.integers(0, 4))
        m = int(rng.integers(0, 6)) if b else 0
        args = _args(m=m, b=1)
        inner = np.sort(rng.integers(0, m + 1, size=max(b - 1, 0)))
        args["offsets"] = np.concatenate([[0], inner, [m]] if b else [[0]]).astype(np.int64)
        args["origins"] = rng.normal(size=(b, 3))
        ortho = rng.random(b) < 0.5  # half orthogonal (1e-6 absolute), half triclinic
        args["axes"] = np.where(
            ortho[:, None, None],
            np.eye(3) * rng.uniform(3.0, 5.0, size=(b, 1, 3)),
            np.tile(np.eye(3) * 4, (b, 1, 1)) + rng.normal(size=(b, 3, 3)) * 0.5,
        )
        args["periodic"] = rng.random(b) < 0.5
        args["out"] = np.zeros((b, 2, 5, 4, 3), np.float32)
        args["channels"] = rng.integers(0, 2, size=m).astype(np.int32)
        args["positions"] = rng.normal(size=(m, 3)) * 3
        args["sigmas"] = rng.uniform(0.3, 0.6, size=m)
        args["weights"] = rng.uniform(-1.0, 2.0, size=m)
        control = {k: v.copy() for k, v in args.items()}
        _core.grid_batch(**control)
        for s, ref, tol in _fuzz_reference(control, cache):
            assert_allclose(control["out"][s], ref, atol=tol, rtol=0, err_msg=f"trial {trial}")
        # Corrupt one or two arguments at random.
        for key in rng.choice(sorted(args), size=int(rng.integers(1, 3)), replace=False):
            v = args[key]
            kind = int(rng.choice([0, 1, 1, 1, 2, 3, 4]))  # mostly values: the hard part
            if kind == 0:
                args[key] = v.astype(dtypes[int(rng.integers(0, len(dtypes)))])
            elif kind == 1 and v.size:
                w = v.copy()
                bad = (
                    [np.nan, np.inf, -np.inf, -1e300, 1e9, -1e12, 1e39, 1e-20, 0.0]
                    if w.dtype.kind == "f"
                    else [-7, 10**6, 2**31 - 1, -(2**31)]
                )
                with np.errstate(invalid="ignore", over="ignore"):  # NaN into an int array
                    value = np.array(bad[int(rng.integers(0, len(bad)))]).astype(w.dtype)
                w.flat[int(rng.integers(0, v.size))] = value
                args[key] = w
            elif kind == 2:
                args[key] = v.reshape(-1)
            elif kind == 3 and key == "offsets" and v.size:
                w = v.copy()
                w[int(rng.integers(0, v.size))] = int(rng.integers(-5, 50))
                args[key] = w
            else:
                args[key] = v[..., :-1] if v.ndim and v.shape[-1] else v
        try:
            _core.grid_batch(**args)
        except ValueError as e:
            assert _ARGUMENT_WORDS.search(str(e)), f"trial {trial}: {e}"
            continue
        completed += 1
        assert np.all(np.isfinite(args["out"])), f"trial {trial}"
        for s, ref, tol in _fuzz_reference(args, cache):
            assert_allclose(args["out"][s], ref, atol=tol, rtol=0, err_msg=f"trial {trial}")
    assert completed >= 60, completed


def test_gradient_is_identical_for_every_thread_count(isa):
    rng = np.random.default_rng(21)
    pos = [_random_molecule(rng, 20) for _ in range(3)]
    boxes = [Box.fit(p, shape=16) for p in pos[:2]] + [
        Box.from_lattice(triclinic_lattice(7, 7.5, 8), 16)
    ]
    batch = Batch.from_structures(pos, boxes, 0.5)
    dgrid = rng.normal(size=batch.grid_shape).astype(np.float32)
    one = gradient_batch(batch, dgrid, threads=1, isa=isa)
    for t in (2, 5):
        other = gradient_batch(batch, dgrid, threads=t, isa=isa)
        assert_array_equal(other[0], one[0])
        assert_array_equal(other[1], one[1])


def test_thread_pool_survives_fork():
    """The persistent workers belong to the parent: a forked child must neither hang on
    them nor use them, and still get the same grid from several threads."""
    import os
    import signal
    import time

    rng = np.random.default_rng(5)
    pos = _random_molecule(rng, m=40)
    box = Box.fit(pos, 96)  # large enough to leave the calling thread (kInlineWork)
    want = grid(pos, box, 0.5, threads=2)
    pid = os.fork()
    if pid == 0:  # child: any failure or hang is a non-zero exit
        try:
            signal.alarm(60)
            ok = all(grid(pos, box, 0.5, threads=t).tobytes() == want.tobytes() for t in (2, 3))
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 90
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in the kernel")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    assert grid(pos, box, 0.5, threads=2).tobytes() == want.tobytes()


def test_small_calls_run_inline_and_match_every_thread_count(isa):
    """One small structure stays on the calling thread whatever threads says; large ones
    use the pool; either way the bytes are the same."""
    rng = np.random.default_rng(11)
    for size, m in ((8, 5), (16, 20), (48, 60), (96, 40)):
        pos = _random_molecule(rng, m=m)
        box = Box.fit(pos, size)
        want = grid(pos, box, 0.5, threads=1, isa=isa)
        for t in (2, 3, None):
            assert grid(pos, box, 0.5, threads=t, isa=isa).tobytes() == want.tobytes()
    # A small triclinic cell is costly (quadrature) and so split over the pool: the same
    # bytes too.
    lattice = triclinic_lattice()
    pos = rng.uniform(0, 1, (30, 3)) @ lattice
    tric = Box.from_lattice(lattice, 20)
    want = grid(pos, tric, 0.5, threads=1, isa=isa)
    for t in (2, 3, None):
        assert grid(pos, tric, 0.5, threads=t, isa=isa).tobytes() == want.tobytes()


def test_streamed_orthogonal_call_leaves_no_trace_in_a_later_triclinic_one(isa):
    """Per-thread scratch is reused across calls: a streamed orthogonal grid (which uses
    the plane buffer as staging) must not leak into the next triclinic grid."""
    rng = np.random.default_rng(2)
    lattice = triclinic_lattice()
    pos = rng.uniform(0, 1, (6, 3)) @ lattice
    tric = Box.from_lattice(lattice, (10, 11, 12))
    want = grid(pos, tric, 0.6, threads=1, isa=isa)
    ortho = Batch.from_structures(
        [_random_molecule(rng, m=9)], [Box.cube(np.zeros((1, 3)), 9, (10, 11, 12))]
    )
    out = np.empty(ortho.grid_shape, np.float32)
    _core.grid_batch(*ortho.kernel_arrays(), out, 1, isa, 1)  # streaming on
    assert grid(pos, tric, 0.6, threads=1, isa=isa).tobytes() == want.tobytes()
