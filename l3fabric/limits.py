"""Every limit and name rule of l3fabric, defined once.

check-config (config.py), the ExaBGP renderer (bgp/exabgp_config.py), the
BIRD renderer (bgp/bird_checks.py), the import policy (bgp/policy.py) and the
ExaBGP API codec (bgp/api.py) all call these functions, so a value one of
them accepts is accepted by all of them.

Each `*_error` function returns None for a good value, or a message without
the key path (the caller knows where the value came from and adds it). A
password is never part of a message, not even when it is not a string.

This module sits at the bottom of the package: it imports nothing from
l3fabric but model.
"""

from __future__ import annotations

import re

from l3fabric.model import valid_name

UINT32_MAX = 2**32 - 1

# --- AS numbers ------------------------------------------------------------------

ASN_MIN = 1
ASN_MAX = 4_294_967_294
# Numbers inside ASN_MIN..ASN_MAX that no speaker of the fabric may use as its
# own AS or a neighbour's. They may still appear in a received AS path.
RESERVED_ASNS: dict[int, str] = {
    23456: "it is AS_TRANS (RFC 6793), not a real AS number",
    65535: "it is reserved (RFC 7300)",
}
_OUT_OF_RANGE_ASNS = {
    0: "AS 0 is reserved (RFC 7607)",
    4_294_967_295: "it is reserved (RFC 7300)",
}


def asn_error(value: object) -> str | None:
    """A local or neighbour AS number: 1..4294967294 without 23456 and 65535."""
    if not _is_int(value):
        return f"expected an AS number (integer), got {_describe(value)}"
    assert isinstance(value, int)
    if value in _OUT_OF_RANGE_ASNS:
        return f"{value} is not allowed: {_OUT_OF_RANGE_ASNS[value]}"
    if not ASN_MIN <= value <= ASN_MAX:
        return f"{value} is out of range {ASN_MIN}..{ASN_MAX}"
    if value in RESERVED_ASNS:
        return f"{value} is not allowed: {RESERVED_ASNS[value]}"
    return None


# --- timers ----------------------------------------------------------------------

HOLD_TIME_MIN = 3  # RFC 4271 section 4.2
HOLD_TIME_MAX = 65535
KEEPALIVE_MIN = 1
# ExaBGP sends keepalives every hold_time/3 and has no setting for it, nor
# for the connect retry timer; only the BIRD renderer takes a keepalive.
KEEPALIVE_DIVISOR = 3
RESTART_TIME_MIN = 1
RESTART_TIME_MAX = 4095  # a 12-bit field of the capability (RFC 4724)
# 0 turns long-lived stale routes off; the most is the 24-bit field of the
# LLGR capability (RFC 9494), about 194 days.
LONG_LIVED_STALE_TIME_MIN = 0
LONG_LIVED_STALE_TIME_MAX = 16_777_215
TTL_MIN = 1
TTL_MAX = 255


def hold_time_error(value: object) -> str | None:
    """A BGP hold time in seconds: 3..65535. RFC 4271 also allows 0 (no
    keepalives, no hold timer), but then a peer that dies without closing its
    TCP connection keeps its routes for ever; the fabric withdraws a dead
    node's routes only because its hold timer runs out."""
    if not _is_int(value):
        return f"expected a number of seconds (integer), got {_describe(value)}"
    assert isinstance(value, int)
    if value == 0:
        return (
            "0 is not allowed: it turns the hold timer off, so a peer that dies "
            f"silently would keep its routes (use {HOLD_TIME_MIN}..{HOLD_TIME_MAX})"
        )
    if not HOLD_TIME_MIN <= value <= HOLD_TIME_MAX:
        return f"{value} is out of range {HOLD_TIME_MIN}..{HOLD_TIME_MAX} (RFC 4271)"
    return None


def keepalive_error(value: object, hold_time: int) -> str | None:
    """A keepalive interval (BIRD only): at least 1 and at most a third of the
    hold time, so that two lost keepalives do not drop the session."""
    if not _is_int(value):
        return f"expected a number of seconds (integer), got {_describe(value)}"
    assert isinstance(value, int)
    most = hold_time // KEEPALIVE_DIVISOR
    if not KEEPALIVE_MIN <= value <= max(most, KEEPALIVE_MIN):
        return (
            f"{value} must be at most a third of hold_time {hold_time} "
            f"({KEEPALIVE_MIN}..{max(most, KEEPALIVE_MIN)}), so that two lost keepalives "
            "do not drop the session"
        )
    return None


def restart_time_error(value: object) -> str | None:
    """The graceful restart time advertised in the capability, in seconds."""
    return range_error(value, RESTART_TIME_MIN, RESTART_TIME_MAX, "a number of seconds")


def long_lived_stale_time_error(value: object) -> str | None:
    """How long a peer's routes are kept as long-lived stale (RFC 9494) after
    its graceful-restart time ran out, in seconds; 0 is off."""
    return range_error(
        value, LONG_LIVED_STALE_TIME_MIN, LONG_LIVED_STALE_TIME_MAX, "a number of seconds"
    )


