"""Build a described SAN as Ray actors, and reach them: the driver's side of the Ray layer.

`San` turns a `Topology` (plain data from `san.topology`) into one named actor per switch,
array, host, backup server and tape library, in a Ray namespace of its own, so the
management LAN reaches every element by name and two runs never collide.  It also applies
the element-level faults (kill, restart, link down/up), telling every switch, as a real
fabric's name server would learn of a logout, and the hosts whose paths it touches (RSCN).

On a cluster (`shared_state=True`, what `san run --address` builds) every element first
checks, on the node Ray put it on, that the state directory there is the driver's: the driver
writes a fresh token into `DIR/.shared-check` and each element reads it back before it opens
anything in DIR (`check_marker`), so a folder that is not on a file system every node shares is
refused (INVALID_INPUT) before any step.  The element's answer says where it runs (`nodes`).

Before any actor is created, each element's `placement` is checked the way Ray schedules it
(`check_placement`): the request must fit on one live node, and the requests of all elements
on a resource must not add up to more than the cluster offers.  Starting is bounded
(`start_timeout`): an element that Ray cannot place or that does not answer is named, never
waited for forever.

`start_ray` starts (or joins) the Ray instance the CLI and the tests use.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayTaskError

from .elements.fc_switch import rscn_arrays, rscn_hosts
from .errors import CODES, InternalError, SanError
from .kinds import KINDS, plain, resolve, specs
from .remote import RayPeers, get, lookup
from .units import DEFAULT_CHUNK, DEFAULT_GRANULE

START_TIMEOUT_S = 60.0          # how long an element may take to be placed and answer
MARKER = ".shared-check"        # in the state dir, on a cluster: the driver's token
MARKER_WAIT_S = 5.0             # how long an element retries reading it (NFS caches names)
_UNIT = 10_000                  # Ray counts resources in units of 0.0001


def check_marker(state_dir: str, token: str, wait: float = MARKER_WAIT_S) -> str | None:
    """None if `state_dir`, as this node sees it, holds the marker `token` the driver wrote
    there; otherwise what this node sees instead.  Retries for `wait` seconds, since a shared
    file system may show a file another machine has just written a little late."""
    path = Path(state_dir) / MARKER
    deadline = time.monotonic() + wait
    while True:
        try:
            found = path.read_text().strip()
            problem = None if found == token else f"{path} there holds another run's marker"
        except FileNotFoundError:
            problem = (f"{state_dir} does not exist there" if not Path(state_dir).is_dir()
                       else f"{path} is missing there")
        except OSError as exc:
            problem = f"{path} cannot be read there ({exc.strerror or exc})"
        if problem is None or time.monotonic() >= deadline:
            return problem
        time.sleep(0.25)


def node_info() -> dict:
    """Where the calling process runs: its Ray node's id and IP address, and the host name."""
    return {"node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname()}


def _checking(base):
    """`base` (an element's actor class) as run on a cluster: before the element opens
    anything in the state dir, it reads back the driver's marker there; `san_started` answers
    where it runs and what it found (None: the state dir is the driver's)."""
    class Checked(base):
        def __init__(self, marker, *args):
            self._san_node = node_info()
            self._san_problem = check_marker(*marker)
            if self._san_problem is None:       # otherwise the element never touches the folder
                super().__init__(*args)

        def san_started(self) -> dict:
            return dict(self._san_node, problem=self._san_problem)

    # one class per kind, named after it (Ray tells actor classes apart by module and name)
    Checked.__name__ = Checked.__qualname__ = base.__name__
    return Checked


def _amounts(resources: dict) -> str:
    return "{" + ", ".join(f"{r}: {a:g}" for r, a in resources.items()) + "}"


def _units(amount: float) -> int:
    return round(amount * _UNIT)


def check_placement(requests: dict[str, dict[str, float]], nodes: list[dict]) -> None:
    """Refuse what Ray could never schedule, as Ray decides it: each element's request (its
    placement's resources above 0; 0 asks for nothing) must fit on one node, and the requests
    on a resource, summed over the elements, must not exceed the cluster's total of it.
    `requests` is element -> resources in file order, `nodes` the live nodes' resources."""
    total: dict[str, int] = {}
    for offered in nodes:
        for resource, amount in offered.items():
            total[resource] = total.get(resource, 0) + _units(amount)
    for name, request in requests.items():
        if not request or any(all(_units(offered.get(r, 0)) >= _units(a) for r, a in request.items())
                              for offered in nodes):
            continue
        for resource, amount in request.items():
            most = max((_units(offered.get(resource, 0)) for offered in nodes), default=0)
            if most == 0:
                raise SanError("INVALID_INPUT", f"{name} wants {amount:g} of Ray resource "
                                                f"{resource!r}, but no node offers it")
            if most < _units(amount):
                raise SanError("INVALID_INPUT", f"{name} wants {amount:g} of Ray resource "
                                                f"{resource!r}, but no node offers that much "
                                                f"(at most {most / _UNIT:g} on one node)")
        raise SanError("INVALID_INPUT", f"{name} wants {_amounts(request)} on one node, but no "
                                        f"node offers all of it")
    asked: dict[str, list[str]] = {}
    summed: dict[str, int] = {}
    for name, request in requests.items():
        for resource, amount in request.items():
            asked.setdefault(resource, []).append(name)
            summed[resource] = summed.get(resource, 0) + _units(amount)
            if summed[resource] > total.get(resource, 0):
                others = asked[resource][:-1]
                raise SanError("INVALID_INPUT", f"{name} wants {amount:g} of Ray resource "
                                                f"{resource!r}; with {', '.join(others)} that is "
                                                f"{summed[resource] / _UNIT:g} in all, but the "
                                                f"cluster offers {total.get(resource, 0) / _UNIT:g}")


def _died(name: str, exc: RayActorError) -> SanError:
    """ELEMENT_DOWN for an element whose actor died while starting, with the last line of
    the reason Ray gives (e.g. the exception its constructor raised), on one line; but if its
    constructor raised a `SanError`, that error with its own code (a volume size that does not
    match the state dir is INVALID_INPUT, exit 2, whoever checks it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines and getattr(exc, "actor_init_failed", False) else "its actor died"
    raised = re.fullmatch(r"san\.errors\.(SanError|InternalError): ([A-Z_]+): (.*)", reason)
    if raised and raised[2] in CODES:
        message = f"{name} did not start: {raised[3]}"
        return InternalError(message) if raised[1] == "InternalError" else SanError(raised[2], message)
    return SanError("ELEMENT_DOWN", f"{name} did not start: {reason}")



_CLASSES: dict[tuple[str, bool], object] = {}    # (kind, shared_state) -> Ray actor class


def _actor_class(kind, shared_state: bool):
    """The Ray actor class of `kind` (checking the marker first on a cluster), made once per
    process: Ray exports a class to the cluster the first time one of its actors is created
    in a session (pickling it and disassembling every method, a good part of a second for
    all kinds), and a class made anew for every SAN would be exported anew every time."""
    cls = _CLASSES.get((kind.name, shared_state))
    if cls is None:
        cls = resolve(kind.actor)
        if shared_state:
            cls = _checking(cls)
        cls = ray.remote(concurrency_groups=kind.concurrency_groups)(cls) \
            if kind.concurrency_groups else ray.remote(cls)
        _CLASSES[(kind.name, shared_state)] = cls
    return cls


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
        except (ConnectionError, ValueError) as exc:    # refused, gone, or not an address
            raise SanError("INVALID_INPUT", f"no Ray cluster at {address} ({exc})") from None
    else:
        ray.init(address="local", object_store_memory=object_store_memory, **kwargs)
    return True


class San:
    """A running SAN: the actors built from one topology, in their own namespace."""

    def __init__(self, topology, state_dir: Path, chunk_size: int = DEFAULT_CHUNK,
                 granule: int = DEFAULT_GRANULE, namespace: str | None = None, window: int = 8,
                 shared_state: bool = False, start_timeout: float = START_TIMEOUT_S):
        self.topology = topology
        self.state_dir = Path(state_dir).absolute()    # the actors' working folder is not ours
        self.shared_state = shared_state                # on a cluster: check DIR on every node
        self.start_timeout = start_timeout
        self._token = uuid.uuid4().hex
        self.nodes: dict[str, dict] = {}                # element -> where it runs (on a cluster)
        self.chunk_size = chunk_size
        self.granule = granule
        self.window = window
        self.namespace = namespace or f"san-{topology.name}-{uuid.uuid4().hex[:8]}"
        self.kinds: dict[str, str] = {}
        self.specs: dict[str, object] = {}
        self._kind = {}
        self.plain_topology = plain(topology)      # what the actors are given (`san.kinds`)
        self._plain: dict[str, object] = {}
        for kind in KINDS:
            for spec, shipped in zip(specs(topology, kind), specs(self.plain_topology, kind)):
                self.kinds[spec.name] = kind.name
                self.specs[spec.name] = spec
                self._kind[spec.name] = kind
                self._plain[spec.name] = shipped
        self.names = frozenset(self.kinds)
        self.handles: dict[str, object] = {}
        self.down: set[str] = set()
        self.links_down: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------------
    def _actor_class(self, kind):
        return _actor_class(kind, self.shared_state)

    def request(self, name: str) -> dict[str, float]:
        """The Ray resources element `name` holds while it runs: its placement's, above 0."""
        placement = getattr(self.specs[name], "placement", None)
        return {r: float(a) for r, a in (placement.resources.items() if placement else ()) if a > 0}

    def _options(self, name: str):
        """The element's actor class with its options; ValueError if Ray refuses them."""
        kind = self._kind[name]
        return self._actor_class(kind).options(
            name=name, namespace=self.namespace, num_cpus=0, resources=self.request(name),
            max_restarts=0, **kind.options)

    def _create(self, name: str):
        args = self._kind[name].args(self._plain[name], self)
        if self.shared_state:
            args = ((str(self.state_dir), self._token), *args)
        return self._options(name).remote(*args)

    def _check_placement(self) -> None:
        """A `placement` that Ray refuses, or that no node or not the whole cluster can hold,
        would fail or wait forever: refuse it before any actor starts."""
        for name in self.kinds:
            try:
                self._options(name)
            except ValueError as exc:
                raise SanError("INVALID_INPUT", f"{name}: placement {_amounts(self.request(name))} "
                                                f"is refused by Ray: {exc}") from None
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        check_placement({name: self.request(name) for name in self.kinds}, nodes)

    def _write_marker(self) -> None:
        """The token every element must read back from the state dir (see `check_marker`)."""
        path = self.state_dir / MARKER
        temporary = path.with_name(f"{MARKER}.{self._token}")
        with open(temporary, "w") as f:
            f.write(self._token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)

    def _await_started(self, handles: dict) -> None:
        """Wait, at most `start_timeout` seconds, until every actor in `handles` answers its
        first call; on a cluster that call says where it runs and whether it saw the marker.
        INVALID_INPUT for a state dir an element does not see as the driver's or a placement
        that cannot be met now; ELEMENT_DOWN for an actor that died or did not answer."""
        method = "san_started" if self.shared_state else "ping"
        refs = {name: getattr(handle, method).remote() for name, handle in handles.items()}
        if not refs:
            return
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.start_timeout)
        ready = set(ready)
        answers, pending = {}, []
        for name, ref in refs.items():
            if ref not in ready:
                pending.append(name)
                continue
            try:
                answers[name] = ray.get(ref)
            except RayTaskError as exc:
                if isinstance(exc.cause, SanError):
                    raise exc.cause from None
                if isinstance(exc.cause, RayActorError):
                    raise _died(name, exc.cause) from None
                raise InternalError.of(f"{name} starting", exc.cause if exc.cause is not None
                                       else exc) from exc
            except RayActorError as exc:
                raise _died(name, exc) from None
        if self.shared_state:
            for name, answer in answers.items():
                if answer["problem"]:
                    raise SanError("INVALID_INPUT", (
                        f"--state-dir {self.state_dir} is not shared with every node: {name} "
                        f"runs on node {answer['node_ip']} ({answer['hostname']}, "
                        f"{answer['node_id'][:8]}) and {answer['problem']}; use a folder on a "
                        f"file system every node mounts at the same path"))
            self.nodes.update({n: {k: v for k, v in a.items() if k != "problem"}
                               for n, a in answers.items()})
        if pending:
            raise self._not_started(pending)

    def _not_started(self, pending: list[str]) -> SanError:
        """The error for elements that did not answer within the start timeout."""
        name = pending[0]
        more = f" (nor did {', '.join(pending[1:])})" if pending[1:] else ""
        request = self.request(name)
        free = ray.available_resources()
        short = {r: a for r, a in request.items() if _units(free.get(r, 0)) < _units(a)}
        if short:
            have = ", ".join(f"{r} {free.get(r, 0):g} of {ray.cluster_resources().get(r, 0):g}"
                             for r in short)
            return SanError("INVALID_INPUT", (
                f"{name} did not start within {self.start_timeout:g} s: its placement "
                f"{_amounts(request)} cannot be met now (free on the cluster: {have}; other "
                f"elements or other Ray jobs hold the rest){more}"))
        return SanError("ELEMENT_DOWN", (
            f"{name} did not start within {self.start_timeout:g} s: Ray did not start its actor "
            f"or it did not answer (see `ray status` and the Ray logs of the nodes){more}"))

    def start(self) -> "San":
        """Create every actor at once and wait until all answer (at most `start_timeout` s);
        each host formats its blank fat mounts meanwhile (`formatted`).

        Off a cluster the hosts are told to format with their first call, beside every
        element's ping: a host's format waits for its array and switch to start, not for
        the whole SAN, and no round trip follows the start.  On a cluster a host formats
        only once every element has read the marker back (an element that does not see the
        driver's state dir must not write to it)."""
        self._check_placement()
        if self.shared_state:
            self._write_marker()
        self.handles = {name: self._create(name) for name in self.kinds}
        hosts = [n for n, k in self.kinds.items() if k == "host"]
        formats = [] if self.shared_state else [self.handles[h].format_blank.remote() for h in hosts]
        self._await_started(self.handles)
        if self.shared_state:
            formats = [self.handles[h].format_blank.remote() for h in hosts]
        self.formatted = dict(zip(hosts, get(formats)))
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

    @property
    def peers(self) -> RayPeers:
        """The elements as `san.flows.peers.Peers`: how the driver's own flows (`san serve`)
        reach them, bulk data passed by reference as between elements."""
        return RayPeers(self.namespace, self.names)

    def set_time(self, now) -> None:
        """Tell every host that is up the simulated time (what it stamps on files)."""
        hosts = [n for n, k in self.kinds.items() if k == "host" and n not in self.down]
        # a host that died since is skipped: it will be told when it is asked to work
        self._answered([(n, self.handles[n].set_time.remote(now)) for n in hosts])

    def call(self, name: str, method: str, *args):
        """Call `method` on element `name` and wait: the driver's management-LAN call."""
        return get(getattr(self.actor(name), method).remote(*args), name)

    def kind(self, name: str) -> str | None:
        return self.kinds.get(name)

    # -- faults -------------------------------------------------------------------------------
    def _tell_switches(self, name: str, up: bool) -> None:
        """Every switch learns the change; then the hosts and arrays whose paths it can touch
        (an RSCN: `rscn_hosts`, `rscn_arrays`), so a transfer under way (a host's I/O, an
        array's copy over FC) moves to another path before its next chunk.  An element that
        died meanwhile is skipped (it learns the fabric when it restarts)."""
        switches = [(s, self.handles[s].set_up.remote(name, up)) for s, k in self.kinds.items()
                    if k == "switch" and s not in self.down]
        self._answered(switches)        # the switches first: a host told re-routes through them
        told = rscn_hosts(name, self.kinds) + rscn_arrays(name, self.kinds)
        self._answered([(e, self.handles[e].fabric_event.remote(name, up))
                        for e in told if e not in self.down])

    @staticmethod
    def _answered(asked: list) -> None:
        """Wait for each (element, ref) of `asked`; an element that is down is skipped."""
        for element, ref in asked:
            try:
                get(ref, element)
            except SanError as exc:
                if exc.code != "ELEMENT_DOWN":
                    raise

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
        self._await_started({name: handle})
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


__all__ = ["San", "start_ray", "lookup", "DEFAULT_CHUNK", "START_TIMEOUT_S", "MARKER",
           "check_marker", "check_placement", "node_info"]
