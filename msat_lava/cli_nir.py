"""``msat-lava export-nir NET --out FILE``: the network as a NIR graph (netx_export.nir_io). Parses, calls, prints."""
from __future__ import annotations

import argparse
import json

__all__ = ["add_export_nir_parser"]


def _cmd_export_nir(args: argparse.Namespace) -> int:
    from netx_export import hdf5, nir_io

    from msat_lava.cli_common import check_destination

    check_destination(args.out, "--out", overwrite=args.overwrite)  # before any work, naming the option
    net = hdf5.read(args.net)
    graph = nir_io.to_nir(net)  # NirError (exit 2) names the layer NIR cannot express, before anything is written
    nir_io.write_nir(net, args.out, overwrite=args.overwrite)
    summary = {"net": args.net, "out": args.out, "nodes": len(graph.nodes), "edges": len(graph.edges),
               "if_layers": sum(type(n).__name__ == "IF" for n in graph.nodes.values()),
               "semantics": nir_io.IF_METADATA}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {args.out}: {summary['nodes']} NIR nodes, {summary['edges']} edges, {summary['if_layers']} IF "
              "layers (reset by subtraction, fire on v >= threshold: carried in each IF node's metadata)")
    return 0


def add_export_nir_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export-nir",
        help="write a constant-threshold network as a NIR graph",
        description=("Write the network file's float network as a NIR graph (HDF5, the 'nir' package). Only "
                     "constant-threshold IF layers without burst, gate or initial charge can be expressed; anything "
                     "else (MSAT's adaptive thresholds, max pooling) is refused naming the layer, exit 2."),
    )
    p.add_argument("net", metavar="NET", help="network file written by msat-lava convert (--method const)")
    p.add_argument("--out", required=True, metavar="FILE", help="NIR file to write (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    from msat_lava.cli_common import add_common_options

    add_common_options(p, quiet="nothing, the 'wrote' line (or --json) is the result")
    p.set_defaults(func=_cmd_export_nir)
