"""``pgrid grid``: molecule and crystal files → a directory of HDF5 shards."""

from __future__ import annotations

import json
import shlex
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..core.energy import DEFAULT_CUTOFF, DEFAULT_MAX_ENERGY, DEFAULT_TEMPERATURE
from ..runs.grid import CAPTURE_WARNING, COARSE_NOTE, GridOptions, grid_files
from ..runs.summary import Progress as RunProgress
from ..runs.summary import RunSummary
from . import options
from ._app import EXIT_NOTHING, EXIT_OK, EXIT_REJECTED, app, err_console, fail, user_errors

EPILOG = (
    "Exit status: 0 on success (some records may have been rejected: see OUT/errors.jsonl); "
    "1 with --strict when any record was rejected; 2 for bad options, an unusable output "
    "directory or a crashed worker; 3 when no record could be written at all; 130 when "
    "interrupted (continue with --resume)."
)


def parse_grid_size(text: str) -> tuple[int, int, int] | int:
    """``32`` or ``32,32,48``."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--grid-size must be N or NX,NY,NZ (integers), got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) != 3:
        raise ValueError(f"--grid-size must be N or NX,NY,NZ, got {text!r}")
    return values[0], values[1], values[2]


WORKERS = options.workers("Processes that parse, grid and compress (default: one per core).")
STRICT = options.strict("Exit 1 when any record was rejected.")


@app.command("grid", epilog=EPILOG)
def grid_cli(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output directory for the shards.", show_default=False),
    ],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Input files, directories (searched recursively) or glob patterns: "
            ".xyz/.extxyz (ASE), .sdf/.mol (RDKit), .cif, POSCAR/CONTCAR/.vasp and pymatgen "
            ".json (pymatgen), .pdb/.ent (gemmi), .mol2 (RDKit), .types receptor + ligand "
            "lists, optionally .gz. May be empty with --receptor/--ligand.",
            show_default=False,
        ),
    ] = None,
    grid_size: Annotated[
        str | None,
        typer.Option(
            "--grid-size",
            help="Voxels per axis: N or NX,NY,NZ (default 32; 48 for complexes).",
            show_default=False,
        ),
    ] = None,
    sigma: Annotated[
        float, typer.Option(help="Gaussian standard deviation of every atom.", metavar="Å")
    ] = 0.5,
    channels: Annotated[
        str,
        typer.Option(
            help="single, elements, auto (one per element in the inputs), a list such as "
            "C,H,N,O,*, or a typer: pharmacophore, xs (docs/typing.md)."
        ),
    ] = "elements",
    exclude: Annotated[
        str,
        typer.Option(help="Elements whose atoms are not gridded, e.g. H (kept in the shards)."),
    ] = "",
    box: Annotated[
        str,
        typer.Option(help="Molecule box: fit, tight or cube:L (L in Å). Crystals use their cell."),
    ] = "fit",
    padding: Annotated[
        float, typer.Option(help="Padding around molecules (fit, tight).", metavar="Å")
    ] = 2.0,
    spacing: Annotated[
        float | None,
        typer.Option(
            help="Voxel edge for molecules: a fixed cube of grid-size × spacing Å around each "
            "(instead of --box); for crystals with --crystal-view cube.",
            metavar="Å",
            show_default=False,
        ),
    ] = None,
    crystal_view: Annotated[
        str,
        typer.Option(
            help="Crystals: cell (one periodic unit cell), cube:L (an axis-aligned cube of L Å "
            "of the infinite periodic density, centred on the cell centre) or cube (with "
            "--spacing: L = grid-size × spacing)."
        ),
    ] = "cell",
    tiles: Annotated[
        int | None,
        typer.Option(
            help="Cut each structure, gridded at --spacing, into tiles of N³ focus voxels "
            "(one record each; --grid-size is then unused).",
            metavar="N",
            show_default=False,
        ),
    ] = None,
    context: Annotated[
        int,
        typer.Option(
            help="With --tiles: voxels of true surrounding density on every side of a tile.",
            metavar="M",
        ),
    ] = 0,
    # ---- the energy channel (docs/energy.md)
    energy: Annotated[
        str | None,
        typer.Option(
            help="Append an energy channel: lj (Lennard-Jones, UFF framework, K) at the "
            "voxel centres; crystals include every image within the cutoff.",
            show_default=False,
        ),
    ] = None,
    probe: Annotated[
        str, typer.Option(help="Energy probe: CH4 (TraPPE united atom) or an element (UFF).")
    ] = "CH4",
    energy_cutoff: Annotated[
        float, typer.Option(help="Energy pair cutoff.", metavar="Å")
    ] = DEFAULT_CUTOFF,
    energy_max: Annotated[
        float, typer.Option(help="Energies above this are stored as it (clip).", metavar="K")
    ] = DEFAULT_MAX_ENERGY,
    energy_transform: Annotated[
        str, typer.Option(help="none (E in K) or boltzmann (exp(-E/T)).")
    ] = "none",
    temperature: Annotated[
        float, typer.Option(help="T of the Boltzmann transform.", metavar="K")
    ] = DEFAULT_TEMPERATURE,
    dtype: Annotated[str, typer.Option(help="Grid storage: float32 or float16.")] = "float32",
    compression: Annotated[
        str,
        typer.Option(
            help="gzip (with shuffle; gzip:1 … gzip:9 sets the level; any HDF5 reader), zstd "
            "(zstd:1 … zstd:22; readers need hdf5plugin), lz4, blosc2-lz4, blosc2-zstd "
            "(blosc2-zstd:1 … :9; also -bitshuffle variants; the fastest; readers need "
            "hdf5plugin), lzf or none."
        ),
    ] = "gzip",
    lossless: Annotated[
        bool,
        typer.Option(
            "--lossless",
            help="Store the kernel's float32 values unrounded (default: rounded to "
            "multiples of 2^-21: |change| < 4.8e-7, channel sums kept; far smaller files).",
        ),
    ] = False,
    disorder: Annotated[
        str,
        typer.Option(help="CIF partial occupancy: error (reject), majority or weight."),
    ] = "error",
    format: options.FORMAT = None,
    cif_tags: Annotated[
        str,
        typer.Option(
            "--cif-tags",
            help="CIF data items to keep as properties, e.g. "
            "_cell_volume,_exptl_crystal_density_diffrn.",
        ),
    ] = "",
    labels: Annotated[
        Path | None,
        typer.Option(
            help="A table (.csv or .parquet) of properties joined to the records by --labels-key.",
            show_default=False,
        ),
    ] = None,
    labels_key: Annotated[
        str,
        typer.Option(help="How --labels rows match records: name, or source,record."),
    ] = "name",
    relax: Annotated[
        bool,
        typer.Option(
            "--relax/--no-relax",
            help="SMILES: relax each embedded conformer with MMFF94 (UFF when MMFF cannot).",
        ),
    ] = False,
    embed_seed: Annotated[
        int, typer.Option(help="SMILES: seed of the 3D embedding (ETKDG v3, per record).")
    ] = 0,
    embed: Annotated[
        bool,
        typer.Option(
            "--embed/--no-embed",
            help="Embed 2D SDF/mol records in 3D as SMILES are, instead of rejecting them.",
        ),
    ] = False,
    charge_channel: Annotated[
        str | None,
        typer.Option(
            help="Add a signed channel 'charge' of partial charges: gasteiger (RDKit) or file "
            "(the record's own charges; docs/typing.md).",
            show_default=False,
        ),
    ] = None,
    conformers: Annotated[
        int,
        typer.Option(
            help="SMILES (and SDF/mol with --embed): grid K conformers per molecule (ETKDG "
            "v3, each seeded; a 3D record's own coordinates are conformer 0), records with "
            "the property conformer = 0 … K-1.",
            metavar="K",
        ),
    ] = 1,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Search directories recursively.")
    ] = True,
    shard_size: Annotated[
        int | None,
        typer.Option(
            help="Input records per shard (default: about 250 MB per shard; 50,000 with "
            "--store structures)."
        ),
    ] = None,
    store: Annotated[
        str,
        typer.Option(
            help="grids, or structures: shards of atoms, cells and provenance without grids "
            "(parser speed; grid them at training time with "
            "pgrid_cli.torch.StructureShardDataset). The gridding options are then unused; "
            "a typer (--channels pharmacophore|xs, --charge-channel) stores each atom's "
            "channel memberships."
        ),
    ] = "grids",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in OUT.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier run in OUT.")
    ] = False,
    shard_index: Annotated[
        int | None,
        typer.Option(
            help="Run slice I of --num-shards (default: in a Slurm array, task t is slice "
            "t − the first array's MIN, also when resubmitted)."
        ),
    ] = None,
    num_shards: Annotated[
        int | None,
        typer.Option(
            help="Number of slices (default: recorded in OUT by the run's first Slurm array, "
            "its $SLURM_ARRAY_TASK_COUNT; else 1)."
        ),
    ] = None,
    missing: Annotated[
        bool,
        typer.Option(
            "--missing",
            help="Run every slice of the run in OUT that is neither complete nor running, "
            "one after the other (implies --resume; as one job or a small array).",
        ),
    ] = False,
    # --- PDB/mol2 policies and receptor + ligand complexes (readers/pdb.py, core/complexes.py)
    receptor: Annotated[
        Path | None,
        typer.Option(
            help="Receptor file: grid every ligand record with it, as a complex.",
            show_default=False,
        ),
    ] = None,
    ligand: Annotated[
        list[str] | None,
        typer.Option(help="Ligand file (repeatable), paired with --receptor.", show_default=False),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Directory that relative paths in .types lists are relative to "
            "(default: the list file's directory).",
            show_default=False,
        ),
    ] = None,
    center: Annotated[
        str | None,
        typer.Option(
            help="ligand: grid complexes in a cube (--box cube:L, default cube:24 "
            "at 48³) centred on the ligand; implied by --receptor and .types inputs.",
            show_default=False,
        ),
    ] = None,
    waters: Annotated[str, typer.Option(help="PDB waters: drop or keep.")] = "drop",
    altlocs: Annotated[
        str,
        typer.Option(
            help="PDB alternate locations: highest-occupancy (ties: first), first, "
            "or all (weighted by occupancy)."
        ),
    ] = "highest-occupancy",
    hydrogens: Annotated[
        str, typer.Option(help="PDB/mol2 hydrogens: keep, drop or add (RDKit).")
    ] = "keep",
    hetatm: Annotated[
        str, typer.Option(help="PDB HETATM residues other than waters: keep or drop.")
    ] = "keep",
    models: Annotated[
        str, typer.Option(help="PDB models: first, or all (one record each).")
    ] = "first",
    workers: WORKERS = None,
    threads: Annotated[
        int | None, typer.Option(help="Kernel threads in all (default: one per core).")
    ] = None,
    strict: STRICT = False,
    quiet: options.QUIET = False,
    json_out: options.JSON = False,
) -> None:
    """Grid molecules and crystals into HDF5 shards (docs/format.md §6), resumably, losing nothing.

    Every input record ends in exactly one shard or in OUT/errors.jsonl with its reason.
    """
    with user_errors():
        inputs = [*(inputs or []), *(ligand or [])]
        if ligand and receptor is None:
            fail("--ligand needs --receptor (or list pairs in a .types file)")
        if not inputs:
            fail("no inputs: give files, or --receptor R --ligand L")
        options = GridOptions(
            grid_size=None if grid_size is None else parse_grid_size(grid_size),
            sigma=sigma,
            channels=channels,
            box=box,
            padding=padding,
            dtype=dtype,
            compression=compression,
            lossless=lossless,
            disorder=disorder,
            format=format,
            shard_size=shard_size,
            spacing=spacing,
            exclude=exclude,
            cif_tags=cif_tags,
            labels=labels,
            labels_key=labels_key,
            relax=relax,
            embed_seed=embed_seed,
            embed=embed,
            store=store,
            crystal_view=crystal_view,
            tiles=tiles,
            context=context,
            waters=waters,
            altlocs=altlocs,
            hydrogens=hydrogens,
            hetatm=hetatm,
            models=models,
            receptor=receptor,
            data_root=data_root,
            center=center,
            charge_channel=charge_channel,
            conformers=conformers,
            energy=energy,
            probe=probe,
            energy_cutoff=energy_cutoff,
            energy_max=energy_max,
            energy_transform=energy_transform,
            temperature=temperature,
        )
        options.resolve()  # bad options fail before any file is touched
        bar = _ProgressBar(enabled=not (quiet or json_out) and err_console.is_terminal)
        try:
            summary = grid_files(
                inputs,
                out,
                options,
                resume=resume or missing,
                overwrite=overwrite,
                shard_index=shard_index,
                num_shards=num_shards,
                missing=missing,
                workers=workers,
                threads=threads,
                recursive=recursive,
                command=shlex.join(["pgrid", *sys.argv[1:]]),
                progress=bar.update,
            )
        except KeyboardInterrupt:
            bar.stop()
            fail(f"interrupted: finished shards are kept; continue with --resume -o {out}", 130)
        except MemoryError as exc:
            bar.stop()
            fail(f"not enough memory ({exc}); use a smaller --grid-size or fewer --workers")
        except BrokenProcessPool as exc:
            bar.stop()
            fail(
                f"a worker process died ({exc}); finished shards are kept: rerun with --resume "
                f"(--workers 0 runs everything in one process, to find the record)"
            )
        finally:
            bar.stop()
    if json_out:
        typer.echo(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    elif not quiet:
        print_summary(summary, Console())
    raise typer.Exit(exit_code(summary, strict))


def exit_code(summary: RunSummary, strict: bool) -> int:
    """The documented exit status of a run (see EPILOG)."""
    if summary.total_items == 0 or (summary.read > 0 and summary.written == 0):
        return EXIT_NOTHING
    if strict and summary.rejected:
        return EXIT_REJECTED
    return EXIT_OK


class _ProgressBar:
    """A rich progress bar on stderr, started at the first update (after the workers)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None

    def update(self, p: RunProgress) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]gridding"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[written]:,} written, {task.fields[rejected]:,} rejected"),
                TextColumn("{task.fields[rate]:,.0f} structures/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "grid", total=max(p.bytes_total, 1), written=0, rejected=0, rate=0.0
            )
        rate = p.written / p.elapsed if p.elapsed > 0 else 0.0
        self._progress.update(
            self._task,
            completed=min(p.bytes_done, p.bytes_total),
            written=p.written,
            rejected=p.rejected,
            rate=rate,
        )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_summary(s: RunSummary, console: Console) -> None:
    """The end-of-run table: read, written, rejected by reason, time, throughput."""
    table = Table(title=f"pgrid grid → {s.out_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(overflow="fold")
    if s.slices_run is not None:
        ran = ", ".join(map(str, s.slices_run)) or "none (nothing was missing)"
        table.add_row("slices run", ran, f"of {s.num_slices}")
    elif s.num_slices > 1:
        table.add_row("slice", f"{s.slice_index} of {s.num_slices}", "")
    table.add_row("input files", f"{s.files:,}", "")
    table.add_row("records read", f"{s.read:,}", "")
    kept = f"({s.shards_kept} kept from an earlier run)" if s.shards_kept else ""
    table.add_row(
        "written",
        f"{s.written:,}",
        f"structures in {s.shards_written + s.shards_kept} shard(s) {kept}",
    )
    table.add_row("rejected", f"{s.rejected:,}", "see errors.jsonl" if s.rejected else "")
    for kind, n in sorted(s.rejected_by_kind.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {kind}", f"{n:,}", "")
    table.add_row("time", f"{s.seconds:.1f} s", "")
    if s.gridded:
        table.add_row("throughput", f"{s.structures_per_s:,.0f}", "structures/s")
        table.add_row("on disk", f"{s.bytes_per_structure / 1e3:,.1f} kB", "per structure")
    busy = {k: v for k, v in s.timings.items() if v > 0}
    if busy:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in busy.items())
        table.add_row("CPU seconds", "", parts)
    if s.low_capture:
        table.add_row(
            "[yellow]warning[/]",
            f"{s.low_capture:,}",
            f"structures keep less than {CAPTURE_WARNING:.0%} of their density in the box "
            f"(lowest {s.min_captured:.1%}): use a larger box (--box, --padding)",
        )
    if s.catch_all:
        parts = ", ".join(
            f"{el} {n:,}" for el, n in sorted(s.catch_all.items(), key=lambda kv: -kv[1])
        )
        table.add_row("catch-all *", f"{sum(s.catch_all.values()):,}", f"atoms: {parts}"[:100])
    if s.coarse_voxels:
        table.add_row(
            "[yellow]warning[/]",
            f"{s.coarse_voxels:,}",
            "structures have voxels wider than 2σ: their density is undersampled "
            "(use a smaller --spacing, a larger --grid-size or a larger --sigma)",
        )
    for note, n in sorted(s.notes.items(), key=lambda kv: -kv[1])[:3]:
        if note == COARSE_NOTE or note.endswith("in the catch-all channel *"):
            continue  # shown above
        table.add_row("note", f"{n:,}×", note[:100])
    if s.manifest:
        table.add_row("manifest", "", str(s.out_dir / "manifest.json"))
    elif s.num_slices > 1:
        table.add_row("next", "", f"other slices still running; then: pgrid index {s.out_dir}")
    console.print(table)
