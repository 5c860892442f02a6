"""Worker "hosts" as Linux network namespaces, each wired to the root namespace by a veth pair.

Each host gets a /30 of 10.231.0.0/16: the root side of its veth holds the first
address (where the test's Redis and SMTP sink listen for it), the namespace side
the second. A namespace has no route but its own /30, so nothing in it reaches
anything but the root side's address; IP forwarding plays no part. Cutting a host
off is ``ip link set <root side> down``: its packets are dropped silently, as
with a pulled cable, and nothing tells its processes the link is gone.

Names start with ``evsc<pid>`` (interface names are limited to 15 characters), so
that a run finds and deletes what a killed earlier run left behind, and leaves a
concurrent run's alone.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

PREFIX = "evsc"
_LEFTOVER = re.compile(rf"^{PREFIX}(\d+)[a-z]")
# Where the /30s of a run come from; a run starts at an offset derived from its pid.
_POOL = ipaddress.ip_network("10.231.0.0/16")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=15)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root: the hosts are network namespaces joined by veth pairs"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    try:
        ip("netns", "list")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns is not available: {exc}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_leftovers() -> list[str]:
    """Delete namespaces and links of this prefix whose run (pid) is gone; returns their names."""
    deleted = []
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _LEFTOVER.match(name)
        if match and not _pid_alive(int(match.group(1))):
            ip("netns", "delete", name, check=False)
            deleted.append(name)
    for line in ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        match = _LEFTOVER.match(name)
        if match and not _pid_alive(int(match.group(1))):
            ip("link", "delete", name, check=False)
            deleted.append(name)
    return deleted


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    for line in ip("-4", "-o", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            used.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for line in ip("-4", "route", "show").stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        if first and first != "default":
            used.append(ipaddress.ip_network(first, strict=False))
    return used


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /30s of 10.231.0.0/16 that no address or route of the root namespace overlaps."""
    used = _networks_in_use()
    candidates = list(_POOL.subnets(new_prefix=30))
    start = (os.getpid() * 7) % len(candidates)
    found: list[ipaddress.IPv4Network] = []
    for i in range(len(candidates)):
        subnet = candidates[(start + i) % len(candidates)]
        if not any(subnet.overlaps(u) for u in used):
            found.append(subnet)
            if len(found) == count:
                return found
    raise RuntimeError("no free /30 left in 10.231.0.0/16")


@dataclass
class Host:
    """A network namespace with a veth pair to the root namespace."""

    label: str
    subnet: ipaddress.IPv4Network
    cut_off: bool = False

    @property
    def namespace(self) -> str:
        return f"{PREFIX}{os.getpid()}{self.label}"

    @property
    def root_link(self) -> str:
        return f"{self.namespace}r"

    @property
    def host_link(self) -> str:
        return f"{self.namespace}n"

    @property
    def root_address(self) -> str:
        """The root namespace's end: what this host reaches (Redis, SMTP)."""
        return str(self.subnet.network_address + 1)

    @property
    def address(self) -> str:
        """The host's own address: the peer address servers see its connections come from."""
        return str(self.subnet.network_address + 2)

    def create(self) -> None:
        prefix = self.subnet.prefixlen
        ip("netns", "add", self.namespace)
        ip("link", "add", self.root_link, "type", "veth", "peer", "name", self.host_link, "netns", self.namespace)
        ip("addr", "add", f"{self.root_address}/{prefix}", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")
        ip("-n", self.namespace, "addr", "add", f"{self.address}/{prefix}", "dev", self.host_link)
        ip("-n", self.namespace, "link", "set", self.host_link, "up")
        ip("-n", self.namespace, "link", "set", "lo", "up")

    def exec_prefix(self) -> list[str]:
        """Put before a command to run it inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace]

    def cut(self) -> None:
        """Take the root side of the link down: the host's packets are dropped without a word."""
        ip("link", "set", self.root_link, "down")
        self.cut_off = True

    def is_up(self) -> bool:
        return not self.cut_off

    def delete(self) -> None:
        """Remove the namespace and the veth pair (deleting either end deletes both); never fails."""
        ip("link", "delete", self.root_link, check=False)
        ip("netns", "delete", self.namespace, check=False)
