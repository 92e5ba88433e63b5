"""Cross-reference checks of a scenario's steps, on the plain data, tolerantly.

The step models (`steps`) check each value's shape; these checks follow the steps in order
and look at the names they use: elements of the topology and their volumes and mount points
(through the `checks.Index` of its names), definitions of the topology or of an earlier `define`, and the checkpoints and backups
that earlier steps named with `as`.  Inside `concurrent`, the inner steps see the names made
before it, not each other's; after it, the names its steps made.  Steps that are not mappings
or have no known op are skipped: the model validation reports those.
"""
from __future__ import annotations

from typing import Any

from san.topology.checks import (
    Index, Reporter, check_destination, dict_of, int_of, list_of, str_of,
)
from san.topology.fields import FAULT_KINDS, article, one_of
from san.topology.steps import OPS, SERVER_OPS


class _Names:
    """What earlier steps made: checkpoints, backups, definitions, snapshot arrays (the
    names in the order they were made: dicts of None)."""

    def __init__(self, index: Index | None = None):
        self.checkpoints: dict[str, None] = {}
        self.backups: dict[str, None] = {}
        self.definitions: dict[str, Any] = dict(index.definitions) if index else {}
        self.snapshot_arrays: set[str] = set(index.snapshot_arrays) if index else set()

    def copy(self) -> "_Names":
        new = _Names()
        new.checkpoints, new.backups = dict(self.checkpoints), dict(self.backups)
        new.definitions, new.snapshot_arrays = dict(self.definitions), set(self.snapshot_arrays)
        return new

    def update(self, other: "_Names") -> None:
        self.checkpoints |= other.checkpoints
        self.backups |= other.backups
        for k, v in other.definitions.items():
            self.definitions.setdefault(k, v)
        self.snapshot_arrays |= other.snapshot_arrays


def _earlier(kind: str, names) -> str:
    if not names:
        return f"the 'as' name of an earlier {kind} step (there is none before this step)"
    return f"the 'as' name of an earlier {kind} step: " + one_of(names)


BACKUP_MAKERS = ("backup", "copy_volume", "copy_to_tape", "migrate")
TARGET_FORMS = (("host", "mount"), ("array", "volume"), ("backup",))


def check_steps(steps: Any, r: Reporter, index: Index | None) -> None:
    """Reports the reference problems of a scenario's steps (names need the topology index)."""
    if not isinstance(steps, list):
        return
    _StepChecker(r, index).walk(steps, ("steps",), _Names(index), sequential=True)


