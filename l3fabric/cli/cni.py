"""`l3fabric cni install`: put the CNI plugin and its network configuration
where container runtimes find them (docs/cni.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from l3fabric import control
from l3fabric.cli.output import EXIT_OK, EXIT_USAGE, CliError
from l3fabric.cni import install
from l3fabric.cni.errors import CniError
from l3fabric.cni.netconf import parse_dns
from l3fabric.cni.spec import SUPPORTED_VERSIONS, network


def cmd_cni_install(args: argparse.Namespace) -> int:
    try:
        pools = tuple(
            str(network(cidr.strip(), "--pools"))
            for text in args.pools or []
            for cidr in text.split(",")
            if cidr.strip()
        )
        dns = parse_dns(
            {
                "nameservers": args.dns_nameserver or [],
                "domain": args.dns_domain,
                "search": args.dns_search or [],
                "options": args.dns_option or [],
            },
            "--dns-",
        )
    except CniError as exc:
        raise CliError(exc.details, EXIT_USAGE) from None
    chain = tuple(name.strip() for text in args.chain or [] for name in text.split(",") if name)
    unknown = [name for name in chain if name not in install.CHAINABLE]
    if unknown:
        known = ", ".join(install.CHAINABLE)
        raise CliError(f"--chain: unknown plugin {unknown[0]!r} (one of {known})", EXIT_USAGE)
    options = install.InstallOptions(
        bin_dir=args.bin_dir,
        conf_dir=args.conf_dir,
        socket=args.socket,
        pools=pools,
        dns=dns,
        chain=chain,
        cni_version=args.cni_version,
        python=args.python or install.InstallOptions.python,
        lib_dir=args.lib_dir,
        host_root=args.host_root,
    )
    for path in (options.bin_dir, options.conf_dir, options.socket, options.lib_dir):
        if path is not None and not path.is_absolute():
            raise CliError(f"{path}: paths must be absolute (host paths)", EXIT_USAGE)
    try:
        written = install.apply(install.plan(options), options)
    except (CniError, OSError) as exc:
        raise CliError(f"cni install: {exc}") from None
    for path, changed in written:
        if path.name in (install.PLUGIN_NAME, install.CONFLIST_NAME):
            print(f"{path}: {'written' if changed else 'unchanged'}")
    for name in install.earlier_conflists(options):
        print(
            f"warning: {options.conf_dir / name} sorts before {install.CONFLIST_NAME}: "
            "runtimes use the first network configuration"
        )
    return EXIT_OK


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("cni", help="install the CNI plugin").add_subparsers(
        dest="cni_command", required=True, metavar="ACTION"
    )
    p = group.add_parser(
        "install", help="write the plugin executable and the network configuration list"
    )
    defaults = install.InstallOptions()
    p.add_argument("--bin-dir", type=Path, default=defaults.bin_dir, help="plugin directory")
    p.add_argument("--conf-dir", type=Path, default=defaults.conf_dir, help="network config dir")
    p.add_argument(
        "--socket", type=Path, default=control.DEFAULT_SOCKET, help="the agent's control socket"
    )
    p.add_argument("--pools", action="append", metavar="CIDR[,CIDR]", help="pools to assign from")
    p.add_argument("--dns-nameserver", action="append", metavar="ADDRESS", help="DNS server")
    p.add_argument("--dns-domain", help="DNS domain")
    p.add_argument("--dns-search", action="append", metavar="DOMAIN", help="DNS search domain")
    p.add_argument("--dns-option", action="append", metavar="OPTION", help="resolver option")
    p.add_argument(
        "--chain", action="append", metavar="PLUGIN[,PLUGIN]", help="portmap, tuning, bandwidth"
    )
    p.add_argument(
        "--cni-version", choices=SUPPORTED_VERSIONS, help="pin the list to one spec version"
    )
    p.add_argument("--python", help="interpreter the plugin runs with (default this one)")
    p.add_argument("--lib-dir", type=Path, help="copy the plugin's modules to this host dir")
    p.add_argument("--host-root", type=Path, default=Path("/"), help="where the host's / is")
    p.set_defaults(func=cmd_cni_install)
