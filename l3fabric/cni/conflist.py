"""Network configuration lists (the files in /etc/cni/net.d), and the stdin
a runtime builds from one for each plugin of the list. The plugin never
reads a list itself; `l3fabric cni install` checks what it writes with this,
and tests and the lab use `plugin_stdin` to drive plugins as a runtime does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from l3fabric.cni import spec
from l3fabric.cni.errors import INCOMPATIBLE_VERSION, CniError
from l3fabric.cni.netconf import check_version, decode


@dataclass(frozen=True)
class ConfList:
    cni_version: str
    cni_versions: tuple[str, ...]  # 1.1.0: the versions a runtime may pick from
    name: str
    disable_check: bool
    disable_gc: bool
    plugins: tuple[dict[str, Any], ...]

    def negotiate(self, runtime_versions: tuple[str, ...]) -> str:
        """The version a runtime supporting runtime_versions uses: the highest
        of cniVersions it knows, else cniVersion (what libcni does)."""
        common = [v for v in self.cni_versions if v in runtime_versions]
        if common:
            return max(common, key=spec.version_key)
        if self.cni_version in runtime_versions:
            return self.cni_version
        raise CniError(INCOMPATIBLE_VERSION, f"no common version with {runtime_versions}")


def parse_conflist(data: bytes) -> ConfList:
    obj = decode(data)
    version = check_version(obj)
    versions = spec.string_list(obj, "cniVersions", "")
    for item in versions:
        check_version({"cniVersion": item})
    name = spec.string(obj, "name", "", required=True)
    assert name is not None
    if not spec.IDENTIFIER.fullmatch(name):
        raise spec.fail("name", f"{name!r} must start with a letter or digit, then [A-Za-z0-9_.-]")
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise spec.fail("plugins", "must be a non-empty list of plugin objects")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise spec.fail(f"plugins[{i}]", "must be an object")
        spec.string(plugin, "type", f"plugins[{i}].", required=True)
    return ConfList(
        cni_version=version,
        cni_versions=versions,
        name=name,
        disable_check=spec.boolean(obj, "disableCheck", ""),
        disable_gc=spec.boolean(obj, "disableGC", ""),
        plugins=tuple(plugins),
    )


def plugin_stdin(
    conflist: ConfList,
    index: int,
    *,
    version: str | None = None,
    prev_result: dict[str, Any] | None = None,
    runtime_config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """What a runtime writes to plugin `index`'s stdin: its object with the
    list's name and version, `prevResult`, and `runtimeConfig` made from the
    capabilities the plugin declares (only those keys)."""
    conf = dict(conflist.plugins[index])
    capabilities = conf.pop("capabilities", None) or {}
    conf["name"] = conflist.name
    conf["cniVersion"] = version or conflist.cni_version
    if runtime_config:
        wanted = {k: v for k, v in runtime_config.items() if capabilities.get(k)}
        if wanted:
            conf["runtimeConfig"] = wanted
    if prev_result is not None:
        conf["prevResult"] = prev_result
    conf.update(extra or {})
    return json.dumps(conf).encode()
