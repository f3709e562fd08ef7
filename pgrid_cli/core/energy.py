"""Lennard-Jones energy grids: the potential energy (K) of a probe at every voxel centre.

E(r) = Σ_a 4 ε_a [(σ_a/d)¹² − (σ_a/d)⁶] over every framework atom a, and for a crystal every
lattice image of it, within ``cutoff`` Å of r (d = |r − r_a|), clipped above at
``max_energy`` K. The framework's parameters are UFF's (Rappé et al., J. Am. Chem. Soc.
1992, 114, 10024, Table 1: σ_I = x_I·2^(−1/6), ε_I = D_I converted from kcal/mol to K),
mixed with the probe's by Lorentz–Berthelot (σ = (σ_I + σ_p)/2, ε = √(ε_I ε_p)). The
default probe is a methane united atom (TraPPE: σ = 3.73 Å, ε/k_B = 148 K); any element
symbol gives that element's UFF parameters as the probe. ``transform="boltzmann"`` stores
exp(−E/T) instead (T in K). The sum runs in float64 in the native core
(``pgrid/energy.hpp``: cell lists, SIMD, threads)::

    from pgrid_cli import GridRecipe, Structure
    from pgrid_cli.core.energy import EnergySpec, lj_grid

    spec = EnergySpec(probe="CH4", cutoff=12.0)
    molecule = Structure(numbers, positions)                 # (M,) Z, (M, 3) Å
    e = lj_grid(molecule, GridRecipe(grid_size=32), spec)    # (32, 32, 32) float32, K

See docs/energy.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from .box import Box
from .channels import atomic_number, element_symbol
from .errors import ParameterError
from .kernel import _threads, check_memory, resolve_isa
from .structure import Structure

#: 1 kcal/mol in K (÷ k_B): 4184 J/mol ÷ R = 8.314462618 J/(mol K).
KCAL_PER_MOL_IN_K = 4184.0 / 8.314462618
#: σ = x·2^(−1/6): UFF's x_I is the LJ minimum distance, σ the zero crossing.
X_TO_SIGMA = 2.0 ** (-1.0 / 6.0)

#: UFF van der Waals parameters per element: (x_I in Å, D_I in kcal/mol), Rappé et al.
#: 1992, Table 1. Every atom type of an element has the same pair, so one row per element
#: (Z = 1…103). Transcribed from the UFF table of lammps-interface 0.2.2 (MIT,
#: ``lammps_interface/uff.py``); tests/test_energy.py checks it against RDKit's own UFF
#: parameters for every element RDKit's typer assigns, and a few rows against the paper.
UFF_VDW: dict[str, tuple[float, float]] = {
    "H": (2.886, 0.044),
    "He": (2.362, 0.056),
    "Li": (2.451, 0.025),
    "Be": (2.745, 0.085),
    "B": (4.083, 0.18),
    "C": (3.851, 0.105),
    "N": (3.66, 0.069),
    "O": (3.5, 0.06),
    "F": (3.364, 0.05),
    "Ne": (3.243, 0.042),
    "Na": (2.983, 0.03),
    "Mg": (3.021, 0.111),
    "Al": (4.499, 0.505),
    "Si": (4.295, 0.402),
    "P": (4.147, 0.305),
    "S": (4.035, 0.274),
    "Cl": (3.947, 0.227),
    "Ar": (3.868, 0.185),
    "K": (3.812, 0.035),
    "Ca": (3.399, 0.238),
    "Sc": (3.295, 0.019),
    "Ti": (3.175, 0.017),
    "V": (3.144, 0.016),
    "Cr": (3.023, 0.015),
    "Mn": (2.961, 0.013),
    "Fe": (2.912, 0.013),
    "Co": (2.872, 0.014),
    "Ni": (2.834, 0.015),
    "Cu": (3.495, 0.005),
    "Zn": (2.763, 0.124),
    "Ga": (4.383, 0.415),
    "Ge": (4.28, 0.379),
    "As": (4.23, 0.309),
    "Se": (4.205, 0.291),
    "Br": (4.189, 0.251),
    "Kr": (4.141, 0.22),
    "Rb": (4.114, 0.04),
    "Sr": (3.641, 0.235),
    "Y": (3.345, 0.072),
    "Zr": (3.124, 0.069),
    "Nb": (3.165, 0.059),
    "Mo": (3.052, 0.056),
    "Tc": (2.998, 0.048),
    "Ru": (2.963, 0.056),
    "Rh": (2.929, 0.053),
    "Pd": (2.899, 0.048),
    "Ag": (3.148, 0.036),
    "Cd": (2.848, 0.228),
    "In": (4.463, 0.599),
    "Sn": (4.392, 0.567),
    "Sb": (4.42, 0.449),
    "Te": (4.47, 0.398),
    "I": (4.5, 0.339),
    "Xe": (4.404, 0.332),
    "Cs": (4.517, 0.045),
    "Ba": (3.703, 0.364),
    "La": (3.522, 0.017),
    "Ce": (3.556, 0.013),
    "Pr": (3.606, 0.01),
    "Nd": (3.575, 0.01),
    "Pm": (3.547, 0.009),
    "Sm": (3.52, 0.008),
    "Eu": (3.493, 0.008),
    "Gd": (3.368, 0.009),
    "Tb": (3.451, 0.007),
    "Dy": (3.428, 0.007),
    "Ho": (3.409, 0.007),
    "Er": (3.391, 0.007),
    "Tm": (3.374, 0.006),
    "Yb": (3.355, 0.228),
    "Lu": (3.64, 0.041),
    "Hf": (3.141, 0.072),
    "Ta": (3.17, 0.081),
    "W": (3.069, 0.067),
    "Re": (2.954, 0.066),
    "Os": (3.12, 0.037),
    "Ir": (2.84, 0.073),
    "Pt": (2.754, 0.08),
    "Au": (3.293, 0.039),
    "Hg": (2.705, 0.385),
    "Tl": (4.347, 0.68),
    "Pb": (4.297, 0.663),
    "Bi": (4.37, 0.518),
    "Po": (4.709, 0.325),
    "At": (4.75, 0.284),
    "Rn": (4.765, 0.248),
    "Fr": (4.9, 0.05),
    "Ra": (3.677, 0.404),
    "Ac": (3.478, 0.033),
    "Th": (3.396, 0.026),
    "Pa": (3.424, 0.022),
    "U": (3.395, 0.022),
    "Np": (3.424, 0.019),
    "Pu": (3.424, 0.016),
    "Am": (3.381, 0.014),
    "Cm": (3.326, 0.013),
    "Bk": (3.339, 0.013),
    "Cf": (3.313, 0.013),
    "Es": (3.299, 0.012),
    "Fm": (3.286, 0.012),
    "Md": (3.274, 0.011),
    "No": (3.248, 0.011),
    "Lr": (3.236, 0.011),
}

#: The default probe: a methane united atom (TraPPE-UA, Martin & Siepmann 1998).
METHANE = ("CH4", 3.73, 148.0)
_PROBE_ALIASES = {"ch4": METHANE, "methane": METHANE}

#: Default cutoff, Å (the usual 12 Å of adsorption simulations).
DEFAULT_CUTOFF = 12.0
#: Default clip, K. 10⁴ K is 34 k_BT at 298 K (a Boltzmann factor below 3e-15): every
#: point above it is inaccessible to the probe at any ordinary temperature, and clipping
#: there keeps the channel's range near the physics (ParticleGrid caps at 1e6 K, so its
#: grids are dominated by the walls' values).
DEFAULT_MAX_ENERGY = 1e4
#: Default temperature of the Boltzmann transform, K.
DEFAULT_TEMPERATURE = 298.0
TRANSFORMS = ("none", "boltzmann")
KINDS = ("lj",)
MIXING = "Lorentz-Berthelot"


def uff_sigma_epsilon(symbol: str) -> tuple[float, float]:
    """UFF (σ Å, ε K) of an element symbol: σ = x_I·2^(−1/6), ε = D_I in K."""
    x, d = UFF_VDW[symbol]
    return x * X_TO_SIGMA, d * KCAL_PER_MOL_IN_K


def _uff_arrays() -> tuple[np.ndarray, np.ndarray]:
    sig = np.full(len(UFF_VDW) + 1, np.nan)
    eps = np.full(len(UFF_VDW) + 1, np.nan)
    for sym in UFF_VDW:
        z = atomic_number(sym)
        sig[z], eps[z] = uff_sigma_epsilon(sym)
    return sig, eps


#: σ (Å) and ε (K) by atomic number (index 0 and unknown: NaN).
UFF_SIGMA, UFF_EPSILON = _uff_arrays()


@dataclass(frozen=True)
class Probe:
    """A Lennard-Jones probe: its name, σ (Å) and ε/k_B (K)."""

    name: str
    sigma: float
    epsilon: float

    @classmethod
    def parse(cls, text: str) -> Probe:
        """``CH4`` / ``methane`` (TraPPE united atom) or a UFF element symbol (``Ar``, ``H``)."""
        key = str(text).strip()
        alias = _PROBE_ALIASES.get(key.lower())
        if alias is not None:
            return cls(*alias)
        try:
            symbol = element_symbol(atomic_number(key))
        except ValueError:
            symbol = ""
        if symbol not in UFF_VDW:
            raise ParameterError(
                f"{{probe}} must be CH4 (methane) or an element symbol with UFF parameters, "
                f"got {text!r}"
            )
        return cls(symbol, *uff_sigma_epsilon(symbol))


def _positive(value: Any, name: str, what: str, upper: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and 0 < v <= upper):
        raise ParameterError(f"{{{name}}} must be {what} (at most {upper:g}), got {value!r}")
    return v


@dataclass(frozen=True)
class EnergySpec:
    """How the energy channel is computed; validated once, when built.

    Parameters
    ----------
    kind : ``lj`` (Lennard-Jones, the only kind)
    probe : ``CH4`` (default; TraPPE methane united atom) or an element symbol (UFF)
    cutoff : Å, pair interactions beyond it are left out (every periodic image within it
        is included)
    max_energy : K, energies above it are stored as it (clip)
    transform : ``none`` (E in K) or ``boltzmann`` (exp(−E/T), dimensionless)
    temperature : K, T of the Boltzmann transform
    """

    kind: str = "lj"
    probe: Any = "CH4"
    cutoff: float = DEFAULT_CUTOFF
    max_energy: float = DEFAULT_MAX_ENERGY
    transform: str = "none"
    temperature: float = DEFAULT_TEMPERATURE
    _probe: Probe = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        kind = str(self.kind).strip().lower()
        if kind not in KINDS:
            raise ParameterError(f"{{energy}} must be one of {', '.join(KINDS)}, got {self.kind!r}")
        set_(self, "kind", kind)
        probe = self.probe if isinstance(self.probe, Probe) else Probe.parse(self.probe)
        set_(self, "_probe", probe)
        set_(self, "probe", probe.name)
        set_(self, "cutoff", _positive(self.cutoff, "energy_cutoff", "a positive length in Å", 1e4))
        set_(
            self,
            "max_energy",
            _positive(self.max_energy, "energy_max", "a positive energy in K", 1e30),
        )
        transform = str(self.transform).strip().lower()
        if transform not in TRANSFORMS:
            raise ParameterError(
                f"{{energy_transform}} must be one of {', '.join(TRANSFORMS)}, "
                f"got {self.transform!r}"
            )
        set_(self, "transform", transform)
        set_(
            self,
            "temperature",
            _positive(self.temperature, "temperature", "a positive temperature in K", 1e6),
        )

    @property
    def probe_params(self) -> Probe:
        return self._probe

    @property
    def channel(self) -> str:
        """The channel's name: ``lj:<probe>`` (``lj:CH4``)."""
        return f"{self.kind}:{self._probe.name}"

    @property
    def units(self) -> str:
        return "K" if self.transform == "none" else "1"

    def mixed(self, numbers: Any) -> tuple[np.ndarray, np.ndarray]:
        """Lorentz–Berthelot σ (Å) and ε (K) of each framework atom with the probe:
        two (M,) float64 arrays. ParameterError for an element without UFF parameters."""
        z = np.asarray(numbers, dtype=np.int64).reshape(-1)
        bad = (z < 1) | (z >= len(UFF_SIGMA))
        if bad.any():
            raise ParameterError(
                f"atomic numbers {sorted(set(z[bad].tolist()))} have no UFF parameters (1-103)"
            )
        p = self._probe
        return 0.5 * (UFF_SIGMA[z] + p.sigma), np.sqrt(UFF_EPSILON[z] * p.epsilon)

    def parameters(self, elements: Iterable[int] = ()) -> dict[str, Any]:
        """What the channel was computed with (JSON-friendly; stored in shard attributes):
        probe, mixing rule, cutoff, clip, transform, units, and the framework σ/ε (UFF and
        mixed with the probe) of ``elements`` (atomic numbers)."""
        p = self._probe
        framework = {}
        for z in sorted({int(v) for v in elements}):
            sym = element_symbol(z)
            s_i, e_i = uff_sigma_epsilon(sym)
            s_ij, e_ij = self.mixed([z])
            framework[sym] = {
                "sigma": s_i,
                "epsilon": e_i,
                "sigma_mixed": float(s_ij[0]),
                "epsilon_mixed": float(e_ij[0]),
            }
        return {
            "kind": self.kind,
            "channel": self.channel,
            "probe": {"name": p.name, "sigma": p.sigma, "epsilon": p.epsilon},
            "framework": framework,
            "force_field": "UFF (Rappe et al. 1992): sigma = x_I * 2^(-1/6), epsilon = D_I",
            "mixing": MIXING,
            "cutoff": self.cutoff,
            "max_energy": self.max_energy,
            "transform": self.transform,
            "temperature": self.temperature,
            "units": {
                "length": "angstrom",
                "sigma": "angstrom",
                "epsilon": "K",
                "energy": "K",
                "value": self.units,
            },
        }

    @classmethod
    def from_attribute(cls, text: str) -> EnergySpec:
        """The spec of a shard's ``energy`` attribute (inverse of :meth:`attribute`)."""
        d = json.loads(text)
        return cls(
            d["kind"],
            Probe(d["probe"]["name"], d["probe"]["sigma"], d["probe"]["epsilon"]),
            d["cutoff"],
            d["max_energy"],
            d["transform"],
            d["temperature"],
        )

    def attribute(self, elements: Iterable[int] = ()) -> str:
        """:meth:`parameters` as the JSON text of the shard attribute ``energy``."""
        return json.dumps(self.parameters(elements), sort_keys=True)

    # ------------------------------------------------------------------ grids
    def grid_points(
        self,
        positions: Any,
        numbers: Any,
        origin: Any,
        steps: Any,
        shape: tuple[int, int, int],
        lattice: Any = None,
        *,
        out: np.ndarray | None = None,
        threads: int | None = None,
        isa: str | None = None,
    ) -> np.ndarray:
        """The channel at points origin + i·steps[0] + j·steps[1] + k·steps[2] (Å):
        (nx, ny, nz) float32. ``lattice`` (3, 3) rows a, b, c (Å): periodic (every image
        within the cutoff); None: open boundary."""
        pos = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
        sig, eps = self.mixed(numbers)
        if len(sig) != len(pos):
            raise ValueError(f"{len(pos)} positions but {len(sig)} atomic numbers")
        shape = tuple(int(n) for n in shape)  # type: ignore[assignment]
        if out is None:
            check_memory(shape, "an energy grid")
            out = np.empty(shape, dtype=np.float32)
        lat = None if lattice is None else np.ascontiguousarray(lattice, dtype=np.float64)
        _core.lj_energy_grid(
            pos,
            sig,
            eps,
            lat,
            np.ascontiguousarray(origin, dtype=np.float64).reshape(3),
            np.ascontiguousarray(steps, dtype=np.float64).reshape(3, 3),
            self.cutoff,
            self.max_energy,
            out,
            _threads(threads),
            resolve_isa(isa),
        )
        if self.transform == "boltzmann":
            out[...] = np.exp(-out.astype(np.float64) / self.temperature)
        return out

    def grid_box(
        self,
        positions: Any,
        numbers: Any,
        box: Box,
        lattice: Any = None,
        *,
        out: np.ndarray | None = None,
        threads: int | None = None,
        isa: str | None = None,
    ) -> np.ndarray:
        """The channel at the voxel centres of ``box``: (nx, ny, nz) float32. Periodic
        images of ``lattice`` (default: the box's own axes when the box is periodic)."""
        steps = box.voxel_axes
        origin = box.origin + 0.5 * steps.sum(axis=0)
        if lattice is None and box.periodic:
            lattice = box.axes
        return self.grid_points(
            positions, numbers, origin, steps, box.shape, lattice, out=out, threads=threads, isa=isa
        )


def lj_grid(
    structure: Structure,
    recipe_or_box: Any,
    spec: EnergySpec | None = None,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
    isa: str | None = None,
) -> np.ndarray:
    """The energy channel of one structure at the voxel centres of its grid: (nx, ny, nz)
    float32 (K, or exp(−E/T) with ``transform="boltzmann"``).

    ``recipe_or_box``: a :class:`~pgrid_cli.core.recipe.GridRecipe` (the box it gives the
    structure: the unit cell of a crystal, the molecule box otherwise) or a
    :class:`~pgrid_cli.core.box.Box`. Crystals include every lattice image within the
    cutoff; molecules have an open boundary (no images). ``spec`` defaults to the
    recipe's ``energy`` or :class:`EnergySpec`'s defaults.
    """
    if isinstance(recipe_or_box, Box):
        box = recipe_or_box
    else:
        box = recipe_or_box.box_for(structure.positions, structure.lattice)
        if spec is None:
            spec = getattr(recipe_or_box, "energy", None)
    spec = spec if spec is not None else EnergySpec()
    return spec.grid_box(
        structure.positions,
        structure.numbers,
        box,
        structure.lattice,
        out=out,
        threads=threads,
        isa=isa,
    )
