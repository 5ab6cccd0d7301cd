"""`l3fabric bird render`: write a BIRD 2 configuration for one of the roles
BIRD plays around the fabric (route-reflector, tor, node).

Flag grammar (repeat --peer, --range and --accept as needed):

  --peer NAME=ADDRESS:ASN[,OPTION...]
      ADDRESS may be IPv6, optionally in brackets: [fd00::1]:65000.
      OPTIONs: rr-client, passive, accept-all, password=TEXT, multihop=N,
      hold-time=N, keepalive=N, ipv6-next-hop=ADDR, next-hop=MODE. A
      password cannot contain ',' here; use --from-yaml for that.
  --range [NAME=]CIDR:ASN[,OPTION...]
      OPTIONs: rr-client, password=TEXT, multihop=N, ipv6-next-hop=ADDR,
      next-hop=MODE. Unnamed ranges are called range1, range2, ... in the
      order given.
      MODE (tor only): self, keep or "self ebgp".
  --accept CIDR
      A fabric prefix (more-specifics included).
  --pool CIDR
      tor with rr clients: a workload pool, the only routes accepted from
      the rr clients (more-specifics included).
  --direct-exclude IFACE
      An interface name or glob whose subnets are never imported as
      connected routes (a management network).

--from-yaml FILE takes a mapping with BirdConfig's field names instead of
the flags (peers and ranges as lists of mappings with BirdPeer/BirdRange
field names); unknown keys are errors.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from l3fabric.bgp.bird import BirdConfig, BirdNextHop, BirdPeer, BirdRange, BirdRole, render
from l3fabric.yamlfile import YamlFileError, load_file

PROG = "l3fabric bird render"
EXIT_BAD_INPUT = 2
OUTPUT_FORMATS = ("table", "json", "yaml")

# Flags that describe the configuration, so cannot be mixed with --from-yaml.
_FIELD_FLAGS = {
    "role": "--role",
    "router_id": "--router-id",
    "asn": "--asn",
    "cluster_id": "--cluster-id",
    "peer": "--peer",
    "range": "--range",
    "accept": "--accept",
    "pool": "--pool",
    "direct_exclude": "--direct-exclude",
    "hold_time": "--hold-time",
    "keepalive": "--keepalive",
    "no_graceful_restart": "--no-graceful-restart",
    "restart_time": "--restart-time",
    "kernel_export": "--kernel-export/--no-kernel-export",
    "no_ecmp": "--no-ecmp",
    "kernel_protocol": "--kernel-protocol",
    "kernel_metric": "--kernel-metric",
    "scan_time": "--scan-time",
    "log_file": "--log-file",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bird = subparsers.add_parser(
        "bird",
        help="BIRD 2 configurations (route reflector, ToR/spine, baseline node)",
        description="BIRD 2 configurations for the fabric's route reflectors, ToR/spine "
        "routers and Calico-style baseline nodes.",
    )
    commands = bird.add_subparsers(dest="bird_command", metavar="COMMAND", required=True)
    parser = commands.add_parser(
        "render",
        help="render a bird.conf for one role",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--role", help="route-reflector, tor or node")
    parser.add_argument("--router-id", help="IPv4 router id")
    parser.add_argument("--asn", help="local AS number")
    parser.add_argument(
        "--cluster-id",
        help="route-reflector, or tor with rr clients: cluster id (default: router id)",
    )
    parser.add_argument("--peer", action="append", default=[], metavar="SPEC")
    parser.add_argument("--range", action="append", default=[], metavar="SPEC")
    parser.add_argument("--accept", action="append", default=[], metavar="CIDR")
    parser.add_argument("--pool", action="append", default=[], metavar="CIDR")
    parser.add_argument("--direct-exclude", action="append", default=[], metavar="IFACE")
    parser.add_argument("--hold-time", metavar="SECONDS", help="default 90")
    parser.add_argument("--keepalive", metavar="SECONDS", help="default 30")
    parser.add_argument("--no-graceful-restart", action="store_true")
    parser.add_argument("--restart-time", metavar="SECONDS", help="default 120")
    parser.add_argument(
        "--kernel-export",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="install BGP routes in the kernel (default: off for route-reflector, on otherwise)",
    )
    parser.add_argument("--no-ecmp", action="store_true", help="one kernel path per prefix")
    parser.add_argument(
        "--kernel-protocol", metavar="N", help="node: kernel protocol of workload routes (76)"
    )
    parser.add_argument("--kernel-metric", metavar="N", help="metric of kernel routes (32)")
    parser.add_argument("--scan-time", metavar="SECONDS", help="kernel/interface rescan (2)")
    parser.add_argument("--log-file", metavar="PATH", help="BIRD log file (default: stderr)")
    parser.add_argument("--from-yaml", metavar="FILE", help="read the fields from YAML")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FORMAT",
        help="table (the bird.conf text, default), json or yaml (inputs and text); "
        "any other value is taken as --out FILE",
    )
    parser.add_argument("--out", metavar="FILE", help="write here (atomically) instead of stdout")
    parser.set_defaults(func=run_render)


def output_choice(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """(format, file or None, the flag that named the file). `-o` is the
    output format, as for every other command; `-o FILE` with a value that
    is no format name is still taken as the file, the spelling scripts used
    before `--out` existed. A file called `json` is `--out json` or
    `-o ./json`."""
    fmt, path, flag = "table", args.out, "--out"
    if args.output in OUTPUT_FORMATS:
        fmt = args.output
    elif args.output:
        if args.out is not None:
            raise ValueError(
                f"-o {args.output} is a file name, and --out {args.out} names one too: "
                "give --out FILE once, and -o table, json or yaml for the format"
            )
        path, flag = args.output, "-o"
    return fmt, path, flag


def formatted(cfg: BirdConfig, text: str, fmt: str) -> str:
    if fmt == "table":
        return text
    document = {"inputs": plain_config(cfg), "config": text}
    if fmt == "json":
        return json.dumps(document, indent=2, sort_keys=True) + "\n"
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False)


def plain_config(cfg: BirdConfig) -> dict[str, Any]:
    """cfg in the --from-yaml shape: fields left at their defaults omitted,
    addresses and networks as strings."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: plain(getattr(value, f.name))
                for f in fields(value)
                if getattr(value, f.name) != f.default
            }
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, BirdRole | BirdNextHop):
            return value.value
        if isinstance(value, bool | int | str) or value is None:
            return value
        return str(value)

    result: dict[str, Any] = plain(cfg)
    return result


