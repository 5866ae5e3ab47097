"""Hosts as Linux network namespaces joined by veth pairs (root only; cleaned up on exit).

Topology (10.200.0.0/16 exists only on these links)::

    root ns  10.200.0.1 ── 10.200.0.2  services ns (redis, SeaweedFS, moto for KMS; routing)
                                10.200.1.1 ── 10.200.1.2  worker host 1
                                10.200.2.1 ── 10.200.2.2  worker host 2

The services namespace forwards between the worker links and the root link, where a TCP relay
bound on 10.200.0.1 reaches the machine's loopback-only PostgreSQL.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

SERVICES_IP = "10.200.0.2"
ROOT_IP = "10.200.0.1"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def namespaces_permitted() -> tuple[bool, str]:
    """Whether this process may create network namespaces, and why not."""
    if os.geteuid() != 0:
        return False, "needs root (ip netns)"
    name = f"fmprobe{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        return False, f"ip netns add failed: {exc}"
    ip("netns", "del", name)
    return True, ""


@dataclass
class Topology:
    """The namespaces created; worker host ``i`` is ``workers[i]`` at 10.200.{i+1}.2."""

    services: str
    workers: list[str]
    links: list[str] = field(default_factory=list)

    def exec(self, ns: str, cmd: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside namespace ``ns`` (its own process group)."""
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            ["ip", "netns", "exec", ns, *cmd], start_new_session=True, **kwargs
        )

    def kill_host(self, ns: str) -> list[int]:
        """SIGKILL every process inside ``ns`` (a machine losing power)."""
        out = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
        ).stdout
        pids = [int(p) for p in out.split()]
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids


@contextmanager
def topology(hosts: int = 2) -> Iterator[Topology]:
    """Create the services namespace and ``hosts`` worker namespaces; delete all on exit."""
    tag = uuid.uuid4().hex[:5]
    topo = Topology(f"fmsvc{tag}", [f"fmw{i + 1}{tag}" for i in range(hosts)])
    created: list[str] = []
    try:
        ip("netns", "add", topo.services)
        created.append(topo.services)
        ip("-n", topo.services, "link", "set", "lo", "up")
        # root <-> services
        root_end, svc_end = f"fm0r{tag}", f"fm0s{tag}"
        ip("link", "add", root_end, "type", "veth", "peer", "name", svc_end)
        topo.links.append(root_end)
        ip("link", "set", svc_end, "netns", topo.services)
        ip("addr", "add", f"{ROOT_IP}/24", "dev", root_end)
        ip("link", "set", root_end, "up")
        ip("-n", topo.services, "addr", "add", f"{SERVICES_IP}/24", "dev", svc_end)
        ip("-n", topo.services, "link", "set", svc_end, "up")
        subprocess.run(
            ["ip", "netns", "exec", topo.services, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
            timeout=10,
        )
        for i, ns in enumerate(topo.workers, start=1):
            ip("netns", "add", ns)
            created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            a, b = f"fm{i}s{tag}", f"fm{i}w{tag}"
            ip("-n", topo.services, "link", "add", a, "type", "veth", "peer", "name", b)
            ip("-n", topo.services, "link", "set", b, "netns", ns)
            ip("-n", topo.services, "addr", "add", f"10.200.{i}.1/24", "dev", a)
            ip("-n", topo.services, "link", "set", a, "up")
            ip("-n", ns, "addr", "add", f"10.200.{i}.2/24", "dev", b)
            ip("-n", ns, "link", "set", b, "up")
            ip("-n", ns, "route", "add", "default", "via", f"10.200.{i}.1")
            # replies from the root relay to this worker go back through the services ns
            ip("route", "add", f"10.200.{i}.0/24", "via", SERVICES_IP, "dev", root_end)
        yield topo
    finally:
        for ns in created:
            topo.kill_host(ns)
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        for link in topo.links:  # gone with its peer's namespace; make sure
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)


class Relay:
    """A TCP relay in this (root) namespace: ``listen`` → ``target``, one thread per link."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self._thread.join(timeout=2)
