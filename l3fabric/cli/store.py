"""How the commands that read the datastore directly (not through an agent)
name it: a node config (`--config NODE.yaml`, its `datastore` section) or
the flags `--datastore-type`, `--datastore-path`, `--endpoints` and the
`--etcd-ca/--etcd-cert/--etcd-key` TLS files."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from l3fabric.cli.output import EXIT_USAGE, CliError
from l3fabric.datastore import BACKENDS, Datastore, DatastoreError, open_datastore
from l3fabric.datastore.etcd import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT
from l3fabric.datastore.keys import DEFAULT_PREFIX

# The flags that name a datastore without a config, for the "not both" check.
_DIRECT_FLAGS = (
    ("datastore_type", "--datastore-type"),
    ("datastore_path", "--datastore-path"),
    ("endpoints", "--endpoints"),
    ("etcd_ca", "--etcd-ca"),
    ("etcd_cert", "--etcd-cert"),
    ("etcd_key", "--etcd-key"),
)


@dataclass(frozen=True)
class StoreSpec:
    """A datastore as the command line named it; open() does no I/O."""

    type: str
    path: Path | None = None
    endpoints: tuple[str, ...] = ()
    prefix: str = DEFAULT_PREFIX  # the fabric's key prefix (config datastore.prefix)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def open(self) -> Datastore:
        try:
            return open_datastore(
                self.type,
                path=self.path,
                endpoints=self.endpoints,
                prefix=self.prefix,
                timeout=self.timeout,
                connect_timeout=min(self.connect_timeout, self.timeout),
                ca=self.ca,
                cert=self.cert,
                key=self.key,
            )
        except (DatastoreError, ValueError) as exc:
            raise CliError(str(exc), EXIT_USAGE) from None

    def describe(self) -> str:
        if self.type == "file":
            return f"file datastore {self.path}"
        return f"etcd {', '.join(self.endpoints)}"


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="node config (YAML): use its datastore section")
    parser.add_argument(
        "--datastore-type",
        choices=BACKENDS,
        default=None,
        help="file (default) or etcd (the default when --endpoints is given)",
    )
    parser.add_argument("--datastore-path", type=Path, help="the file datastore's directory")
    parser.add_argument(
        "--endpoints",
        action="append",
        metavar="URL[,URL...]",
        help="etcd client URLs, http(s)://HOST:PORT (repeatable or comma-separated)",
    )
    parser.add_argument("--etcd-ca", type=Path, help="PEM CA bundle that signed etcd's cert")
    parser.add_argument("--etcd-cert", type=Path, help="PEM client certificate for etcd")
    parser.add_argument("--etcd-key", type=Path, help="PEM key of --etcd-cert")


def store_spec(args: argparse.Namespace, prefix: str | None = None) -> StoreSpec:
    """The datastore named by --config or by the direct flags. `prefix`
    (a command's own --prefix) overrides the config's datastore.prefix."""
    from l3fabric.config import ConfigError, load_config

    if args.config is not None:
        given = [flag for attr, flag in _DIRECT_FLAGS if getattr(args, attr, None) is not None]
        if given:
            raise CliError(f"give --config or {', '.join(given)}, not both", EXIT_USAGE)
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        ds = config.datastore
        return StoreSpec(
            ds.type,
            ds.path,
            tuple(ds.endpoints),
            prefix or ds.prefix,
            ds.timeout,
            ds.connect_timeout,
            ds.ca,
            ds.cert,
            ds.key,
        )
    endpoints = tuple(
        url.strip() for item in args.endpoints or () for url in item.split(",") if url.strip()
    )
    kind = args.datastore_type or ("etcd" if endpoints else "file")
    if kind == "file" and args.datastore_path is None:
        raise CliError("name the datastore: --config NODE.yaml or --datastore-path DIR", EXIT_USAGE)
    if kind == "etcd" and not endpoints:
        raise CliError("--datastore-type etcd needs --endpoints URL", EXIT_USAGE)
    return StoreSpec(
        kind,
        args.datastore_path,
        endpoints,
        prefix or DEFAULT_PREFIX,
        ca=args.etcd_ca,
        cert=args.etcd_cert,
        key=args.etcd_key,
    )


def open_store(args: argparse.Namespace) -> Datastore:
    """The datastore named by --config NODE.yaml or by the direct flags."""
    return store_spec(args).open()