def run_render(args: argparse.Namespace) -> int:
    try:
        fmt, path, flag = output_choice(args)
        cfg = _config_from_yaml(args) if args.from_yaml else config_from_flags(args)
        text = formatted(cfg, render(cfg), fmt)
        if path:
            try:
                write_atomically(Path(path), text)
            except OSError as exc:
                raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from None
        else:
            sys.stdout.write(text)
    except ValueError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the source
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l3fabric")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it. The file
    may hold MD5 passwords, so only its owner can read it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _config_from_yaml(args: argparse.Namespace) -> BirdConfig:
    mixed = [
        flag for dest, flag in _FIELD_FLAGS.items() if getattr(args, dest) not in (None, [], False)
    ]
    if mixed:
        raise ValueError(f"--from-yaml cannot be combined with {', '.join(mixed)}")
    try:
        data = load_file(args.from_yaml)
    except YamlFileError as exc:
        raise ValueError(f"--from-yaml {exc}") from None
    try:
        return config_from_data(data)
    except ValueError as exc:
        raise ValueError(f"--from-yaml {args.from_yaml}: {exc}") from None


def config_from_flags(args: argparse.Namespace) -> BirdConfig:
    for dest in ("role", "router_id", "asn"):
        if getattr(args, dest) is None:
            raise ValueError(f"{_FIELD_FLAGS[dest]} is required (or use --from-yaml)")
    values: dict[str, Any] = {
        "role": parse_role(args.role),
        "router_id": _ipv4(args.router_id, "--router-id"),
        "asn": _int(args.asn, "--asn"),
        "peers": tuple(parse_peer(spec) for spec in args.peer),
        "ranges": tuple(parse_range(spec) for spec in args.range),
        "accept_prefixes": tuple(parse_network(c, f"--accept {c!r}") for c in args.accept),
        "pool_prefixes": tuple(parse_network(c, f"--pool {c!r}") for c in args.pool),
        "direct_exclude": tuple(args.direct_exclude),
        "graceful_restart": not args.no_graceful_restart,
        "kernel_export": args.kernel_export,
        "ecmp": not args.no_ecmp,
    }
    if args.cluster_id is not None:
        values["cluster_id"] = _ipv4(args.cluster_id, "--cluster-id")
    numbers = {
        "hold_time": "hold_time",
        "keepalive": "keepalive",
        "restart_time": "restart_time",
        "kernel_protocol": "kernel_learn_protocol",
        "kernel_metric": "kernel_metric",
        "scan_time": "scan_time",
    }
    for dest, field_name in numbers.items():
        if getattr(args, dest) is not None:
            values[field_name] = _int(getattr(args, dest), _FIELD_FLAGS[dest])
    if args.log_file is not None:
        values["log_file"] = PurePosixPath(args.log_file)
    return BirdConfig(**values)


