"""Network namespace paths, and running code inside another namespace.

The process stays in the node's namespace. Work that must happen inside a
workload's namespace runs on a short-lived thread that setns()es into it:
setns(CLONE_NEWNET) changes only the calling thread, and the thread ends
right after, so no other code ever runs in the wrong namespace. A netlink
socket opened there stays bound to that namespace after the thread is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from l3fabric.dataplane.base import DataplaneError, NetnsNotFound

T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h

_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def resolve_netns(arg: str) -> str:
    """A namespace name (under /run/netns) or path -> its absolute path.

    Raises NetnsNotFound if there is no such file or it is not a network
    namespace (e.g. a stale /run/netns entry whose mount is gone).
    """
    if not arg:
        raise NetnsNotFound("empty network namespace name")
    if "/" in arg:
        path = os.path.abspath(arg)
    else:
        if arg in (".", ".."):
            raise NetnsNotFound(f"invalid network namespace name {arg!r}")
        path = os.path.join(NETNS_RUN_DIR, arg)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NetnsNotFound(f"network namespace {arg!r} not found ({path} does not exist)") from exc
    except OSError as exc:
        raise NetnsNotFound(f"network namespace {arg!r}: cannot open {path}: {exc}") from exc
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        raise NetnsNotFound(f"{path} is not a namespace file ({exc.strerror})") from exc
    finally:
        os.close(fd)
    if nstype != CLONE_NEWNET:
        raise NetnsNotFound(f"{path} is a namespace but not a network namespace")
    return path


def run_in_netns(path: str, func: Callable[[], T]) -> T:
    """Call func on a fresh thread inside the network namespace at path."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            error.append(NetnsNotFound(f"network namespace {path} does not exist"))
            return
        except OSError as exc:
            error.append(DataplaneError(f"cannot open network namespace {path}: {exc}"))
            return
        try:
            _setns(fd, CLONE_NEWNET)
        except OSError as exc:
            error.append(DataplaneError(f"cannot enter network namespace {path}: {exc}"))
            return
        finally:
            os.close(fd)
        try:
            result.append(func())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=f"netns:{os.path.basename(path)}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def netlink_socket_in(path: str) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace at path."""
    return run_in_netns(
        path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    )


def netns_identity(path: str) -> str:
    """ "dev:inode" of a namespace file ("" if it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def same_netns(a: str, b: str) -> bool:
    """Whether two namespace files name the same network namespace (the
    same nsfs inode), e.g. a workload's netns and the node's own."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def netns_present(path: str) -> bool:
    """Whether path still names a live network namespace (a leftover file
    under /run/netns whose mount is gone does not)."""
    try:
        resolve_netns(path)
    except DataplaneError:
        return False
    return True
