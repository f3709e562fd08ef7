"""Inversion: density grids → atoms (the ParticleGrid paper, §IV; docs/format.md).

The grid of a structure is G[c] = Σ over atoms a of channel c of ``render(μ_a)`` (docs/format.md,
unit weights). :func:`invert_grid` recovers the atoms in three steps, channel by channel
(the squared error separates by channel, so channels are fitted independently):

1. **Peaks.** Voxels at or below a background cut are zeroed and the 0-dimensional
   persistent homology of the negated grid (cripser, sublevel filtration, voxels touching
   at a face, edge or corner are neighbours) gives one component per density maximum;
   maxima whose persistence above the cut reaches a threshold become atoms, placed at
   the sub-voxel maximum of a log-parabola through the peak voxel and its neighbours.
2. **Refinement.** The positions minimise L = ‖G − render(positions)‖² with L-BFGS-B and
   the core's analytic gradient (:func:`pgrid_cli.gradient_batch`). For molecules the
   loss is evaluated on a crop of the grid (the same voxel lattice) that holds every
   atom of the channel to the kernel's truncation radius, so it equals the full loss.
3. **Model selection.** Peaks miss atoms closer than about 2σ and noise makes spurious
   ones, so atoms are added where the residual shows unexplained density (the maximum of
   the residual smoothed with the atom's own Gaussian) and removed when they do not
   explain enough of it; every change is refined and kept only if it lowers
   ``J = L + λ·|n − Σ G[c]|`` with λ = ½·E₁, E₁ = ‖render(one atom)‖²: the channel
   integral (Σ G[c] = the number of atoms, for a box that holds them) is the prior on the
   count n, and an atom the integral does not ask for must explain at least half of its
   own density. Missing atoms are placed on the residual of the peaks before the first
   refinement, so their neighbours are not dragged towards them.

The cut and the persistence threshold (:class:`Levels`) are fractions of the peak height
of an isolated atom on a voxel corner (:class:`AtomProfile`, rendered exactly from σ and
the voxel lattice), raised to five standard deviations of the noise when the grid is
noisy (:func:`estimate_noise` measures it from the negative voxels a density cannot
have). Atoms are assumed to have unit weight (the default).

:func:`match_atoms` scores a recovered structure against the original atoms: a Hungarian
assignment per channel (minimum-image distances for periodic cells), the RMSD of the
matched pairs, the atoms recovered within a tolerance and whether the composition is
exact.
"""

from __future__ import annotations

from .fit import ChannelFit
from .options import InversionError, InversionResult, InvertOptions, check_grid
from .peaks import AtomProfile, Levels, Peaks, estimate_noise, find_peaks
from .score import Match, match_atoms
from .select import invert_grid

__all__ = [
    "AtomProfile",
    "ChannelFit",
    "InversionError",
    "InversionResult",
    "InvertOptions",
    "Levels",
    "Match",
    "Peaks",
    "check_grid",
    "estimate_noise",
    "find_peaks",
    "invert_grid",
    "match_atoms",
]