class _StepChecker:
    def __init__(self, r: Reporter, index: Index | None):
        self.r = r
        self.index = index
        self._targets: dict[str, None] | None = None
        self._sources: dict[str, None] | None = None

    def targets(self) -> dict[str, None]:
        """What a fault may target: the elements, ports and ISLs (the index has them all)."""
        if self._targets is None:
            self._targets = dict.fromkeys([*self.index.elements, *self.index.array_ports(),
                                           *self.index.host_hbas()])
        return self._targets

    def sources(self) -> dict[str, None]:
        """What a catalog is rebuilt from: the arrays and the tape libraries."""
        if self._sources is None:
            self._sources = dict.fromkeys([*self.index.arrays, *self.index.libraries])
        return self._sources

    # a name of the topology -------------------------------------------------------
    def ref(self, path, value, table, what) -> bool:
        """True if `value` (when a string) names an entry of `table`; reports if not."""
        if self.index is None or not isinstance(value, str):
            return True
        if value in table:
            return True
        self.r(path, f"unknown {what}", expected=one_of(table))
        return False

    def known_volume(self, names: _Names):
        def check(path, array, volume):
            if self.index is None:
                return
            volumes = self.index.volumes(array)
            if volume not in volumes and array not in names.snapshot_arrays:
                self.r(path, f"unknown volume of {array}", expected=one_of(volumes))
        return check

    def mount(self, step: dict, path, host, mount) -> None:
        """A mount point named beside a host must be one of its mounts (they are all in the
        topology: no step adds one), unless the step expects NO_SUCH_MOUNT: a drill may show
        the refusal on purpose, a typo does not say so."""
        if self.index is None or not isinstance(host, str) or not isinstance(mount, str) \
                or step.get("expect_error") == "NO_SUCH_MOUNT":
            return
        mounts = self.index.hosts[host]["mounts"]
        if mount not in mounts:
            self.r(path, f"unknown mount point of {host}", expected=one_of(mounts))

    def volume(self, path, array, volume, names) -> None:
        if isinstance(array, str) and self.index is not None and array in self.index.arrays \
                and int_of(volume) is not None:
            self.known_volume(names)(path, array, int(volume))

    # the steps -----------------------------------------------------------------
    def walk(self, steps: list, path: tuple, names: _Names, sequential: bool) -> _Names:
        produced = _Names()
        titles = {}
        if not sequential:
            for i, step in enumerate(steps):
                if isinstance(step, dict) and isinstance(step.get("title"), str):
                    titles.setdefault(step["title"], []).append(i)
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("op"), str) \
                    or step["op"] not in OPS:
                continue
            made = self.step(step, path + (i,), names, None if sequential else titles, i)
            produced.update(made)
            if sequential:
                names.update(made)
        return produced

    def step(self, step: dict, path: tuple, names: _Names, titles, position) -> _Names:
        r, index, op = self.r, self.index, step["op"]
        made = _Names()
        as_ = step.get("as") if isinstance(step.get("as"), str) else None
        if op == "checkpoint" and as_:
            made.checkpoints[as_] = None
        if op in BACKUP_MAKERS and as_:
            made.backups[as_] = None

        hosts = index.hosts if index else {}
        arrays = index.arrays if index else {}
        if op != "define" and "host" in step:
            if self.ref(path + ("host",), step.get("host"), hosts, "host"):
                self.mount(step, path + ("mount",), step.get("host"), step.get("mount"))
        if "array" in step:
            if self.ref(path + ("array",), step.get("array"), arrays, "array"):
                self.volume(path + ("volume",), step.get("array"), step.get("volume"), names)
        if "backup" in step and isinstance(step.get("backup"), str) \
                and step["backup"] not in names.backups:
            r(path + ("backup",), "unknown backup",
              expected=_earlier("backup", names.backups))
        if op in ("checkpoint", "verify"):
            self.target_form(step, path)
        if op == "verify" and isinstance(step.get("checkpoint"), str) \
                and step["checkpoint"] not in names.checkpoints:
            r(path + ("checkpoint",), "unknown checkpoint",
              expected=_earlier("checkpoint", names.checkpoints))
        if op == "backup" and index is not None and isinstance(step.get("definition"), str) \
                and step["definition"] not in names.definitions:
            r(path + ("definition",), "unknown definition",
              expected="a definition of the topology or of an earlier define step: "
                       + one_of(names.definitions))
        if op in SERVER_OPS:
            self.server(step, path)
        if op == "define":
            self.define(step, path, names, made)
        if op == "restore_volume" and isinstance(step.get("to"), dict):
            to = step["to"]
            if self.ref(path + ("to", "host"), to.get("host"), hosts, "host"):
                self.mount(step, path + ("to", "mount"), to.get("host"), to.get("mount"))
        if op == "copy_volume" and isinstance(step.get("to"), dict):
            to = step["to"]
            if self.ref(path + ("to", "array"), to.get("array"), arrays, "array"):
                self.volume(path + ("to", "volume"), to.get("array"), to.get("volume"), names)
        if op == "rebuild_catalog" and index is not None:
            sources = self.sources()
            for j, name in list_of(step, "from"):
                if isinstance(name, str) and name not in sources:
                    r(path + ("from", j), "unknown array or tape library",
                      expected=one_of(sources))
        if op == "fault":
            self.fault(step, path, names, titles, position)
        if op == "concurrent" and step.get("expect_error") is not None:
            # its own error only says that an inner step went wrong, whichever and however:
            # expecting it would pass any inner failure
            r(path + ("expect_error",), "a concurrent step expects no error of its own",
              got=step["expect_error"], expected="expect_error on the inner steps that should fail")
        if op == "concurrent" and isinstance(step.get("steps"), list):
            made.update(self.walk(step["steps"], path + ("steps",), names.copy(),
                                  sequential=False))
        return made

    def target_form(self, step: dict, path: tuple) -> None:
        present = [form for form in TARGET_FORMS if any(step.get(k) is not None for k in form)]
        forms = "host+mount, array+volume or backup"
        if not present:
            self.r(path, "no target", got=None, expected=f"exactly one of {forms}")
            return
        if len(present) > 1:
            self.r(path, "more than one target", got="+".join(present[0]) + " and "
                   + "+".join(present[1]), expected=f"exactly one of {forms}")
            return
        for key in present[0]:
            if step.get(key) is None:
                self.r.missing(path + (key,), f"{article(key)} '{key}' key with "
                               + "+".join(k for k in present[0] if k != key))

    def server(self, step: dict, path: tuple) -> None:
        if self.index is None:
            return
        servers = self.index.servers
        if step.get("server") is None:
            if len(servers) != 1:
                self.r.missing(path + ("server",),
                               "a 'server' key (the topology has "
                               + (f"{len(servers)} backup servers: {', '.join(servers)})"
                                  if servers else "no backup server)"))
        else:
            self.ref(path + ("server",), step.get("server"), servers, "backup server")

    def define(self, step: dict, path: tuple, names: _Names, made: _Names) -> None:
        index = self.index
        name = str_of(step.get("name"))
        if name is not None:
            if name in names.definitions:
                self.r(path + ("name",), "duplicate definition name",
                       expected="a definition name not yet defined")
            made.definitions[name] = step
            dest = dict_of(step.get("destination"))
            if step.get("method") == "snapshot" and isinstance(dest.get("array"), str):
                made.snapshot_arrays.add(dest["array"])
        if index is None:
            return
        if self.ref(path + ("host",), step.get("host"), index.hosts, "host"):
            self.mount(step, path + ("mount_point",), step.get("host"), step.get("mount_point"))
        check_destination(self.r, path, step, index, self.known_volume(names))

    def fault(self, step: dict, path: tuple, names: _Names, titles, position) -> None:
        r, index = self.r, self.index
        kind, target = step.get("kind"), step.get("target")
        if index is not None and isinstance(target, str):
            targets = self.targets()
            if target not in targets:
                r(path + ("target",), "unknown target",
                  expected=one_of(targets) + " (an element, port or ISL)")
            target_kind = index.elements.get(target)
        else:
            target_kind = None
        if kind == "corrupt":
            has_volume, has_media = step.get("volume") is not None, step.get("media") is not None
            if step.get("offset") is None:
                r.missing(path + ("offset",), "an 'offset' key for a corrupt fault")
            if has_volume == has_media:
                if has_volume:
                    r(path + ("media",), "corrupt takes volume or media, not both", got="media",
                      expected="volume (of an array) or media (of a tape library)", at_key=True)
                else:
                    r.missing(path + ("volume",), "a 'volume' key (target an array) or a "
                              "'media' key (target a tape library) for a corrupt fault")
            elif has_volume and target_kind is not None and target_kind != "array":
                r(path + ("target",), "corrupt with volume needs an array",
                  expected=one_of(index.arrays))
            elif has_volume and target_kind == "array":
                self.volume(path + ("volume",), target, step.get("volume"), names)
            elif has_media and target_kind is not None and target_kind != "tape_library":
                r(path + ("target",), "corrupt with media needs a tape library",
                  expected=one_of(index.libraries))
        elif kind in FAULT_KINDS:
            for key in ("volume", "media", "offset"):
                if step.get(key) is not None:
                    r(path + (key,), f"only a corrupt fault takes {key}", got=key,
                      expected=f"no {key} for kind: {kind}", at_key=True)
        when = step.get("when")
        if isinstance(when, dict):
            if titles is None:
                r(path + ("when",), "when works only inside a concurrent step", got=None,
                  expected="no when outside concurrent")
            elif isinstance(when.get("step"), str):
                named = titles.get(when["step"], [])
                if len(named) > 1:      # the fault would watch one of them, and which is luck
                    r(path + ("when", "step"), "ambiguous step title",
                      expected=f"a title that only one step of this concurrent has (steps "
                               f"{', '.join(str(i) for i in named)} share it)")
                elif named in ([], [position]):
                    r(path + ("when", "step"), "unknown step title",
                      expected="the title of another step in this concurrent: "
                               + one_of(t for t, i in titles.items() if i != [position]))
