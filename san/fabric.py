"""Build a described SAN as Ray actors, and reach them: the driver's side of the Ray layer.

`San` turns a `Topology` (plain data from `san.topology`) into one named actor per switch,
array, host, backup server and tape library, in a Ray namespace of its own, so the
management LAN reaches every element by name and two runs never collide.  It also applies
the element-level faults (kill, restart, link down/up), telling every switch, as a real
fabric's name server would learn of a logout.

`start_ray` starts (or joins) the Ray instance the CLI and the tests use.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import ray

from .errors import SanError
from .kinds import KINDS, resolve, specs
from .remote import get, lookup
from .units import DEFAULT_CHUNK, DEFAULT_GRANULE



def start_ray(address: str | None = None, object_store_memory: int = 2 << 30) -> bool:
    """Join the cluster at `address`, or start a Ray instance of our own; False if this process
    had already initialized Ray (the tests do), which is then used as it is.

    Without `address` it is always a new local instance (`address="local"`): a bare
    `ray.init()` would join a cluster that `ray start` left on this machine, or RAY_ADDRESS's,
    and then refuse `object_store_memory`.  The CLI first checks that `address` answers within
    its deadline (`san.cli._check_ray_address`): `ray.init` itself retries for minutes.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                  configure_logging=True)
    if address:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError):       # refused, gone, or not an address at all
            raise SanError("INVALID_INPUT", f"no Ray cluster at {address}") from None
    else:
        ray.init(address="local", object_store_memory=object_store_memory, **kwargs)
    return True


class San:
    """A running SAN: the actors built from one topology, in their own namespace."""

    def __init__(self, topology, state_dir: Path, chunk_size: int = DEFAULT_CHUNK,
                 granule: int = DEFAULT_GRANULE, namespace: str | None = None, window: int = 8):
        self.topology = topology
        self.state_dir = Path(state_dir)
        self.chunk_size = chunk_size
        self.granule = granule
        self.window = window
        self.namespace = namespace or f"san-{topology.name}-{uuid.uuid4().hex[:8]}"
        self.kinds: dict[str, str] = {}
        self.specs: dict[str, object] = {}
        self._kind = {}
        for kind in KINDS:
            for spec in specs(topology, kind):
                self.kinds[spec.name] = kind.name
                self.specs[spec.name] = spec
                self._kind[spec.name] = kind
        self.names = frozenset(self.kinds)
        self.handles: dict[str, object] = {}
        self._classes: dict[str, object] = {}
        self.down: set[str] = set()
        self.links_down: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------------
    def _actor_class(self, kind):
        cls = self._classes.get(kind.name)
        if cls is None:
            cls = resolve(kind.actor)
            cls = ray.remote(concurrency_groups=kind.concurrency_groups)(cls) \
                if kind.concurrency_groups else ray.remote(cls)
            self._classes[kind.name] = cls
        return cls

    def _create(self, name: str):
        kind, spec = self._kind[name], self.specs[name]
        placement = getattr(spec, "placement", None)
        resources = dict(placement.resources) if placement else {}
        return self._actor_class(kind).options(
            name=name, namespace=self.namespace, num_cpus=0, resources=resources, max_restarts=0,
            **kind.options).remote(*kind.args(spec, self))

    def _check_placement(self) -> None:
        """A `placement` no Ray node can satisfy would wait forever: refuse it now."""
        offered = ray.cluster_resources()
        for name, spec in self.specs.items():
            placement = getattr(spec, "placement", None)
            for resource, amount in (placement.resources.items() if placement else ()):
                if offered.get(resource, 0) < amount:
                    raise SanError("INVALID_INPUT", f"{name} wants {amount:g} of Ray resource "
                                                    f"{resource!r}, but the cluster offers "
                                                    f"{offered.get(resource, 0):g}")

    def start(self) -> "San":
        """Create every actor at once and wait until all answer."""
        self._check_placement()
        self.handles = {name: self._create(name) for name in self.kinds}
        for name, handle in self.handles.items():
            get(handle.ping.remote(), name)
        hosts = [n for n, k in self.kinds.items() if k == "host"]
        self.formatted = dict(zip(hosts, get([self.handles[h].format_blank.remote() for h in hosts])))
        return self

    def shutdown(self) -> None:
        for handle in self.handles.values():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # an actor already gone is what we want
                pass
        self.handles.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()

    # -- reaching elements --------------------------------------------------------------------
    def actor(self, name: str):
        if name not in self.kinds:
            raise SanError("INVALID_INPUT", f"no element named {name!r}")
        if name in self.down:
            raise SanError("ELEMENT_DOWN", f"{name} is down")
        return self.handles[name]

    def set_time(self, now) -> None:
        """Tell every host that is up the simulated time (what it stamps on files)."""
        hosts = [n for n, k in self.kinds.items() if k == "host" and n not in self.down]
        for name, ref in [(n, self.handles[n].set_time.remote(now)) for n in hosts]:
            try:
                get(ref, name)
            except SanError:
                pass   # a host that died since: it will be told when it is asked to work

    def call(self, name: str, method: str, *args):
        """Call `method` on element `name` and wait: the driver's management-LAN call."""
        return get(getattr(self.actor(name), method).remote(*args), name)

    def kind(self, name: str) -> str | None:
        return self.kinds.get(name)

    # -- faults -------------------------------------------------------------------------------
    def _tell_switches(self, name: str, up: bool) -> None:
        refs = [self.handles[s].set_up.remote(name, up) for s, k in self.kinds.items()
                if k == "switch" and s not in self.down]
        ray.get(refs)

    def kill(self, name: str) -> None:
        """Kill an element's actor; it stays down (ELEMENT_DOWN) until `restart`."""
        handle = self.actor(name)
        ray.kill(handle, no_restart=True)
        self.down.add(name)
        self._tell_switches(name, False)

    def restart(self, name: str) -> None:
        """Start a killed element again from the state directory."""
        if name not in self.kinds:
            raise SanError("INVALID_INPUT", f"no element named {name!r}")
        if name not in self.down:
            raise SanError("INVALID_INPUT", f"{name} is not down; only a killed element restarts")
        try:  # the name is released asynchronously after a kill
            old = ray.get_actor(name, namespace=self.namespace)
            ray.kill(old, no_restart=True)
        except ValueError:
            pass
        handle = self._create_when_free(name)
        self.handles[name] = handle
        get(handle.ping.remote(), name)
        self.down.discard(name)
        if self.kinds[name] == "switch":
            for other in self.down | self.links_down:  # a fresh switch learns what the fabric knows
                get(handle.set_up.remote(other, False), name)
        self._tell_switches(name, True)

    def _create_when_free(self, name: str):
        for _ in range(200):
            try:
                return self._create(name)
            except ValueError:  # "name already taken" until the old actor is reaped
                time.sleep(0.05)
        raise SanError("ELEMENT_DOWN", f"{name} could not be restarted: its name is still taken")

    def set_link(self, name: str, up: bool) -> None:
        """Bring a port (`array1/fc0`, `host1/hba0`) or an ISL down or up, fabric-wide."""
        (self.links_down.discard if up else self.links_down.add)(name)
        self._tell_switches(name, up)


__all__ = ["San", "start_ray", "lookup", "DEFAULT_CHUNK"]
