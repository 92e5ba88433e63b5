"""The backup server program's flows (the patent's Fig. 2b; docs/method.md), in plain Python.

`Server` adds to `BackupServer` (the plain tables: catalog, definitions, backup volume table)
the flows of every backup operation: it orders the client hosts' backup client programs
(`san.flows.backup_client`) and, for a volume copy and a catalog rebuild, the arrays, over
the LAN, and for tapes the library.  Every flow returns the catalog rows it touched and the
transfers it caused (LAN messages, copies inside arrays, FC traffic) for modeled time.  It
reaches other elements through `Peers` (`san.flows.peers`); `san.actors` makes it an actor.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from pathlib import Path

from ..catalog import row_key
from ..elements.backup_server import BackupServer, record_of, stale_rows
from ..errors import SanError
from ..timemodel import Transfer
from ..units import format_time
from ..volume_info import VolumeInfo
from .lan import lan_transfer, manage, payload_size
from .state_lock import StateLock


class _Gone:
    """What the threads of a killed server find instead of its catalog and its peers: every
    use fails ELEMENT_DOWN (see `Server.close`)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        raise SanError("ELEMENT_DOWN", f"{self._name} went down")


class Server(BackupServer):
    """A backup server: its tables and its flows; its peers reached by `peers`."""

    def __init__(self, spec, topology, state_dir, peers):
        # its part of the state dir is this generation's until it closes or its process ends
        self._state_lock = StateLock.holding(
            Path(state_dir) / "servers" / spec.name, spec.name,
            lambda: super(Server, self).__init__(spec, topology, state_dir))
        self.peers = peers
        self.session_id = uuid.uuid4().hex     # this generation: what its flows held dies with it

    def ping(self) -> str:
        return self.name

    def close(self) -> None:
        """Going down (an in-process SAN's kill, where no process dies): a flow it is running
        fails ELEMENT_DOWN at its next catalog change or call to another element, as a killed
        actor's would have stopped; what it had ordered (a host's backup client waiting for a
        copy) goes on there.  A restarted server reads the catalog as the last commit left it."""
        catalog, self.catalog, self.peers = self.catalog, _Gone(self.name), _Gone(self.name)
        try:
            if not isinstance(catalog, _Gone):
                catalog.close()
        finally:
            self._state_lock.release()

    def _host(self, host: str, method: str, *args):
        """A call to a host that is not a backup-client order (pre/post actions, paths)."""
        return self.peers.element(host).call(method, *args)

    def _actions(self, host: str, mount_point: str, names) -> list:
        """Pre- or post-processing on a host's mount, ordered by this server's flow: a quiesce
        is this session's, and the host drops it if this server dies before its resume."""
        return self._host(host, "actions", mount_point, list(names), (self.name, self.session_id))

    def _client(self, host: str, method: str, *args) -> dict:
        """Order a host's backup client over the LAN; its answer carries its own transfers."""
        answer = self.peers.element(host).call(method, *args)
        answer["transfers"] = ([lan_transfer(self.name, host, 0)] + answer.get("transfers", [])
                               + [lan_transfer(host, self.name, 0)])
        return answer

    def _manage(self, array: str, method: str, *args):
        return manage(self.name, self.peers, array, method, *args)

    @contextlib.contextmanager
    def _ordering(self, row: dict):
        """An order to an array about the disk backup of catalog row `row`; yields the volume
        info the volume must still hold (`record_of`), for the order to carry.  If the array
        says it does not (``NO_SUCH_BACKUP``: another server's mirror overwrote the volume,
        or its record or snapshot was deleted), the row is stale: it goes, and the error says so.  The
        array checks under its own lock, so nothing can overwrite the backup in between (and
        what it attaches for a reader stays BUSY for overwrites until detached)."""
        try:
            yield record_of(row)
        except SanError as exc:
            if exc.code != "NO_SUCH_BACKUP":
                raise
            gone = self.catalog.delete_row(row)
            raise SanError("NO_SUCH_BACKUP", (
                f"the backup {row['label']!r} of {row['host']}:{row['mount_point']} made "
                f"{row['timestamp']} is no longer on {row['device_id']} volume "
                f"{row['media_id']} ({exc.message})"
                + ("; its catalog row on " + self.name + " is deleted" if gone else ""))) from exc

    # -- flows ------------------------------------------------------------------------------
    def list_destinations(self, host: str, mount_point: str) -> dict:
        """Fig. 8: ask the host's client for the mount's copy destinations; keep them (Fig. 4)."""
        answer = self._client(host, "client_list_destinations", mount_point)
        self.catalog.set_backup_volumes(host, mount_point, answer["device_id"], answer["destinations"])
        return answer

    def define(self, definition) -> dict:
        super().define(definition)
        return {"definition": definition.name, "transfers": []}

    def backup(self, name: str, timestamp: int) -> dict:
        """Run a definition: Figs. 9-10 (mirror) or 17-18 (snapshot)."""
        d = self.definition(name)
        if d.type == "tape":
            return self._tape_backup(d, timestamp)
        array = d.destination.array
        device_id = self.device_of[array]
        if d.method != "mirror":        # a snapshot: a new volume, which no other flow writes
            return self._disk_backup(d, device_id, timestamp)
        with self.writing(device_id, d.destination.volume, f"the backup of {name!r}"):
            return self._disk_backup(d, device_id, timestamp)

    def _disk_backup(self, d, device_id: str, timestamp: int) -> dict:
        try:
            started = self._client(d.host, "client_backup_start", d.mount_point, d.method,
                                   d.destination.array, d.destination.volume, list(d.pre),
                                   list(d.post), d.label, timestamp)
        except BaseException:
            if d.method == "mirror":
                self._forget_if_overwritten(d.destination.array, device_id, d.destination.volume)
            raise
        transfers = started["transfers"]
        destination = (device_id, str(started["volume"]), None)
        if d.method == "mirror":   # the array accepted: the old backup there is being overwritten
            self.catalog.delete(destination)
            finished = self._client(d.host, "client_backup_finish",
                                    {k: v for k, v in started.items() if k != "transfers"})
            transfers += finished["transfers"]
        # replacing: a catalog rebuild meanwhile may have found the new volume info already
        row = self.catalog.add(self.disk_row(VolumeInfo.decode(started["info"]), device_id,
                                             started["volume"]), replacing=destination)
        return {"row": row, "key": row_key(row), "transfers": transfers}

    def _forget_if_overwritten(self, array: str, device_id: str, volume: int) -> None:
        """After a mirror backup failed on its host's side (a post action, the host gone): if
        the array accepted the order, the old backup on `volume` is being overwritten and its
        volume info is gone, so its catalog row goes too (a restore by it would bring back
        the new bytes).  The array's volume info decides; an array that cannot say (down)
        leaves the row, for a rebuild to settle."""
        try:
            info, _ = self._manage(array, "read_info", volume)
        except SanError:
            return
        if info is None:
            self.catalog.delete((device_id, str(volume), None))

    # -- tape -------------------------------------------------------------------------------
    def _library(self) -> str:
        if not self.spec.tape_library:
            raise SanError("NO_SUCH_MEDIA", f"{self.name} has no tape library")
        return self.spec.tape_library

    def _to_tape(self, row: dict, media: str, host: str, port_ref: str, lun: int) -> dict:
        """Write the image of the volume `host` reaches at port/LUN onto `media`, labelled
        with `row` (Fig. 16: the management information first, then the data); the
        transfer runs array -> FC -> host -> LAN -> this server -> drive."""
        library = self._library()
        written = self.peers.element(library).call("write_from_host", media, row, host, port_ref,
                                                   lun, (self.name, self.session_id))
        rest = (f"{host}/lan:tx", f"{self.name}/lan:rx", f"{library}/drive{written['drive']}")
        return {**written, "transfers": [Transfer(tuple(resources) + rest, n)
                                         for resources, n in written["routes"]]}

    def _tape_backup(self, d, timestamp: int) -> dict:
        """An ordinary backup to tape: the mount's volume image, labelled with its row."""
        VolumeInfo(d.label, d.host, d.mount_point, timestamp)   # the same limits as a disk backup
        spec = next(h for h in self.topology.hosts if h.name == d.host)
        mount = next((m for m in spec.mounts if m.mount_point == d.mount_point), None)
        if mount is None:
            raise SanError("NO_SUCH_MOUNT", f"{d.host} has no mount {d.mount_point!r}")
        library = self._library()
        row = {"host": d.host, "mount_point": d.mount_point, "type": "tape", "device_id": library,
               "media_id": d.destination.media, "file": None, "label": d.label,
               "timestamp": format_time(dt.datetime.fromtimestamp(timestamp, dt.timezone.utc))}
        try:
            transfers = self._actions(d.host, d.mount_point, d.pre)
            written = self._to_tape(row, d.destination.media, d.host, mount.port, mount.lun)
        except BaseException:
            self._post_quietly(d.host, d.mount_point, d.post)
            raise
        # the file is committed and labelled: it is a backup (a rebuild would find it), so it
        # gets its row before the post-processing, whose failure is then reported with it
        # (replacing: a catalog rebuild meanwhile may have read the new file's labels already)
        added = self.catalog.add(written["row"], replacing=row_key(written["row"]))
        done = {"row": added, "key": row_key(added), "transfers": transfers + written["transfers"]}
        with self._made(done, "post-processing"):
            done["transfers"] += self._actions(d.host, d.mount_point, d.post)
        return done

    @contextlib.contextmanager
    def _made(self, done: dict, what: str):
        """Around what follows a backup already made and catalogued (`done`): a failure
        there says the backup stands, and carries its result and transfers (``partial``)."""
        try:
            yield
        except SanError as exc:
            row = done["row"]
            failed = SanError(exc.code, f"the backup {row['label']!r} is on {row['media_id']} "
                                        f"file {row['file']} and in the catalog, but its {what} "
                                        f"failed: {exc.message}")
            failed.partial = {"result": {"row": row, "key": list(done["key"])},
                              "transfers": list(done["transfers"])}
            raise failed from exc

    def _post_quietly(self, host: str, mount_point: str, post) -> None:
        """Post-processing after a failed flow (resume the application); the flow's own
        failure is what gets reported."""
        try:
            self._actions(host, mount_point, post)
        except SanError:
            pass

    def copy_to_tape(self, key: tuple, media: str, pre: list, post: list) -> dict:
        """Fig. 16: the client attaches the disk backup at its restore port, the server writes
        the catalog row then the data onto the tape; a new row for the tape copy."""
        row = self.row(key)
        self._disk_only(row, "copy_to_tape")
        host = row["host"]
        tape_row = {**row, "type": "tape", "device_id": self._library(), "media_id": media}
        try:
            transfers = self._actions(host, row["mount_point"], pre)
            with self._ordering(row) as expect:
                attached = self._client(host, "client_attach", row["device_id"],
                                        int(row["media_id"]), (self.name, self.session_id), expect)
        except BaseException:
            self._post_quietly(host, row["mount_point"], post)
            raise
        transfers += attached["transfers"]
        try:
            written = self._to_tape(tape_row, media, host, attached["port"], attached["lun"])
        except BaseException:
            try:
                self._client(host, "client_detach", attached["port"], attached["lun"])
            except SanError:
                pass   # the failure that brought us here is the one to report
            self._post_quietly(host, row["mount_point"], post)
            raise
        added = self.catalog.add(written["row"], replacing=row_key(written["row"]))   # as above
        done = {"row": added, "key": row_key(added), "transfers": transfers + written["transfers"]}
        with self._made(done, "detach or post-processing"):
            try:
                done["transfers"] += self._client(host, "client_detach", attached["port"],
                                                  attached["lun"])["transfers"]
            except BaseException:
                self._post_quietly(host, row["mount_point"], post)
                raise
            done["transfers"] += self._actions(host, row["mount_point"], post)
        return done

    def migrate(self, key: tuple, media: str, pre: list, post: list) -> dict:
        """Copy to tape, then delete the disk backup, its volume claimed throughout: a mirror
        onto it in between would be deleted in its place."""
        row = self.row(key)
        claim = (self.writing(row["device_id"], row["media_id"], f"the migrate of {row['label']!r}")
                 if row["type"] == "disk" else contextlib.nullcontext())
        with claim:
            copied = self.copy_to_tape(key, media, pre, post)
            with self._made(copied, "delete of the disk backup"):    # the tape copy stands
                deleted = self._delete_backup(key)
        return {**copied, "transfers": copied["transfers"] + deleted["transfers"]}

    def _tape_location(self, row: dict) -> tuple[str, str, int]:
        return row["device_id"], row["media_id"], int(row["file"])

    def restore_volume(self, key: tuple, host: str | None, mount_point: str | None,
                       pre: list, post: list) -> dict:
        """Fig. 12: restore a backup onto its source mount, or onto `host:mount_point`."""
        row = self.row(key)
        if row["type"] == "tape":
            library, media, file = self._tape_location(row)
            answer = self._client(host or row["host"], "client_restore_tape",
                                  mount_point or row["mount_point"], library, media, file,
                                  list(pre), list(post), self.name)
            return {"row": row, "copied": answer["copied"], "transfers": answer["transfers"]}
        with self._ordering(row) as expect:
            answer = self._client(host or row["host"], "client_restore",
                                  mount_point or row["mount_point"], row["device_id"],
                                  int(row["media_id"]), list(pre), list(post), expect)
        return {"row": row, "copied": answer["copied"], "checked": answer["checked"],
                "transfers": answer["transfers"]}

    def restore_files(self, key: tuple, files: list, pre: list, post: list) -> dict:
        """Fig. 13: restore the named files of a disk backup onto its source mount."""
        row = self.row(key)
        if row["type"] == "tape":
            library, media, file = self._tape_location(row)
            answer = self._client(row["host"], "client_restore_files_tape", row["mount_point"],
                                  library, media, file, list(files), list(pre), list(post),
                                  self.name)
            return {"row": row, "files": answer["files"], "bytes": answer["bytes"],
                    "transfers": answer["transfers"]}
        with self._ordering(row) as expect:
            answer = self._client(row["host"], "client_restore_files", row["mount_point"],
                                  row["device_id"], int(row["media_id"]), list(files), list(pre),
                                  list(post), expect)
        return {"row": row, "files": answer["files"], "bytes": answer["bytes"],
                "transfers": answer["transfers"]}

    def delete_backup(self, key: tuple) -> dict:
        """Fig. 14: the array forgets the volume info (a snapshot goes), then the row goes."""
        row = self.row(key)
        if row["type"] == "tape":
            return self._delete_backup(key)
        with self.writing(row["device_id"], row["media_id"], f"the delete_backup of {row['label']!r}"):
            return self._delete_backup(key)

    def _delete_backup(self, key: tuple) -> dict:
        """`delete_backup`, a disk backup's volume claimed by the caller: its row is read
        again here, so what is deleted is the backup there now."""
        row = self.row(key)
        if row["type"] == "tape":   # a tape file stays on its medium; the catalog forgets it
            self.catalog.delete(key)
            return {"row": row, "transfers": []}
        array = self.array_of.get(row["device_id"])
        spec = next((a for a in self.topology.arrays if a.name == array), None)
        try:
            with self._ordering(row) as expect:
                if (spec is not None and row["host"] not in spec.managers
                        and self.name in spec.managers):
                    # a copy on an array its host does not manage (copied to another site):
                    # this server, which does, deletes it itself
                    _, transfers = self._manage(array, "delete_backup", int(row["media_id"]),
                                                expect)
                else:   # Fig. 14: through the backup's host
                    transfers = self._client(row["host"], "client_delete", row["device_id"],
                                             int(row["media_id"]), expect)["transfers"]
        except SanError as exc:
            if exc.code != "NO_SUCH_BACKUP":
                raise
            # the backup was already gone (overwritten): what was asked is done, its row
            # went in `_ordering`, and the other backup there now is left alone
            return {"row": row, "transfers": [], "stale": exc.message}
        self.catalog.delete(key)
        return {"row": row, "transfers": transfers}

    def copy_volume(self, key: tuple, to_array: str, to_volume: int) -> dict:
        """Fig. 19: order the backup's array to copy it, with its volume info, to another
        volume of the same array or of another array (over FC); a new row for the copy."""
        row = self.row(key)
        self._disk_only(row, "copy_volume")
        source = self.array_of.get(row["device_id"])
        if source is None:
            raise SanError("NO_SUCH_VOLUME", f"no array with device ID {row['device_id']} is known")
        mounts = self._mounts_of(to_array, to_volume)
        if mounts:
            raise SanError("NOT_A_COPY_DESTINATION", (
                f"{to_array} volume {to_volume} is {', '.join(mounts)}: a copy_volume makes "
                f"backups, and a host's volume is none (its host's cached filesystem would "
                f"not see the copy, and the volume info would make it a backup its host then "
                f"changes); restore_volume with to: puts a backup onto a host's volume"))
        with self.writing(self.device_of[to_array], to_volume,
                          f"the copy_volume of {row['label']!r}"):
            return self._copy_volume(row, source, to_array, to_volume)

    def _copy_volume(self, row: dict, source: str, to_array: str, to_volume: int) -> dict:
        volume = int(row["media_id"])
        with self._ordering(row) as expect:
            if to_array == source:
                status, transfers = self._manage(source, "copy", volume, to_volume, True, expect)
            else:
                port, lun = self._mapping(to_array, to_volume, source)
                status, transfers = self._manage(source, "copy_remote", volume, to_array,
                                                 to_volume, port, lun, True, expect)
        destination = (self.device_of[to_array], str(to_volume), None)
        self.catalog.delete(destination)   # accepted: whatever backup was there is overwritten
        done, t = self._manage(source, "wait", status["job"])
        copy = {**row, "device_id": self.device_of[to_array], "media_id": str(to_volume), "file": None}
        added = self.catalog.add(copy, replacing=destination)
        return {"row": added, "key": row_key(added), "copied": done["copied"],
                "checked": done.get("checked", 0), "transfers": transfers + t + done["transfers"]}

    def _mounts_of(self, array: str, volume: int) -> list[str]:
        """The host mounts (``HOST:MOUNT``) of `array` volume `volume`, from the topology."""
        spec = next((a for a in self.topology.arrays if a.name == array), None)
        vol = None if spec is None else next((v for v in spec.volumes if v.number == volume), None)
        if vol is None or vol.port is None:
            return []
        ref = f"{array}/{vol.port}"
        return [f"{h.name}:{m.mount_point}" for h in self.topology.hosts for m in h.mounts
                if m.port == ref and m.lun == vol.lun]

    def _mapping(self, array: str, volume: int, initiator: str) -> tuple[str, int]:
        """The port and LUN at which `array` shows `volume` to `initiator` (from the topology)."""
        spec = next(a for a in self.topology.arrays if a.name == array)
        vol = next((v for v in spec.volumes if v.number == volume), None)
        if vol is None or vol.port is None or initiator not in vol.hosts:
            raise SanError("NO_SUCH_PORT", f"{array} volume {volume} is not mapped to {initiator} "
                                           "at any port, so it cannot receive a copy over FC")
        return vol.port, vol.lun

    def _disk_only(self, row: dict, op: str) -> None:
        if row["type"] != "disk":
            raise SanError("INVALID_INPUT", f"{op} of a tape copy is not available in this version "
                                            f"(the backup of {row['host']}:{row['mount_point']} "
                                            f"labelled {row['label']!r} on tape {row['media_id']})")

    # -- the catalog ------------------------------------------------------------------------------
    def lose_catalog(self) -> dict:
        lost = len(self.catalog.rows())
        self.catalog.lose()
        return {"lost": lost, "transfers": []}

    def rebuild_catalog(self, sources: list | None) -> dict:
        """Fig. 15: from each array, its volume list, then each volume's volume info; from a
        tape library, the rows in its labels.  Sources are read in order; the rows found are
        added in one transaction at the end, or when a source fails (the rows of the sources
        before it are kept, as the error is raised).  A source that is down (a DR drill's lost
        site) or a damaged medium does not stop the others: every other source is read, and
        the step then fails ELEMENT_DOWN (or MEDIA_ERROR) saying how many rows it rebuilt.

        Every array is asked at once for its list and all its records in one call
        (``mgmt_read_infos``), so the arrays read in parallel and no call is made per
        volume; the modeled LAN traffic is still Fig. 15's, one request and answer for the
        list, then one per volume (`_rebuild_transfers`)."""
        arrays = sources if sources is not None else [
            a.name for a in self.topology.arrays if self.name in a.managers]
        found, skipped, transfers = [], [], []
        if sources is None and self.spec.tape_library:
            arrays = arrays + [self.spec.tape_library]
        # the rows held before anything is read: a row deleted while the arrays are read
        # (a delete_backup) must not count as held, or its record, read just before the
        # delete, would come back as a row naming nothing (add_many skips rows added since)
        mark = self.claim_mark()
        held = self.catalog.rows()
        have = {row_key(row) for row in held}
        asked = {array: self._ask_infos(array) for array in dict.fromkeys(arrays)
                 if array in self.device_of}
        errors, down, stale = [], [], []
        try:
            for array in arrays:
                try:
                    self._rebuild_from(array, asked, have, held, found, stale, skipped,
                                       transfers, errors)
                except SanError as exc:
                    if exc.code != "ELEMENT_DOWN":
                        raise
                    down.append(exc)
        finally:
            # a stale row goes only if it is still as read (a flow may have replaced it), and
            # only if no flow wrote its volume since the rebuild began: a copy refreshed
            # there (read half done, its record not yet written) adds a row equal to it
            written = self.written_since(mark)
            dropped = [row for row in stale
                       if (row["device_id"], str(row["media_id"])) not in written
                       and self.catalog.delete_row(row)]
            added = self.catalog.add_many(found)
        if errors or down:   # the other media and arrays are rebuilt; the damage is reported
            failed = SanError("ELEMENT_DOWN" if down else "MEDIA_ERROR",
                              f"rebuilt {len(added)} row(s), but "
                              + "; ".join(e.message for e in down + errors))
            failed.partial = {"result": {"added": len(added), "dropped": len(dropped),
                                         "skipped": skipped},
                              "transfers": transfers}
            raise failed
        return {"added": len(added), "rows": added, "dropped": len(dropped), "skipped": skipped,
                "transfers": transfers}

    def _rebuild_from(self, array: str, asked: dict, have: set, held: list, found: list,
                      stale: list, skipped: list, transfers: list, errors: list) -> None:
        """`rebuild_catalog`'s reading of one source: what it finds and skips, the rows of
        `held` an array no longer backs (`stale_rows`: they go, and what the volume holds now
        is found in their place), its transfers, a tape library's damaged media, each added
        to the lists given."""
        if array not in self.device_of:   # a tape library: the rows are in its labels
            scanned = self.peers.element(array).call("scan")
            for row in scanned["rows"]:
                if row_key(row) not in have:
                    found.append(row)
                    have.add(row_key(row))
            errors += scanned["errors"]
            return
        answer = asked[array]()
        transfers += _rebuild_transfers(self.name, array, answer)
        records = dict(zip(answer["volumes"], answer["records"]))
        gone = stale_rows(answer["device_id"], records, held)
        stale += gone
        have.difference_update(row_key(row) for row in gone)
        rows = self.rows_from_array(answer["device_id"], records, have)
        found += rows["added"]
        skipped += rows["skipped"]

    def _ask_infos(self, array: str):
        """Start asking `array` for its volume list and records; returns what waits for the
        answer (and raises, when called, whatever asking or answering failed with)."""
        try:
            future = self.peers.element(array).start("mgmt_read_infos", self.name)
        except SanError as exc:
            error = exc

            def failed():
                raise error
            return failed
        return future.result

    def schedule_of(self, name: str):
        return self.definition(name).schedule

    def session(self) -> str:
        """This server's generation (a restart makes a new one): what a host asks to know
        whether the flow that had it attach a volume can still detach it."""
        return self.session_id

    def catalog_rows(self) -> list[dict]:
        return self.rows()


def _rebuild_transfers(server: str, array: str, answer: dict) -> list[Transfer]:
    """The LAN messages of a rebuild's reads of one array, as Fig. 15 makes them: the volume
    list (a request, an answer with the device ID and the numbers), then per volume a request
    naming it and an answer with its record (or none).  Equal messages are one object, which
    the answer carries (and pickles) once."""
    listing = {"device_id": answer["device_id"], "volumes": answer["volumes"]}
    out = [lan_transfer(server, array, payload_size(())),
           lan_transfer(array, server, payload_size(listing))]
    ask = lan_transfer(server, array, payload_size((0,)))
    answers: dict[int, Transfer] = {}
    for record in answer["records"]:
        size = 8 if record is None else payload_size(record)
        reply = answers.get(size)
        if reply is None:
            reply = answers[size] = lan_transfer(array, server, size)
        out += (ask, reply)
    return out


__all__ = ["Server"]