def ttl_error(value: object) -> str | None:
    """The IP TTL of a multihop session."""
    return range_error(value, TTL_MIN, TTL_MAX, "a TTL")


# --- ports -------------------------------------------------------------------------

PORT_MIN = 1
PORT_MAX = 65535
BGP_PORT = 179


def port_error(value: object) -> str | None:
    """A TCP port to listen on or connect to."""
    return range_error(value, PORT_MIN, PORT_MAX, "a port number")


# --- MD5 passwords -----------------------------------------------------------------

PASSWORD_MAX_LEN = 80  # TCP_MD5SIG_MAXKEYLEN: the kernel refuses longer keys
# Printable ASCII, space included: both daemon configs carry the password
# inside double quotes. ExaBGP's tokenizer ends a string at either quote
# character and unescapes backslashes before it looks for quotes; BIRD ends
# a string at a double quote. Those three can therefore never be carried.
PASSWORD_FORBIDDEN = frozenset("\"'\\")
PASSWORD_RULE = (
    f"1..{PASSWORD_MAX_LEN} printable ASCII characters (space included) other than "
    "a double quote, a single quote or a backslash, not starting or ending with a space"
)


def password_error(value: object) -> str | None:
    """A TCP MD5 password that ExaBGP's config, BIRD's config and the kernel
    all carry unchanged. The message never contains the password."""
    if not isinstance(value, str):
        return f"must be a string of {PASSWORD_RULE}"
    if not value:
        return "must not be empty (leave it out for no password)"
    if len(value) > PASSWORD_MAX_LEN:
        return (
            f"is {len(value)} characters; TCP MD5 keys are at most {PASSWORD_MAX_LEN} "
            f"(must be {PASSWORD_RULE})"
        )
    if not all(" " <= c <= "~" for c in value):
        return f"must be printable ASCII: {PASSWORD_RULE}"
    if PASSWORD_FORBIDDEN & set(value):
        return (
            "must not contain a double quote, a single quote or a backslash: the daemon "
            "configs it is written into cannot carry them"
        )
    if value != value.strip(" "):
        return "must not start or end with a space"
    return None


# --- names -------------------------------------------------------------------------

NAME_MAX_LEN = 253  # what valid_name's pattern allows at all
NODE_NAME_MAX_LEN = 63  # node and peer names, as a DNS label
# A workload's name is its DNS label (NAME.NAMESPACE.ZONE), so it is one.
WORKLOAD_NAME_MAX_LEN = 63
NAME_RULE = (
    "letters, digits, '.', '_', '-', starting and ending with a letter or digit, "
    "at most {max_len} characters"
)


def name_error(value: object, max_len: int = NAME_MAX_LEN) -> str | None:
    """A node, peer or workload name (see model.valid_name)."""
    if not isinstance(value, str):
        return f"expected a name (string), got {_describe(value)}"
    if len(value) > max_len or not valid_name(value):
        return f"{value!r} is not a valid name ({NAME_RULE.format(max_len=max_len)})"
    return None


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS_LABEL_RULE = (
    "a DNS label: lowercase letters, digits and '-', starting and ending with a letter "
    "or digit, at most 63 characters"
)


def workload_name_error(value: object) -> str | None:
    """A new workload's name: a DNS label, since it becomes the workload's DNS
    name (NAME.NAMESPACE.ZONE). The CNI and CNM names (`cni-`/`cnm-` and 16
    hex digits) are labels. Records named otherwise before this rule stay
    listable and deletable."""
    if not isinstance(value, str):
        return f"expected a name (string), got {_describe(value)}"
    if _DNS_LABEL.match(value):
        return None
    problem = f"{value!r} is not {DNS_LABEL_RULE}, as workload names become DNS names"
    suggestion = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:63].strip("-")
    if suggestion and _DNS_LABEL.match(suggestion):
        problem += f" (for example {suggestion!r})"
    return problem


def node_name_error(value: object) -> str | None:
    """The name of a node or of a configured BGP peer."""
    return name_error(value, NODE_NAME_MAX_LEN)


# --- helpers -----------------------------------------------------------------------


def range_error(value: object, low: int, high: int, what: str | None = None) -> str | None:
    """An integer (never a bool) in low..high; `what` names it in messages."""
    if not _is_int(value):
        kind = f"{what} (integer)" if what else "an integer"
        return f"expected {kind}, got {_describe(value)}"
    assert isinstance(value, int)
    if not low <= value <= high:
        return f"{value} is out of range {low}..{high}"
    return None


def _is_int(value: object) -> bool:
    # bool is an int in Python, but `asn: true` is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: object) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"boolean {str(value).lower()}"
    if isinstance(value, int | float | str):
        return repr(value)
    return type(value).__name__
