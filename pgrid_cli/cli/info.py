"""``pgrid info`` (summarise and validate shards) and ``pgrid index`` (combine slices)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..store.plugins import PLUGIN_COMPRESSIONS, READER_NOTE
from ..store.rundir import describe, write_index
from ._app import app, user_errors

#: Exit status of ``pgrid info`` when a shard is invalid or the run is incomplete.
EXIT_INVALID = 4


@app.command("info")
def info_cli(
    path: Annotated[Path, typer.Argument(help="A shard file or an output directory.")],
    deep: Annotated[
        bool, typer.Option("--deep", help="Also decompress every grid (reads everything).")
    ] = False,
    checksums: Annotated[
        bool,
        typer.Option(
            "--checksums/--no-checksums",
            help="Check every shard's checksums (reads the stored bytes, decompresses nothing).",
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarise a shard or an output directory and validate every shard.

    Exit status 0 when everything is valid and complete, 4 otherwise (the problems are
    listed), 2 when PATH is not there.
    """
    with user_errors():
        d = describe(path, deep=deep, checksums=checksums)
    if json_out:
        typer.echo(json.dumps(d, indent=2, sort_keys=True, default=str))
    else:
        print_description(d, Console())
    raise typer.Exit(EXIT_INVALID if d["problems"] else 0)


