"""CNI error objects and l3fabric's own error codes (docs/cni.md lists them)."""

from __future__ import annotations

import json
from typing import Any

# Well-known codes of the CNI specification (0-99 are reserved for it).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50  # STATUS: ADD would fail now
LIMITED_CONNECTIVITY = 51  # STATUS: not available, and existing pods may be affected

# l3fabric's own codes (100 and up, as the specification asks).
IPAM_FAILED = 100  # no address could be assigned (the pools are exhausted)
AGENT_REFUSED = 101  # the agent rejected the request as invalid
DATAPLANE_FAILED = 102  # veth, address or route programming failed
ATTACHMENT_CONFLICT = 103  # ADD for an existing attachment with different parameters
CHECK_DRIFT = 104  # CHECK found the attachment's kernel state drifted
GC_INCOMPLETE = 105  # GC released what it could but some releases failed
AGENT_FAILED = 106  # the agent failed internally or answered something unexpected
PLUGIN_FAILED = 107  # the plugin itself failed unexpectedly (a bug: the details say where)
UNKNOWN_POOL = 108  # a pool in `pools` is not one of the node's pools

MESSAGES = {
    INCOMPATIBLE_VERSION: "incompatible CNI version",
    UNSUPPORTED_FIELD: "unsupported field in network configuration",
    UNKNOWN_CONTAINER: "container unknown or does not exist",
    INVALID_ENVIRONMENT: "invalid environment variables",
    IO_FAILURE: "I/O failure",
    DECODING_FAILURE: "failed to decode content",
    INVALID_NETWORK_CONFIG: "invalid network configuration",
    TRY_AGAIN_LATER: "try again later",
    PLUGIN_NOT_AVAILABLE: "plugin not available",
    LIMITED_CONNECTIVITY: "plugin not available, existing pods may have limited connectivity",
    IPAM_FAILED: "address assignment failed",
    AGENT_REFUSED: "the l3fabric agent refused the request",
    DATAPLANE_FAILED: "data plane programming failed",
    ATTACHMENT_CONFLICT: "attachment exists with different parameters",
    CHECK_DRIFT: "attachment drifted from its expected state",
    GC_INCOMPLETE: "garbage collection incomplete",
    AGENT_FAILED: "the l3fabric agent failed",
    PLUGIN_FAILED: "the l3fabric plugin failed",
    UNKNOWN_POOL: "unknown pool",
}

# Control error code (l3fabric.control) -> CNI code. "not-found" and the
# transient ones depend on the command and are decided in plugin.py.
CONTROL_CODES = {
    "ipam": IPAM_FAILED,
    "unknown-pool": UNKNOWN_POOL,
    "invalid": AGENT_REFUSED,
    "bad-request": AGENT_REFUSED,
    "dataplane": DATAPLANE_FAILED,
    "conflict": ATTACHMENT_CONFLICT,
    "not-found": UNKNOWN_CONTAINER,
    "unreachable": TRY_AGAIN_LATER,
    "timeout": TRY_AGAIN_LATER,
    "datastore-unavailable": TRY_AGAIN_LATER,
    "internal": AGENT_FAILED,
}
TRANSIENT_CONTROL_CODES = frozenset({"unreachable", "timeout", "datastore-unavailable"})


class CniError(Exception):
    """A failure reported to the runtime as a CNI error object. (A plain
    exception, not a frozen dataclass: raising sets attributes on it.)"""

    def __init__(self, code: int, details: str, msg: str = "") -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.msg = msg or MESSAGES.get(code, "error")

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        return {
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        }

    def to_json(self, cni_version: str) -> str:
        return json.dumps(self.to_dict(cni_version), sort_keys=True)


def from_control(code: str, message: str) -> CniError:
    """The CNI error for a control error answered by the agent."""
    return CniError(CONTROL_CODES.get(code, AGENT_FAILED), f"{message} (agent code {code!r})")