def parse_peer(spec: str) -> BirdPeer:
    """NAME=ADDRESS:ASN[,rr-client][,passive][,accept-all][,password=..]
    [,multihop=N][,hold-time=N][,keepalive=N][,ipv6-next-hop=..][,next-hop=MODE]"""
    where = f"--peer {spec!r}"
    head, *options = spec.split(",")
    name, sep, target = head.partition("=")
    if not sep or not name:
        raise ValueError(f"{where}: expected NAME=ADDRESS:ASN[,OPTION...]")
    address, asn = _address_and_asn(target, where)
    values: dict[str, Any] = {"name": name, "address": _ip(address, where), "asn": _int(asn, where)}
    flags = {"rr-client": "rr_client", "passive": "passive", "accept-all": "accept_all"}
    numbers = {"multihop": "multihop", "hold-time": "hold_time", "keepalive": "keepalive"}
    values.update(_options(options, flags, numbers, where))
    try:
        return BirdPeer(**values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_range(spec: str) -> BirdRange:
    """[NAME=]CIDR:ASN[,rr-client][,password=..][,multihop=N][,ipv6-next-hop=..]
    [,next-hop=MODE]"""
    where = f"--range {spec!r}"
    head, *options = spec.split(",")
    name, sep, target = head.partition("=")
    if not sep:
        name, target = "", head
    elif not name:
        raise ValueError(f"{where}: expected [NAME=]CIDR:ASN[,OPTION...]")
    cidr, asn = _address_and_asn(target, where)
    values: dict[str, Any] = {
        "cidr": parse_network(cidr, where),
        "asn": _int(asn, where),
        "name": name or None,
    }
    values.update(_options(options, {"rr-client": "rr_client"}, {"multihop": "multihop"}, where))
    try:
        return BirdRange(**values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _options(
    options: list[str], flags: dict[str, str], numbers: dict[str, str], where: str
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        parsed: object
        if not sep and key in flags:
            dest, parsed = flags[key], True
        elif sep and key == "password":
            dest, parsed = "password", value
        elif sep and key == "ipv6-next-hop":
            dest, parsed = "ipv6_next_hop", _ipv6(value, f"{where}: {key}")
        elif sep and key == "next-hop":
            dest, parsed = "next_hop", parse_next_hop(value, f"{where}: {key}")
        elif sep and key in numbers:
            dest, parsed = numbers[key], _int(value, f"{where}: {key}")
        else:
            known = [
                *flags,
                "password=TEXT",
                "ipv6-next-hop=ADDR",
                "next-hop=MODE",
                *(f"{n}=N" for n in numbers),
            ]
            raise ValueError(f"{where}: unknown option {option!r} (known: {', '.join(known)})")
        if dest in values:
            raise ValueError(f"{where}: option {key!r} given twice")
        values[dest] = parsed
    return values


def _address_and_asn(text: str, where: str) -> tuple[str, str]:
    if text.startswith("["):
        address, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{where}: expected [IPV6]:ASN")
        return address, rest[1:]
    address, sep, asn = text.rpartition(":")
    if not sep or not address:
        raise ValueError(f"{where}: expected ADDRESS:ASN")
    return address, asn


def _int(text: str, where: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not an integer") from None


def _ip(text: str, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not an IP address") from None


def _ipv6(text: str, where: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not an IPv6 address") from None


def _ipv4(text: str, where: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not an IPv4 address") from None


# --- plain data (YAML) ---------------------------------------------------------


def config_from_data(data: object) -> BirdConfig:
    """A BirdConfig from plain data: BirdConfig's field names, peers and ranges
    as lists of mappings with BirdPeer/BirdRange field names, addresses and
    networks as strings. Unknown keys are errors."""
    values = _known_keys(data, BirdConfig, "config")
    for key in ("role", "router_id", "asn"):
        if key not in values:
            raise ValueError(f"{key}: is required")
    values["role"] = parse_role(values["role"])
    values["router_id"] = _ipv4(_as_str(values["router_id"], "router_id"), "router_id")
    if values.get("cluster_id") is not None:
        values["cluster_id"] = _ipv4(_as_str(values["cluster_id"], "cluster_id"), "cluster_id")
    if values.get("log_file") is not None:
        values["log_file"] = PurePosixPath(_as_str(values["log_file"], "log_file"))
    values["peers"] = tuple(
        _peer_from_data(item, f"peers[{i}]")
        for i, item in enumerate(_as_list(values.get("peers", []), "peers"))
    )
    values["ranges"] = tuple(
        _range_from_data(item, f"ranges[{i}]")
        for i, item in enumerate(_as_list(values.get("ranges", []), "ranges"))
    )
    for key in ("accept_prefixes", "pool_prefixes"):
        values[key] = tuple(
            parse_network(item, f"{key}[{i}]")
            for i, item in enumerate(_as_list(values.get(key, []), key))
        )
    values["direct_exclude"] = tuple(
        _as_str(item, f"direct_exclude[{i}]")
        for i, item in enumerate(_as_list(values.get("direct_exclude", []), "direct_exclude"))
    )
    return BirdConfig(**values)


def parse_role(value: object) -> BirdRole:
    try:
        return BirdRole(value)
    except ValueError:
        choices = ", ".join(r.value for r in BirdRole)
        raise ValueError(f"role: {value!r} is not one of {choices}") from None


def parse_next_hop(value: object, where: str) -> BirdNextHop:
    try:
        return BirdNextHop(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in BirdNextHop)
        raise ValueError(f"{where}: {value!r} is not one of {choices}") from None


def parse_network(value: object, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(_as_str(value, where))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _peer_from_data(data: object, where: str) -> BirdPeer:
    values = _known_keys(data, BirdPeer, where)
    for key in ("name", "address", "asn"):
        if key not in values:
            raise ValueError(f"{where}.{key}: is required")
    values["address"] = _ip(_as_str(values["address"], f"{where}.address"), f"{where}.address")
    _next_hop_from_data(values, where)
    return BirdPeer(**values)


def _range_from_data(data: object, where: str) -> BirdRange:
    values = _known_keys(data, BirdRange, where)
    for key in ("cidr", "asn"):
        if key not in values:
            raise ValueError(f"{where}.{key}: is required")
    values["cidr"] = parse_network(values["cidr"], f"{where}.cidr")
    _next_hop_from_data(values, where)
    return BirdRange(**values)


def _next_hop_from_data(values: dict[str, Any], where: str) -> None:
    if values.get("ipv6_next_hop") is not None:
        key = f"{where}.ipv6_next_hop"
        values["ipv6_next_hop"] = _ipv6(_as_str(values["ipv6_next_hop"], key), key)
    if values.get("next_hop") is not None:
        values["next_hop"] = parse_next_hop(values["next_hop"], f"{where}.next_hop")


def _known_keys(data: object, cls: type, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: must be a mapping, not {type(data).__name__}")
    allowed = [f.name for f in fields(cls)]
    for key in data:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    return dict(data)


def _as_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: {value!r} must be a string")
    return value


def _as_list(value: object, where: str) -> Sequence[object]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: must be a list, not {type(value).__name__}")
    return value
