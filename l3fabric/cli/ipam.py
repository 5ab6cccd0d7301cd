"""`l3fabric ipam show|release|check`, through the agent's control socket."""

from __future__ import annotations

import argparse
from typing import Any

from l3fabric.cli.output import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    call,
    common_options,
    emit,
    format_table,
)


def cmd_ipam_show(args: argparse.Namespace) -> int:
    if args.ip is not None and args.blocks:
        raise CliError("--ip and --blocks are separate views: give one", EXIT_USAGE)
    if args.ip is not None:
        found = call(args, "ipam.show", ip=args.ip)
        emit(found, args.output, _address_table)
        return EXIT_OK
    if args.blocks:
        emit(call(args, "ipam.show", blocks=True), args.output, _blocks_table)
        return EXIT_OK
    result = call(args, "ipam.show")

    def table(data: dict[str, Any]) -> str:
        pools = format_table(
            ("POOL", "BLOCK-SIZE", "SIZE", "IN-USE"),
            [(p["cidr"], p["block_size"], p["size"], p["used"]) for p in data.get("pools", [])],
        )
        blocks = format_table(
            ("BLOCK", "NODE", "IN-USE", "FREE"),
            [
                (b["cidr"], b.get("node") or "-", b["used"], b["free"])
                for b in data.get("blocks", [])
            ],
        )
        return pools + "\n\n" + blocks

    emit(result, args.output, table)
    return EXIT_OK


def _address_table(data: dict[str, Any]) -> str:
    def dash(value: Any) -> str:
        return "-" if value is None else str(value)

    rows = [
        ("address", data["address"]),
        ("pool", dash(data["pool"])),
        ("block", dash(data["block"])),
        ("block node", dash(data["block_node"])),
        ("handle", dash(data["handle"])),
        ("assigned by", dash(data["node"]) + (" (borrowed)" if data["borrowed"] else "")),
        ("workload", dash(data["workload"])),
        ("workload node", dash(data["workload_node"])),
    ]
    if not data["allocated"]:
        rows.append(("state", "free"))
    elif data["workload"] is None:
        rows.append(("state", "assigned, no live workload (ipam release frees it)"))
    return "\n".join(f"{k + ':':15}{v}" for k, v in rows)


def _blocks_table(data: dict[str, Any]) -> str:
    return format_table(
        ("BLOCK", "NODE", "POOL", "IN-USE", "FREE", "USED%", "BORROWED"),
        [
            (
                b["cidr"],
                b["node"],
                b["pool"] or "-",
                b["used"],
                b["free"],
                f"{b['utilisation']:.1f}",
                ",".join(f"{x['address']}@{x['node']}" for x in b["borrowed"]) or "-",
            )
            for b in data.get("blocks", [])
        ],
    )


def cmd_ipam_release(args: argparse.Namespace) -> int:
    result = call(args, "ipam.release", address=args.address)
    emit(
        result,
        args.output,
        lambda d: (
            f"released {d['address']} (handle {d['handle']})"
            if d["released"]
            else f"{d['address']} was already free"
        ),
    )
    return EXIT_OK


def cmd_ipam_check(args: argparse.Namespace) -> int:
    result = call(args, "ipam.check", repair=args.repair)

    def table(data: dict[str, Any]) -> str:
        lines = [f"problem: {p}" for p in data.get("problems", [])]
        lines += [f"repaired: {r}" for r in data.get("repaired", [])]
        return "\n".join(lines) or "no problems found"

    emit(result, args.output, table)
    unrepaired = len(result.get("problems", [])) - len(result.get("repaired", []))
    return EXIT_OK if unrepaired <= 0 else EXIT_FAIL


def register(subparsers: Any) -> None:
    common = common_options()
    ipam = subparsers.add_parser("ipam", help="address management").add_subparsers(
        dest="ipam_command", required=True, metavar="ACTION"
    )
    p = ipam.add_parser("show", parents=[common], help="pools, blocks and usage")
    p.add_argument("--ip", metavar="ADDR", help="who holds this address: workload, node, block")
    p.add_argument(
        "--blocks", action="store_true", help="every block: affinity, borrowed addresses, use"
    )
    p.set_defaults(func=cmd_ipam_show)
    p = ipam.add_parser("release", parents=[common], help="free an address no live workload holds")
    p.add_argument("address", metavar="ADDR", help="the address to free")
    p.set_defaults(func=cmd_ipam_release)
    p = ipam.add_parser("check", parents=[common], help="find leaks, duplicates, orphan blocks")
    p.add_argument("--repair", action="store_true", help="fix what is safe to fix")
    p.set_defaults(func=cmd_ipam_check)
