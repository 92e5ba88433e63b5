"""The backup client program of a client host (the patent's Fig. 2a; docs/method.md), in plain Python.

The backup server orders it over the LAN; it learns which array and volume hold a mount
(INQUIRY over FC, Fig. 8), runs the mount's pre- and post-processing, orders the array over
the LAN (mirror, snapshot, restore, attach, delete: Figs. 9-14, 16-18) and reads or writes
files through FC where a flow needs the host (file restores, restores from tape).  Every
method returns the transfers it caused, for modeled time.  A failure after the
pre-processing still runs the post-processing (a quiesced application resumes) and reports
the first failure.

For a tape backup or a copy to tape (Figs. 1, 16) the host opens the volume for the library
(`client_image_open`: one path grant, READ CAPACITY, GET LBA STATUS and the read checks,
once) and the library's data mover reads it through that path, in the host's name, as a
SCSI third-party copy (EXTENDED COPY) lets a copy manager do: the chunks go from the array's
object store to the library's without passing through this host's process, which is told how
far the stream got (`client_image_progress`, what progress bars count) and which closes it.
In modeled time the bytes still cross this host's HBA and NIC and the LAN: the backup
server charges that whole path.

`BackupClient` is a mixin of `san.flows.client_host.Host`: it uses the host's paths, mounts,
filesystems and actions.
"""
from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager

from ..elements.client_host import chunks, transfers_of
from ..errors import SanError
from ..fat import BlockDevice, FatVolume, normalize
from ..timemodel import Transfer
from ..units import BLOCK
from ..volume_info import VolumeInfo
from .peers import flow_alive