def print_description(d: dict[str, Any], console: Console) -> None:
    table = Table(title=f"{d['kind']} {d['path']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    if d["kind"] == "directory":
        table.add_row("shards", f"{d['n_shards']:,}")
        table.add_row("structures", f"{d['n_structures']:,}")
        counts = d.get("counts") or {}
        table.add_row(
            "rejected", f"{d['n_rejected']:,}" + ("  (errors.jsonl)" if d["n_rejected"] else "")
        )
        for kind, n in sorted(counts.get("rejected_by_kind", {}).items(), key=lambda kv: -kv[1]):
            table.add_row(f"  {kind}", f"{n:,}")
        if counts:
            table.add_row("input records", f"{counts.get('read', 0):,}")
    else:
        table.add_row("structures", f"{d['n_structures']:,}")
        table.add_row("rejected", f"{d['n_rejected']:,}")
        table.add_row("atoms", f"{d['n_atoms']:,}")
    params = d.get("parameters", {})
    if "grid_shape" in params:
        table.add_row("grid", " × ".join(str(v) for v in params["grid_shape"]))
    if "channels" in params:
        chans = list(params["channels"])
        energy = params.get("energy")
        if isinstance(energy, dict) and energy.get("channel") and energy["channel"] not in chans:
            chans.append(str(energy["channel"]))  # the computed channel follows the density
        typer = f" (typer {params['typer']})" if params.get("typer") else ""
        table.add_row("channels", f"{len(chans)}: {', '.join(chans)}{typer}")
        if isinstance(energy, dict):
            probe = energy.get("probe", {})
            transform = energy.get("transform", "none")
            table.add_row(
                "energy",
                f"{energy.get('channel')}: {probe.get('name')} probe (σ {probe.get('sigma')} Å, "
                f"ε {probe.get('epsilon')} K), cutoff {energy.get('cutoff')} Å, "
                f"clipped at {energy.get('max_energy'):g} K"
                + (f", exp(−E/T) at {energy.get('temperature')} K" if transform != "none" else ""),
            )
    if params.get("crystal_view") and params["crystal_view"] != "cell":
        table.add_row("crystal view", str(params["crystal_view"]))
    if "sigma" in params:
        table.add_row("sigma", f"{params['sigma']} Å")
    if "box" in params:
        table.add_row("molecule box", f"{params['box']} (padding {params.get('padding')} Å)")
    storage = [str(params.get("dtype", ""))]
    if params.get("compression"):
        level = params.get("compression_level")
        storage.append(f"{params['compression']}" + (f" level {level}" if level else ""))
        if params.get("reading"):  # a plugin filter (hdf5plugin)
            storage.append(f"{params.get('hdf5_filters', '')}; {params['reading']}")
        elif params["compression"] in ("zstd", *PLUGIN_COMPRESSIONS):
            storage.append(READER_NOTE)
    step = params.get("rounding_step")
    if step:
        storage.append(f"rounded to a step ≤ {step:.3g} and ≤ 5e-5 × each grid's max")
    elif "rounding_step" in params:
        storage.append("lossless" if params.get("dtype") != "float16" else "unrounded")
    if params.get("content") == "structures":
        storage = ["structures only (atoms, cells, provenance), no grids: grid them when "
                   "training, e.g. pgrid_cli.torch.StructureShardDataset"]  # fmt: skip
    table.add_row("storage", ", ".join(s for s in storage if s))
    bound = params.get("max_rounding_error")
    if bound is not None:
        cast = " (rounding + float16 cast)" if params.get("dtype") == "float16" else ""
        table.add_row("storage error", f"≤ {bound:.2g} per value{cast}")
    if d.get("captured_min") is not None:
        below = d["captured_below"]
        table.add_row(
            "captured",
            f"min {d['captured_min']:.4f}; {below:,} of {d['n_structures']:,} structures "
            f"below {d['captured_threshold']} (Σ grid ÷ Σ weights)",
        )
    if d.get("voxel_min") is not None:
        lo, hi = d["voxel_min"], d["voxel_max"]
        text = f"{lo:.4g} Å" if abs(hi - lo) < 1e-9 else f"{lo:.4g} … {hi:.4g} Å"
        sigma = params.get("sigma")
        if sigma and hi > 2 * float(sigma):
            text += f"  [yellow](above 2σ = {2 * float(sigma):g} Å: undersampled)[/]"
        table.add_row("voxel edge", text)
    for group, label in (("properties", "property"), ("atom_properties", "atom property")):
        for name, e in sorted((d.get(group) or {}).items()):
            text = f"{e['kind']}, {e['count']:,} values"
            if "min" in e:
                text += f", {e['min']:.6g} … {e['max']:.6g}"
            table.add_row(f"{label} {name}", text)
    status = d.get("checksums")
    if status:
        table.add_row("checksums", _CHECKSUMS.get(status, status))
    size = d["bytes"]
    per = f" ({size / d['n_structures'] / 1e3:,.1f} kB per structure)" if d["n_structures"] else ""
    table.add_row("size on disk", f"{size / 1e6:,.1f} MB{per}")
    if d["kind"] == "directory" and d.get("vds"):
        table.add_row("virtual dataset", d["vds"])
    for note in d.get("notes", []):
        table.add_row("note", note)
    if d["problems"]:
        for problem in d["problems"][:10]:
            table.add_row("[red]problem[/]", problem)
        if len(d["problems"]) > 10:
            table.add_row("[red]problem[/]", f"… and {len(d['problems']) - 10} more")
    else:
        what = "every shard" if d["kind"] == "directory" else "the shard"
        table.add_row("valid", f"[green]yes[/] ({what} checked)")
    console.print(table)


_CHECKSUMS = {
    "verified": "[green]match[/] (every stored byte checked)",
    "absent": "none (shards written by an older pgrid)",
    "mixed": "match where present (some shards have none)",
    "not checked": "not checked",
}


@app.command("index")
def index_cli(
    out: Annotated[Path, typer.Argument(help="The output directory of a (sliced) pgrid grid run.")],
    vds: Annotated[
        bool,
        typer.Option("--vds", help="Also write all.h5: virtual datasets spanning every shard."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write manifest.json and errors.jsonl once every slice of a run has finished."""
    with user_errors():
        manifest = write_index(out, vds=vds)
    if json_out:
        typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    c = manifest["counts"]
    extra = f", {out / manifest['vds']}" if manifest.get("vds") else ""
    typer.echo(
        f"indexed {len(manifest['shards'])} shard(s): {c['written']:,} structures, "
        f"{c['rejected']:,} rejected → {out / 'manifest.json'}, {out / 'errors.jsonl'}{extra}"
    )
