"""The backup server: definitions (Fig. 5), the backup volume table (Fig. 4), the catalog (Fig. 6).

`BackupServer` is the plain part of the backup server program: its tables and the rules that
turn what a flow did into catalog rows.  The flows themselves (which talk to client hosts and
arrays over the LAN) are in `san.flows.backup_server`.

Rules kept here:
- a row is keyed by where its copy lives (device ID, media ID, tape file), and a step's `as:`
  name follows that key, so it still names the backup after the catalog is rebuilt;
- a mirror replaces the rows of its destination (the old backup there is overwritten), only
  once the array has accepted the copy;
- rebuilding from an array adds one row per volume whose volume info has our format ID, skips
  (and reports) the others, and never adds a row twice;
- one flow at a time writes a disk volume (`writing`): the array refuses a second copy onto
  a volume while the first runs, and the server refuses a second flow onto it until the
  first has changed the catalog too, so two flows racing onto one volume cannot leave a row
  for the backup that lost.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from ..catalog import Catalog
from ..errors import SanError
from ..units import parse_time
from ..volume_info import IDENTITY, VolumeInfo


class BackupServer:
    def __init__(self, spec, topology, state_dir: Path):
        self.spec = spec
        self.name = spec.name
        self.topology = topology
        self.catalog = Catalog(Path(state_dir) / "servers" / spec.name)
        self.definitions = {d.name: d for d in spec.definitions}
        defined = self.catalog.definitions()
        if defined:   # the topology models (pydantic) only when a `define` op stored some
            from ..topology import Definition
            for name, body in defined.items():
                self.definitions[name] = Definition.model_validate(body)
        self.device_of = {a.name: a.device_id for a in topology.arrays}
        self.array_of = {a.device_id: a.name for a in topology.arrays}
        self._writers: dict[tuple[str, str], str] = {}     # (device ID, volume) -> its flow
        self._writers_lock = threading.Lock()
        self._claims = 0                                    # claims taken and ended so far
        self._last_claim: dict[tuple[str, str], int] = {}   # (device ID, volume) -> the last

    @contextlib.contextmanager
    def writing(self, device_id: str, volume, flow: str):
        """Inside the ``with``, `flow` (a few words naming it) alone writes disk volume
        `volume` of array `device_id`: a mirror backup's destination, a copy's, a backup being
        deleted.  Another flow onto that volume meanwhile is refused ``BUSY``, naming this
        one: it would race this one to the catalog (each drops the volume's rows, then adds
        its own), and the row of whichever copy the array overwrote could stay."""
        key = (device_id, str(volume))
        with self._writers_lock:
            other = self._writers.get(key)
            if other is not None:
                raise SanError("BUSY", f"{self.array_of.get(device_id, device_id)} volume {volume} "
                                       f"is being written by {other}; {flow} is refused until "
                                       f"that ends")
            self._writers[key] = flow
            self._claims += 1
            self._last_claim[key] = self._claims
        try:
            yield
        finally:
            with self._writers_lock:
                del self._writers[key]
                self._claims += 1
                self._last_claim[key] = self._claims

    def claim_mark(self) -> int:
        """Where the volume claims are now (`written_since`)."""
        with self._writers_lock:
            return self._claims

    def written_since(self, mark: int) -> set[tuple[str, str]]:
        """The (device ID, volume) claimed by a flow since `claim_mark` gave `mark`, or now:
        what a reader of the arrays since then may have seen half written (a rebuild that
        read a copy's destination before the copy added its row must not drop that row)."""
        with self._writers_lock:
            return {key for key, at in self._last_claim.items() if at > mark} | set(self._writers)

    def describe(self) -> dict:
        return {"name": self.name, "tape_library": self.spec.tape_library,
                "definitions": sorted(self.definitions)}

    def define(self, definition) -> None:
        """Add a definition (the `define` op); it survives a lost catalog and a restart.  The
        same definition again (a scenario run a second time on its state dir) is accepted and
        changes nothing; another one under a name in use is INVALID_INPUT."""
        body = _definition_body(definition)
        held = self.definitions.get(definition.name)
        if held is not None:
            if _definition_body(held) == body:
                return
            raise SanError("INVALID_INPUT", f"{self.name} already has a definition "
                                            f"{definition.name!r}, and it differs from this one")
        self.catalog.save_definition(definition.name, body)
        self.definitions[definition.name] = definition

    def definition(self, name: str):
        try:
            return self.definitions[name]
        except KeyError:
            raise SanError("INVALID_INPUT", f"{self.name} has no definition {name!r} "
                                            f"(definitions: {', '.join(sorted(self.definitions))})") from None

    def row(self, key: tuple) -> dict:
        """The catalog row of the copy at `key`, or NO_SUCH_BACKUP."""
        found = self.catalog.find(key)
        if found is None:
            device, media, file = key
            where = f"{device} media {media}" + (f" file {file}" if file is not None else "")
            raise SanError("NO_SUCH_BACKUP", f"{self.name} has no catalog row for the backup on {where}")
        return found

    def rows(self) -> list[dict]:
        return self.catalog.rows()

    def disk_row(self, info: VolumeInfo, device_id: str, volume: int) -> dict:
        return _disk_row(info, device_id, volume)

    def rows_from_array(self, device_id: str, records: dict, have: set) -> dict:
        """Fig. 15: the rows an array's volume info records {volume: bytes|None} give, in
        volume order, that are not yet in `have` (the keys of the catalog's rows; each row's
        key is put in it), and the records skipped; nothing is stored."""
        rows, skipped = [], []
        for volume, record in sorted(records.items()):
            if record is None:
                continue
            try:
                info = VolumeInfo.decode(record)
            except SanError as exc:
                skipped.append({"device_id": device_id, "volume": volume, "reason": exc.message})
                continue
            key = (device_id, str(volume), None)     # row_key of its row
            if key not in have:
                have.add(key)
                rows.append(_disk_row(info, device_id, volume))
        return {"added": rows, "skipped": skipped}


def _definition_body(definition) -> dict:
    """A definition as the catalog stores it (plain JSON values, unset fields left out)."""
    body = definition.model_dump(mode="json")
    body["schedule"] = definition.schedule.text if definition.schedule else None
    return {k: v for k, v in body.items() if v is not None}


def stale_rows(device_id: str, records: dict, rows: list[dict]) -> list[dict]:
    """The disk rows of `rows` on `device_id` that an array's records {volume: bytes|None}
    (all its volumes) no longer back: the volume is gone, holds no volume info, or holds
    another backup's (its identity differs from `record_of(row)`: another server's mirror
    overwrote it).  An order by such a row is refused (`NO_SUCH_BACKUP`); a rebuild drops
    it, and adds the row of what the volume holds now."""
    out = []
    for row in rows:
        if row["type"] != "disk" or row["device_id"] != device_id or row.get("file") is not None:
            continue
        try:
            record = records.get(int(row["media_id"]))
            expected = record_of(row)
        except (SanError, ValueError):     # a row no record could match
            out.append(row)
            continue
        if record is None or bytes(record)[:IDENTITY] != expected[:IDENTITY]:
            out.append(row)
    return out


def record_of(row: dict) -> bytes:
    """The volume info record a disk backup's row was made from (`_disk_row`'s inverse): what
    its volume must still hold for an order by this row to be about this backup."""
    return VolumeInfo.at(row["label"], row["host"], row["mount_point"],
                         parse_time(row["timestamp"])).encode()


def _disk_row(info: VolumeInfo, device_id: str, volume: int) -> dict:
    """The catalog row of a disk backup from its volume info (a plain function: a rebuild
    makes thousands, and an actor's own methods are wrapped by Ray)."""
    return {"host": info.host, "mount_point": info.mount_point, "type": "disk",
            "device_id": device_id, "media_id": str(volume), "file": None,
            "label": info.label, "timestamp": info.time_text}