class BackupClient:
    """The ``client_*`` flows of a host; mixed into `Host`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._images: dict[str, int] = {}          # open image streams: id -> bytes read
        self._images_lock = threading.Lock()
        self._image_ids = itertools.count(1)

    # -- volume images read by a tape library (Figs. 1, 16) ------------------------------------
    def client_image_open(self, port_ref: str, lun: int) -> dict:
        """Open the volume at port/LUN for a library to read: {"stream", "size", "extents"
        (its written byte ranges, GET LBA STATUS), "chunk" (bytes per READ) and "window"
        (READs in flight) as this host's own I/O, and the path the reads take: "array",
        "initiator", "port", "lun"}."""
        path = self._target(port_ref, lun)
        route, array, port, _ = path
        size = self._capacity(path)
        extents = array.call("lba_status", route.initiator, port, lun)
        array.call("prepare", route.initiator, port, lun, 0, size // BLOCK, False)
        with self._images_lock:
            stream = f"{self.name}.image{next(self._image_ids)}"
            self._images[stream] = [0, path]
        return {"stream": stream, "size": size, "extents": [tuple(e) for e in extents],
                "chunk": self.chunk_size, "window": self.window, "array": array.name,
                "initiator": route.initiator, "resources": route.resources(False),
                "port": port, "lun": lun}

    def client_image_progress(self, stream: str, nbytes: int, more: bool = True) -> dict:
        """The library read `nbytes` more of an open stream (progress counts them; a `when:`
        fault strikes here); returns {"total": the stream's bytes so far, and the path the
        next READs take: "initiator", "resources" (toward the host)}.  If the fabric changed
        since the stream's path was granted and the library has `more` to read, the path is
        taken again first, as this host's own transfers do before their next chunk
        (LINK_DOWN when none is left).
        INVALID_INPUT if the stream is not open here (closed, or this host restarted)."""
        with self._images_lock:
            entry = self._images.get(stream)
            if entry is None:
                raise SanError("INVALID_INPUT", f"{self.name} has no open image stream "
                                                f"{stream!r} (closed, or the host restarted)")
            entry[0] += nbytes
            total, moved, path = entry[0], self._moved(nbytes), entry[1]
        self.trip.passed(moved)         # outside the lock: the library may stop here a while
        if more and path.epoch != self.fabric_epoch:
            self._reroute(path)
        return {"total": total, "initiator": path.route.initiator,
                "resources": path.route.resources(False)}

    def client_image_close(self, stream: str) -> None:
        with self._images_lock:
            self._images.pop(stream, None)

    def _restore_port(self, device_id: str):
        """(array, port, the restore port's spec) of this host's restore port on the array
        with `device_id`, or NO_SUCH_PORT."""
        array = self.arrays_by_device.get(device_id)
        restore = next((r for r in self.spec.restore_ports if r.port.split("/")[0] == array), None)
        if restore is None:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no restore port on {array} "
                                           f"(device {device_id})")
        return array, restore.port.split("/")[1], restore

    def client_attach(self, device_id: str, volume: int, owner: tuple | None = None,
                      expect: bytes | None = None) -> dict:
        """Attach a backup volume at this host's restore port of its array (Figs. 13, 16), for
        `owner`: the (server, session) whose flow will detach it.  `expect`: the volume info
        the volume must hold (the array checks it: `DiskArray.check_holds`), as in every
        order below that names a backup volume."""
        array, port, restore = self._restore_port(device_id)
        key = (array, port, restore.lun)
        # under way until this flow holds it: asked meanwhile about an earlier attach there
        # (another flow's, its answer on its way), the host said no, and the array gave the
        # LUN to this backup, which the other flow then read as its own
        with self.attaching.holding(key):
            _, transfers = self.manage(array, "attach", volume, port, restore.lun, self.name,
                                       expect)
            self.attached[key] = tuple(owner) if owner else None
        return {"port": restore.port, "lun": restore.lun, "transfers": transfers}

    def client_detach(self, port_ref: str, lun: int) -> dict:
        array, port = port_ref.split("/")
        _, transfers = self.manage(array, "detach", port, lun)
        self.attached.pop((array, port, lun), None)
        return {"transfers": transfers}

    def holds_attachment(self, array: str, port: str, lun: int) -> bool:
        """Does a flow still hold the volume attached at array/port/LUN for this host?  Asked
        by the array before it refuses another attach there as BUSY: an attachment whose flow
        died (this host restarted since, or the server that ordered it is down or restarted)
        is left behind, and the array drops it."""
        key = (array, port, lun)
        if self.attaching.others(key):  # the other attach under way: its answer is on its way
            return True
        if key not in self.attached:
            return False
        alive = self._flow_alive(self.attached[key])
        if not alive:
            self.attached.pop(key, None)
        return alive

    def _flow_alive(self, owner) -> bool:
        """Is the flow `owner` (``(server, session)``; None: this host's own) still running?
        (`san.flows.peers.flow_alive`.)"""
        return flow_alive(self.peers, owner)

    def client_restore_tape(self, mount_point: str, library: str, media: str, file: int,
                            pre: list, post: list, via: str) -> dict:
        """Fig. 12 from tape: the image comes from the library (through the backup server in
        modeled time) and is written onto the mount's volume; holes are unmapped first."""
        lib = self.peers.element(library)
        size, extents = [f.result() for f in (lib.start("image_size", media, file),
                                              lib.start("image_extents", media, file))]
        path = self._path(mount_point)
        route, array, port, lun = path
        capacity = self._capacity(path)
        if capacity != size:
            raise SanError("CAPACITY_MISMATCH", f"the image on {media} file {file} is {size} bytes "
                                                f"but {self.name}:{mount_point} is {capacity}")
        with self._post_on_failure(mount_point, post):      # pre-processing that fails too
            transfers = self.actions(mount_point, pre)
            route, array, port, lun = self._fresh(path)   # the pre-processing took a while
            array.call("prepare", route.initiator, port, lun, 0, size // BLOCK, True)
            try:
                carried = self._restore_stream(path, route, array, port, lun, size, extents,
                                               lib, media, file, library, via)
            finally:    # the volume changed under the mount, even if the restore was cut short
                self._drop_fs(mount_point)
        moved = sum(length for _, length in extents)
        lan = (f"{library}/drive0", f"{via}/lan:tx", f"{self.name}/lan:rx")
        transfers += [Transfer(lan + t.resources, t.nbytes)
                      for t in self._transfers(carried, path, moved, True)]
        transfers += self.actions(mount_point, post)
        return {"copied": moved, "transfers": transfers}

    def _restore_stream(self, path, route, array, port, lun, size: int, extents, lib, media,
                        file: int, library: str, via: str) -> dict:
        """A tape image's extents written onto the volume at `path`, emptied first: the bytes
        each route carried (`_stream`).  Cut short, its `SanError.partial` is what came off
        the tape, over the LAN as well as the fabric."""
        array.call("unmap", route.initiator, port, lun, 0, size // BLOCK)
        pieces = [p for off, length in extents for p in chunks(off, length, self.chunk_size)]

        def send(piece, seq):
            off, length = piece
            data = lib.start("read_image", media, file, off, length)   # library -> array
            return path.array.start("write", path.route.initiator, port, lun, off // BLOCK,
                                    data, seq)

        try:
            return self._stream(path, pieces, send, self._count, True, True)
        except SanError as exc:
            if exc.partial:
                lan = (f"{library}/drive0", f"{via}/lan:tx", f"{self.name}/lan:rx")
                exc.partial = {"transfers": [Transfer(lan + t.resources, t.nbytes)
                                             for t in exc.partial["transfers"]]}
            raise

    def client_restore_files_tape(self, mount_point: str, library: str, media: str, file: int,
                                  files: list, pre: list, post: list, via: str) -> dict:
        """Fig. 13 from a tape copy: the files are read out of its volume image."""
        self._fat(mount_point)
        paths = [normalize(p) for p in files]
        lib = self.peers.element(library)
        size = lib.call("image_size", media, file)
        counter = [0]

        def read_fn(offset, length):
            counter[0] += length
            return lib.call("read_image", media, file, offset, length)

        with self._post_on_failure(mount_point, post):      # pre-processing that fails too
            transfers = self.actions(mount_point, pre)
            image = FatVolume(BlockDevice(size, read_fn, readonly=True,
                                          name=f"the backup on tape {media} (file {file}) of {library}"),
                              readonly=True)
            try:
                put, nbytes = self._put_files(mount_point, image, paths)
            finally:
                image.close()
            transfers += put
        transfers.append(Transfer((f"{library}/drive0", f"{via}/lan:tx", f"{self.name}/lan:rx"),
                                  counter[0]))
        transfers += self.actions(mount_point, post)
        return {"files": paths, "bytes": nbytes, "transfers": transfers}

    def _put_files(self, mount_point: str, backup: FatVolume, paths: list) -> tuple[list, int]:
        """Copy files `paths` from a backup's filesystem onto a live fat mount, each streamed
        piece by piece (memory stays bounded whatever their size), flushed: (the transfers of
        the writes, the bytes restored).  Every path is looked up first, so a file the backup
        lacks is NO_SUCH_FILE before anything is written.  A file the live filesystem lacks
        is created under the name the backup stores (its case); one it has keeps its own."""
        found = [backup.stat(p) for p in paths]
        with self.fs_locks[mount_point]:
            before = self._fs_mark(mount_point)
            fs = self.filesystem(mount_point)
            for stored, size in found:
                fs.write_pieces(stored, size, backup.iter_file(stored))
            fs.device.flush()
            return self._fs_transfers(mount_point, before), sum(size for _, size in found)

    # -- the backup client program (Fig. 2a) ----------------------------------------------------
    def _array_of(self, mount_point: str):
        """(array name, port, LUN, device ID) of a mount, learnt by INQUIRY as Fig. 8 says."""
        mount = self.mount(mount_point)
        device_id = self.scsi_identify(mount_point)["device_id"]
        array = self.arrays_by_device.get(device_id)
        if array is None:
            raise SanError("NO_SUCH_VOLUME", f"no array with device ID {device_id} is on the LAN")
        _, port = mount.port.split("/")
        return array, port, mount.lun, device_id

    def client_list_destinations(self, mount_point: str) -> dict:
        """Fig. 8: the copy-destination list of a mount's volume, from its array."""
        array, port, lun, device_id = self._array_of(mount_point)
        answer, transfers = self.manage(array, "copy_destinations", port, lun)
        return {"host": self.name, "mount_point": mount_point, "device_id": answer["device_id"],
                "destinations": answer["destinations"], "transfers": transfers}

    def client_backup_start(self, mount_point: str, method: str, array_name: str,
                            volume: int | None, pre: list, post: list, label: str,
                            timestamp: int) -> dict:
        """Figs. 9-10 (mirror) and 17-18 (snapshot), first half: pre-processing, the order to
        the array, and post-processing once the array has accepted it (the point in time is
        fixed then, so the application need not wait for the copy).  A refusal runs the
        post-processing too (the application resumes) and raises the array's error."""
        info = VolumeInfo(label, self.name, mount_point, timestamp)   # checked before anything runs
        transfers = []
        try:
            transfers += self.actions(mount_point, pre)
            array, port, lun, device_id = self._array_of(mount_point)
            if array != array_name:
                raise SanError("INVALID_INPUT", f"{self.name}:{mount_point} is on {array}, not on "
                                                f"{array_name}: a disk backup stays in its array")
            if method == "mirror":
                status, t = self.manage(array, "mirror", port, lun, volume)
            else:
                # the record goes with the order: the array keeps it from the snapshot's
                # first moment, so a snapshot whose host dies before answering is still
                # labelled (a rebuild finds it) instead of holding pool space unnamed
                status, t = self.manage(array, "snapshot", port, lun, info.encode())
                volume = status["volume"]
            transfers += t
        except BaseException:
            self._post_after_failure(mount_point, post)
            raise
        try:
            transfers += self.actions(mount_point, post)
        except BaseException:
            # the backup fails, so nothing will record it: a snapshot taken for it goes (it
            # would hold space, with no volume info nor catalog row to find it by); a mirror's
            # copy runs on, its old volume info already gone (the server drops its row)
            if method != "mirror":
                self._delete_snapshot_quietly(array, volume)
            raise
        return {"array": array, "device_id": device_id, "volume": volume,
                "job": status.get("job"), "info": info.encode(), "transfers": transfers}

    def client_backup_finish(self, started: dict) -> dict:
        """Second half, of a mirror: wait until the data is complete, then record the volume
        info (a snapshot's was recorded with it, and it has no second half)."""
        array, transfers = started["array"], []
        if started["job"] is not None:
            done, t = self.manage(array, "wait", started["job"])
            transfers += t + done["transfers"]
        _, t = self.manage(array, "record_info", started["volume"], started["info"])
        return {"transfers": transfers + t}

    @contextmanager
    def _post_on_failure(self, mount_point: str, post: list):
        """If the pre-processing or what follows it fails, the post-processing still runs (so
        a quiesced application is resumed: a pre-processing that failed after its `quiesce`
        left the mount quiesced, and every later application write waited, then failed
        BUSY) and the original failure is raised."""
        try:
            yield
        except BaseException:
            self._post_after_failure(mount_point, post)
            raise

    def _delete_snapshot_quietly(self, array: str, volume: int) -> None:
        """Delete a snapshot after a failure; the failure that led here is the one reported."""
        try:
            self.manage(array, "delete_snapshot", volume)
        except SanError:
            pass

    def _detach_quietly(self, array: str, port: str, lun: int) -> None:
        """Detach after a failure; the failure that led here is the one reported."""
        try:
            self.manage(array, "detach", port, lun)
        except SanError:
            pass

    def _post_after_failure(self, mount_point: str, post: list) -> None:
        """A failed backup still resumes the application; the first failure is what counts."""
        for name in post:
            try:
                self.action(mount_point, name)
            except SanError:
                pass  # the original failure is re-raised by the caller

    def client_restore(self, mount_point: str, device_id: str, volume: int, pre: list,
                       post: list, expect: bytes | None = None) -> dict:
        """Fig. 12: restore a backup volume onto the volume behind a mount (same array)."""
        with self._post_on_failure(mount_point, post):      # pre-processing that fails too
            transfers = self.actions(mount_point, pre)
            array, port, lun, mount_device = self._array_of(mount_point)
            if mount_device != device_id:
                raise SanError("INVALID_INPUT", f"the backup is on {device_id} but {self.name}:"
                                                f"{mount_point} is on {mount_device}; copy_volume "
                                                "it there first")
            try:
                status, t = self.manage(array, "restore", volume, port, lun, expect)
            except SanError as exc:     # refused, nothing moved: the view stands; but an
                if exc.code == "ELEMENT_DOWN":      # array gone down may have started it
                    self._drop_fs(mount_point)
                raise
            try:
                done, t2 = self.manage(array, "wait", status["job"])
            finally:    # the volume changed under this host's view, even if cut short
                self._drop_fs(mount_point)
        transfers += t + t2 + done["transfers"]
        transfers += self.actions(mount_point, post)
        return {"copied": done["copied"], "checked": done.get("checked", 0), "transfers": transfers}

    def client_restore_files(self, mount_point: str, device_id: str, volume: int, files: list,
                             pre: list, post: list, expect: bytes | None = None) -> dict:
        """Fig. 13: attach the backup volume at this host's restore port of its array, copy
        the named files from it onto the mount, detach."""
        self._fat(mount_point)
        paths = [normalize(p) for p in files]
        array, rport, restore = self._restore_port(device_id)
        with self._post_on_failure(mount_point, post):      # pre-processing that fails too
            transfers = self.actions(mount_point, pre)
            with self.attaching.holding((array, rport, restore.lun)):
                _, t = self.manage(array, "attach", volume, rport, restore.lun, self.name, expect)
                self.attached[(array, rport, restore.lun)] = None     # this flow holds it
        transfers += t
        try:
            path = self._target(restore.port, restore.lun)
            carried: dict = {}
            name = f"the backup on {array} volume {volume}"
            backup_fs = FatVolume(self._device(path, self._capacity(path), carried, name,
                                               readonly=True), readonly=True)
            try:
                put, nbytes = self._put_files(mount_point, backup_fs, paths)
            finally:
                backup_fs.close()
            transfers += transfers_of(carried) or [Transfer(path[0].resources(False), 0)]
            transfers += put
        except BaseException:
            self._post_after_failure(mount_point, post)
            self._detach_quietly(array, rport, restore.lun)
            raise
        _, t = self.manage(array, "detach", rport, restore.lun)
        self.attached.pop((array, rport, restore.lun), None)
        transfers += t
        transfers += self.actions(mount_point, post)
        return {"files": paths, "bytes": nbytes, "transfers": transfers}

    def client_delete(self, device_id: str, volume: int, expect: bytes | None = None) -> dict:
        """Fig. 14: the array deletes the backup's volume info (and a snapshot itself)."""
        array = self.arrays_by_device.get(device_id)
        if array is None:
            raise SanError("NO_SUCH_VOLUME", f"no array with device ID {device_id} is on the LAN")
        _, transfers = self.manage(array, "delete_backup", volume, expect)
        return {"transfers": transfers}

