"""The client host as an actor: the initiator's I/O loop, filesystems and the backup client.

Part of the Ray layer.  A host streams a transfer as commands of at most one chunk each,
`window` in flight, each chunk `ray.put` by the host and passed to the array by reference,
so the payload goes from the host's object store straight to the array; the switch only
grants the path.  Hosts are threaded actors, so two steps of a `concurrent` can use one host.

On a `fat` mount the host keeps a FAT filesystem (`san.filesystem`) over a block device
whose reads and writes are SAN I/O, behind a write-back cache: `write_files` puts file data
on the array but leaves the filesystem marked in use until a `flush` (or `unmount`) writes
it back clean.  Application writes (`write`, `write_files`, `remove_files`) pass through the
mount's `Gate`, which `quiesce` closes and `resume` opens.

The backup client program (SPEC.md Fig. 2a) is the ``client_*`` methods: the backup server
orders them over the LAN, and they order the arrays over the LAN in turn.  Each returns the
transfers it caused, for modeled time.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from contextlib import contextmanager

import numpy as np
import ray

from .elements.client_host import (ClientHost, Gate, blocks_of, chunks,
                                   parse_device_identification, parse_standard_inquiry)
from .errors import SanError
from .filesystem import FAT_EPOCH
from .pattern import first_mismatch, pattern
from .remote import get, lookup, manage
from .timemodel import Transfer


class HostNode(ClientHost):
    """A client host: initiator, filesystems, backup client (the actor class)."""

    def __init__(self, spec, namespace: str, chunk_size: int, window: int = 8,
                 arrays_by_device: dict | None = None, now=None):
        super().__init__(spec)
        self.now = now or FAT_EPOCH      # the simulated clock, as the runner last told it
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.window = window
        self.arrays_by_device = dict(arrays_by_device or {})   # the LAN directory
        self.gates = {m: Gate(f"{self.name}:{m}") for m in self.mounts}
        self.fs: dict[str, object] = {}
        self.fs_locks = {m: threading.RLock() for m in self.mounts}
        self.fs_paths: dict[str, tuple] = {}    # the path of the host call running on a fat mount
        self.moved = {m: [0, 0] for m in self.mounts}           # filesystem bytes read, written

    def ping(self) -> str:
        return self.name

    def set_time(self, now) -> None:
        """The simulated time (a datetime): what this host stamps on the files it writes."""
        self.now = now

    # -- paths --------------------------------------------------------------------------------
    def _grant(self, port_ref: str):
        """The route of the first HBA the fabric grants a path to `port_ref` from."""
        def grant(hba):
            switch = self.hba_switch[hba]
            return get(lookup(switch, self.namespace).grant.remote(hba, port_ref), switch)
        return self.first_granted(grant)

    def _target(self, port_ref: str, lun: int):
        """(route, array actor, port, LUN) to any array port and LUN."""
        route = self._grant(port_ref)
        array, port = port_ref.split("/")
        return route, lookup(array, self.namespace), port, lun

    def _path(self, mount_point: str):
        mount = self.mount(mount_point)
        return self._target(mount.port, mount.lun)

    def _stream(self, submit, pieces, element: str, consume=None) -> None:
        """Submit one command per piece, at most `window` in flight, oldest answered first."""
        inflight: deque = deque()
        for piece in pieces:
            if len(inflight) >= self.window:
                done_piece, ref = inflight.popleft()
                result = get(ref, element)
                if consume:
                    consume(done_piece, result)
            inflight.append((piece, submit(piece)))
        while inflight:
            done_piece, ref = inflight.popleft()
            result = get(ref, element)
            if consume:
                consume(done_piece, result)

    # -- block I/O ----------------------------------------------------------------------------
    def _write_to(self, path, offset: int, size: int, piece_of) -> list[Transfer]:
        route, array, port, lun = path
        lba, blocks = blocks_of(offset, size)
        get(array.prepare.remote(route.initiator, port, lun, lba, blocks, True), route.target)

        def submit(piece):
            off, length = piece
            return array.write.remote(route.initiator, port, lun, off // 512, ray.put(piece_of(off, length)))

        self._stream(submit, chunks(offset, size, self.chunk_size), route.target)
        return [Transfer(route.resources(True), size)]

    def _read_from(self, path, offset: int, size: int, consume) -> list[Transfer]:
        route, array, port, lun = path
        lba, blocks = blocks_of(offset, size)
        get(array.prepare.remote(route.initiator, port, lun, lba, blocks, False), route.target)

        def submit(piece):
            off, length = piece
            return array.read.remote(route.initiator, port, lun, off // 512, length // 512)

        self._stream(submit, chunks(offset, size, self.chunk_size), route.target, consume)
        return [Transfer(route.resources(False), size)]

    def write(self, mount_point: str, offset: int, size: int, seed: int) -> list[Transfer]:
        """WRITE the pattern of (seed, offset) over [offset, offset + size) of a mount (the
        `write` op: an application write, so it waits while the mount is quiesced)."""
        with self.gate(mount_point).write():
            transfers = self._write_to(self._path(mount_point), offset, size,
                                       lambda off, length: pattern(seed, off, length))
            self._drop_fs(mount_point)   # raw writes under a filesystem: its cached view is stale
            return transfers

    def write_data(self, mount_point: str, offset: int, data) -> list[Transfer]:
        """WRITE the given bytes (the filesystem's device and tests use it)."""
        data = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        return self._write_to(self._path(mount_point), offset, len(data),
                              lambda off, length: data[off - offset:off - offset + length])

    def read(self, mount_point: str, offset: int, size: int) -> tuple[np.ndarray, list[Transfer]]:
        """READ [offset, offset + size) of a mount; returns the bytes and the transfers."""
        return self._read_into(self._path(mount_point), offset, size)

    def _read_into(self, path, offset: int, size: int):
        out = np.empty(size, dtype=np.uint8)

        def consume(piece, data):
            off, length = piece
            out[off - offset:off - offset + length] = data

        return out, self._read_from(path, offset, size, consume)

    def read_discard(self, mount_point: str, offset: int, size: int) -> list[Transfer]:
        """READ a range and drop the data (what a benchmark of the read path needs)."""
        return self._read_from(self._path(mount_point), offset, size, None)

    def read_compare(self, mount_point: str, offset: int, size: int, seed: int) -> dict:
        """READ a range and compare every byte with the `write` pattern of `seed`."""
        bad: list[int] = []

        def consume(piece, data):
            where = first_mismatch(data, seed, piece[0])
            if where is not None:
                bad.append(where)

        transfers = self._read_from(self._path(mount_point), offset, size, consume)
        return {"bytes": size, "first_mismatch": min(bad) if bad else None,
                "transfers": transfers}

    # -- SCSI control commands ----------------------------------------------------------------
    def scsi_identify(self, mount_point: str) -> dict:
        """INQUIRY (standard and VPD 0x83), READ CAPACITY and REPORT LUNS for a mount."""
        route, array, port, lun = self._path(mount_point)
        std, vpd, (last_lba, block), luns = get([
            array.inquiry.remote(route.initiator, port, lun),
            array.inquiry.remote(route.initiator, port, lun, 0x83),
            array.read_capacity.remote(route.initiator, port, lun),
            array.report_luns.remote(route.initiator, port)], route.target)
        ident = parse_device_identification(vpd)
        info = parse_standard_inquiry(std)
        return {**info, "device_id": ident["target"], "lu_id": ident["lu"],
                "capacity": (last_lba + 1) * block, "block_size": block, "luns": luns,
                "hba": route.initiator, "transfers": [
                    Transfer(route.resources(False), len(std) + len(vpd) + 32 + 8 * len(luns))]}

    def digest(self, mount_point: str) -> str:
        """The volume digest of a mount, computed by the array behind the granted path."""
        route, array, port, lun = self._path(mount_point)
        return get(array.digest_lun.remote(route.initiator, port, lun), route.target)

    def manage(self, array: str, method: str, *args):
        """A management (LAN) call from this host to an array: (answer, transfers)."""
        return manage(self.name, self.namespace, array, method, *args)

    # -- filesystems --------------------------------------------------------------------------
    def gate(self, mount_point: str) -> Gate:
        self.mount(mount_point)
        return self.gates[mount_point]

    def _fat(self, mount_point: str):
        mount = self.mount(mount_point)
        if mount.filesystem != "fat":
            raise SanError("INVALID_INPUT", f"{self.name}:{mount_point} is a raw mount "
                                            "(filesystem: none); file operations need a fat mount")
        return mount

    def _device(self, path, size: int, counter: list | None, readonly: bool = False):
        from .filesystem import BlockDevice

        def read_fn(offset, length):
            data, _ = self._read_into(path, offset, length)
            if counter is not None:
                counter[0] += length
            return data

        def write_fn(offset, data):
            self._write_to(path, offset, len(data), lambda off, n: data[off - offset:off - offset + n])
            if counter is not None:
                counter[1] += len(data)

        return BlockDevice(size, read_fn, None if readonly else write_fn, readonly=readonly)

    def _capacity(self, path) -> int:
        route, array, port, lun = path
        last, block = get(array.read_capacity.remote(route.initiator, port, lun), route.target)
        return (last + 1) * block

    def _mount_device(self, mount_point: str, size: int):
        """The block device under a fat mount: its I/O takes the path of the host call in
        progress (`fs_paths`), never the one the mount was made with, so a link that went down
        and up, or an array restarted, is seen by the next call."""
        from .filesystem import BlockDevice
        counter = self.moved[mount_point]

        def read_fn(offset, length):
            data, _ = self._read_into(self.fs_paths[mount_point], offset, length)
            counter[0] += length
            return data

        def write_fn(offset, data):
            self._write_to(self.fs_paths[mount_point], offset, len(data),
                           lambda off, n: data[off - offset:off - offset + n])
            counter[1] += len(data)

        return BlockDevice(size, read_fn, write_fn)

    def filesystem(self, mount_point: str):
        """The mounted FAT filesystem of a fat mount (mounting it on first use).

        Each host call on a fat mount starts here (under the mount's lock): one path grant and
        one actor lookup for the whole call, before any byte moves, so a call refused with
        LINK_DOWN or ELEMENT_DOWN changes nothing on the array.  A call that fails midway
        keeps the mount's cache (files already acknowledged stay); the next call takes a fresh
        path and writes back what is still dirty."""
        from .filesystem import FatVolume
        self._fat(mount_point)
        with self.fs_locks[mount_point]:
            path = self.fs_paths[mount_point] = self._path(mount_point)
            if mount_point not in self.fs:
                device = self._mount_device(mount_point, self._capacity(path))
                try:
                    self.fs[mount_point] = FatVolume(device, now=lambda: self.now)
                except SanError:
                    raise
                except Exception as exc:
                    raise SanError("FSCK_FAILED", f"{self.name}:{mount_point} holds no readable "
                                                  f"FAT filesystem ({exc})") from None
            return self.fs[mount_point]

    def format_blank(self) -> list[str]:
        """Format every blank fat mount (done once, when the SAN is first built)."""
        from .filesystem import format_volume
        done = []
        for mount_point, mount in self.mounts.items():
            if mount.filesystem != "fat":
                continue
            try:
                path = self._path(mount_point)
                first, _ = self._read_into(path, 0, 4096)
            except SanError:
                continue   # a path the SAN denies: its I/O fails later, with its code
            if first.any():
                continue
            label = (mount_point.strip("/").replace("/", "_") or "ROOT")[:11].upper()
            format_volume(self._device(path, self._capacity(path), None), label, now=self.now)
            done.append(mount_point)
        return done

    def _drop_fs(self, mount_point: str) -> None:
        """Forget the cached view of a filesystem (its volume changed behind its back)."""
        with self.fs_locks[mount_point]:
            self.fs.pop(mount_point, None)

    def _fs_transfers(self, mount_point: str, before: tuple[int, int]) -> list[Transfer]:
        read, written = (self.moved[mount_point][0] - before[0], self.moved[mount_point][1] - before[1])
        if not (read or written):
            return []
        route = self.fs_paths[mount_point][0]   # the path the call's bytes took
        out = []
        if written:
            out.append(Transfer(route.resources(True), written))
        if read:
            out.append(Transfer(route.resources(False), read))
        return out

    def write_files(self, mount_point: str, files: dict) -> dict:
        """Write files {path: (size, seed)} into a fat mount; data reaches the array now, the
        filesystem stays marked in use until a flush (an application write: gated)."""
        from .filesystem import normalize
        self._fat(mount_point)
        paths = {normalize(p): spec for p, spec in files.items()}
        with self.gate(mount_point).write(), self.fs_locks[mount_point]:
            before = tuple(self.moved[mount_point])
            fs = self.filesystem(mount_point)
            written = sum(fs.write_file(p, size, seed) for p, (size, seed) in paths.items())
            fs.device.flush()
            return {"files": sorted(paths), "bytes": written,
                    "transfers": self._fs_transfers(mount_point, before)}

    def remove_files(self, mount_point: str, files: list) -> dict:
        from .filesystem import normalize
        self._fat(mount_point)
        paths = [normalize(p) for p in files]
        with self.gate(mount_point).write(), self.fs_locks[mount_point]:
            before = tuple(self.moved[mount_point])
            fs = self.filesystem(mount_point)
            for p in paths:
                fs.remove_file(p)
            fs.device.flush()
            return {"files": paths, "transfers": self._fs_transfers(mount_point, before)}

    def files(self, mount_point: str) -> dict:
        """{path: [size, sha256]} of a fat mount, as this host sees it (its cache included)."""
        with self.fs_locks[mount_point]:
            return {p: list(v) for p, v in self.filesystem(mount_point).files().items()}

    # -- pre / post processing ----------------------------------------------------------------
    def actions(self, mount_point: str, names: list) -> list[Transfer]:
        """Run pre- or post-processing actions on a mount, in order."""
        transfers: list[Transfer] = []
        for name in names:
            transfers += self.action(mount_point, name)
        return transfers

    def action(self, mount_point: str, name: str) -> list[Transfer]:
        mount = self.mount(mount_point)
        if name == "quiesce":
            self.gates[mount_point].quiesce()
            return []
        if name == "resume":
            self.gates[mount_point].resume()
            return []
        if mount.filesystem != "fat":
            return []          # flush, mount, unmount and fsck do nothing on a raw mount
        with self.fs_locks[mount_point]:
            before = tuple(self.moved[mount_point])
            if name in ("flush", "unmount"):
                if mount_point in self.fs:
                    self.filesystem(mount_point).flush()
                    if name == "unmount":
                        self.fs.pop(mount_point).close()
            elif name == "mount":
                self.filesystem(mount_point)
            elif name == "fsck":
                report = self.fsck(mount_point)
                if not report["clean"]:
                    raise SanError("FSCK_FAILED", f"fsck.fat found problems on {self.name}:"
                                                  f"{mount_point}: {report['summary']}")
            else:
                raise SanError("INVALID_INPUT", f"unknown action {name!r}")
            return self._fs_transfers(mount_point, before)

    def fsck(self, mount_point: str, port_ref: str | None = None, lun: int | None = None) -> dict:
        """`fsck.fat -n` on the volume's image as the array holds it (what is on the SAN,
        not this host's cache): its written extents are read into a sparse image file."""
        from .filesystem import fsck
        if port_ref is None:
            mount = self.mount(mount_point)
            port_ref, lun = mount.port, mount.lun
        path = self._target(port_ref, lun)
        route, array, port, _ = path
        size = self._capacity(path)
        extents = get(array.lba_status.remote(route.initiator, port, lun), route.target)
        with tempfile.TemporaryDirectory(prefix="san-fsck-") as tmp:
            image = os.path.join(tmp, "volume.img")
            with open(image, "wb") as out:
                out.truncate(size)
                for offset, length in extents:
                    data, _ = self._read_into(path, offset, length)
                    out.seek(offset)
                    out.write(data.tobytes())
            clean, output = fsck(image)
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        return {"clean": clean, "output": output,
                "summary": "; ".join(lines[-3:]) if lines else "no output"}

    # -- volume images (tape) ---------------------------------------------------------------------
    def capacity_at(self, port_ref: str, lun: int) -> int:
        return self._capacity(self._target(port_ref, lun))

    def extents_at(self, port_ref: str, lun: int) -> list:
        """GET LBA STATUS of a volume: the byte ranges that hold data."""
        route, array, port, _ = self._target(port_ref, lun)
        return get(array.lba_status.remote(route.initiator, port, lun), route.target)

    def read_at(self, port_ref: str, lun: int, offset: int, length: int) -> np.ndarray:
        return self._read_into(self._target(port_ref, lun), offset, length)[0]

    def stream_extents(self, port_ref: str, lun: int, extents: list):
        """Read the given extents of a volume and yield them chunk by chunk (a Ray streaming
        generator: one path grant for the whole image, `window` reads in flight)."""
        route, array, port, _ = path = self._target(port_ref, lun)
        size = self._capacity(path)
        get(array.prepare.remote(route.initiator, port, lun, 0, size // 512, False), route.target)
        pieces = [p for off, length in extents for p in chunks(off, length, self.chunk_size)]
        inflight: deque = deque()
        for off, length in pieces:
            if len(inflight) >= self.window:
                yield get(inflight.popleft(), route.target)
            inflight.append(array.read.remote(route.initiator, port, lun, off // 512, length // 512))
        while inflight:
            yield get(inflight.popleft(), route.target)

    def resources_at(self, port_ref: str, lun: int, toward_target: bool) -> tuple:
        return self._grant(port_ref).resources(toward_target)

    def client_attach(self, device_id: str, volume: int) -> dict:
        """Attach a backup volume at this host's restore port of its array (Figs. 13, 16)."""
        array = self.arrays_by_device.get(device_id)
        restore = next((r for r in self.spec.restore_ports if r.port.split("/")[0] == array), None)
        if restore is None:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no restore port on {array} "
                                           f"(device {device_id})")
        _, transfers = self.manage(array, "attach", volume, restore.port.split("/")[1],
                                   restore.lun, self.name)
        return {"port": restore.port, "lun": restore.lun, "transfers": transfers}

    def client_detach(self, port_ref: str, lun: int) -> dict:
        array, port = port_ref.split("/")
        _, transfers = self.manage(array, "detach", port, lun)
        return {"transfers": transfers}

    def client_restore_tape(self, mount_point: str, library: str, media: str, file: int,
                            pre: list, post: list, via: str) -> dict:
        """Fig. 12 from tape: the image comes from the library (through the backup server in
        modeled time) and is written onto the mount's volume; holes are unmapped first."""
        lib = lookup(library, self.namespace)
        size, extents = get([lib.image_size.remote(media, file),
                             lib.image_extents.remote(media, file)], library)
        path = self._path(mount_point)
        route, array, port, lun = path
        capacity = self._capacity(path)
        if capacity != size:
            raise SanError("CAPACITY_MISMATCH", f"the image on {media} file {file} is {size} bytes "
                                                f"but {self.name}:{mount_point} is {capacity}")
        transfers = self.actions(mount_point, pre)
        with self._post_on_failure(mount_point, post):
            get(array.prepare.remote(route.initiator, port, lun, 0, size // 512, True), route.target)
            get(array.unmap.remote(route.initiator, port, lun, 0, size // 512), route.target)
            pieces = [p for off, length in extents for p in chunks(off, length, self.chunk_size)]

            def submit(piece):
                off, length = piece
                data = lib.read_image.remote(media, file, off, length)   # library -> array
                return array.write.remote(route.initiator, port, lun, off // 512, data)

            self._stream(submit, pieces, route.target)
            self._drop_fs(mount_point)
        moved = sum(length for _, length in extents)
        transfers.append(Transfer((f"{library}/drive0", f"{via}/lan:tx", f"{self.name}/lan:rx")
                                  + route.resources(True), moved))
        transfers += self.actions(mount_point, post)
        return {"copied": moved, "transfers": transfers}

    def client_restore_files_tape(self, mount_point: str, library: str, media: str, file: int,
                                  files: list, pre: list, post: list, via: str) -> dict:
        """Fig. 13 from a tape copy: the files are read out of its volume image."""
        from .filesystem import BlockDevice, FatVolume, normalize
        self._fat(mount_point)
        paths = [normalize(p) for p in files]
        lib = lookup(library, self.namespace)
        size = get(lib.image_size.remote(media, file), library)
        counter = [0]

        def read_fn(offset, length):
            counter[0] += length
            return get(lib.read_image.remote(media, file, offset, length), library)

        transfers = self.actions(mount_point, pre)
        with self._post_on_failure(mount_point, post):
            image = FatVolume(BlockDevice(size, read_fn, readonly=True), readonly=True)
            contents = {p: image.read_file(p) for p in paths}
            image.close()
            with self.fs_locks[mount_point]:
                before = tuple(self.moved[mount_point])
                fs = self.filesystem(mount_point)
                for p, data in contents.items():
                    fs.write_bytes(p, data)
                fs.device.flush()
                transfers += self._fs_transfers(mount_point, before)
        transfers.append(Transfer((f"{library}/drive0", f"{via}/lan:tx", f"{self.name}/lan:rx"),
                                  counter[0]))
        transfers += self.actions(mount_point, post)
        return {"files": paths, "bytes": sum(len(d) for d in contents.values()),
                "transfers": transfers}

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
        from .volume_info import VolumeInfo
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
                status, t = self.manage(array, "snapshot", port, lun)
                volume = status["volume"]
            transfers += t
        except BaseException:
            self._post_after_failure(mount_point, post)
            raise
        transfers += self.actions(mount_point, post)
        return {"array": array, "device_id": device_id, "volume": volume,
                "job": status.get("job"), "info": info.encode(), "transfers": transfers}

    def client_backup_finish(self, started: dict) -> dict:
        """Second half: wait until the data is complete, then record the volume info."""
        array, transfers = started["array"], []
        if started["job"] is not None:
            done, t = self.manage(array, "wait", started["job"])
            transfers += t + done["transfers"]
        _, t = self.manage(array, "record_info", started["volume"], started["info"])
        return {"transfers": transfers + t}

    @contextmanager
    def _post_on_failure(self, mount_point: str, post: list):
        """If what follows the pre-processing fails, the post-processing still runs (so a
        quiesced application is resumed) and the original failure is raised."""
        try:
            yield
        except BaseException:
            self._post_after_failure(mount_point, post)
            raise

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
                       post: list) -> dict:
        """Fig. 12: restore a backup volume onto the volume behind a mount (same array)."""
        transfers = self.actions(mount_point, pre)
        with self._post_on_failure(mount_point, post):
            array, port, lun, mount_device = self._array_of(mount_point)
            if mount_device != device_id:
                raise SanError("INVALID_INPUT", f"the backup is on {device_id} but {self.name}:"
                                                f"{mount_point} is on {mount_device}; copy_volume "
                                                "it there first")
            status, t = self.manage(array, "restore", volume, port, lun)
            done, t2 = self.manage(array, "wait", status["job"])
            self._drop_fs(mount_point)   # the volume changed under this host's cached view
        transfers += t + t2 + done["transfers"]
        transfers += self.actions(mount_point, post)
        return {"copied": done["copied"], "checked": done.get("checked", 0), "transfers": transfers}

    def client_restore_files(self, mount_point: str, device_id: str, volume: int, files: list,
                             pre: list, post: list) -> dict:
        """Fig. 13: attach the backup volume at this host's restore port of its array, copy
        the named files from it onto the mount, detach."""
        from .filesystem import FatVolume, normalize
        self._fat(mount_point)
        paths = [normalize(p) for p in files]
        array = self.arrays_by_device.get(device_id)
        restore = next((r for r in self.spec.restore_ports if r.port.split("/")[0] == array), None)
        if restore is None:
            raise SanError("NO_SUCH_PORT", f"{self.name} has no restore port on {array} "
                                           f"(device {device_id})")
        rport = restore.port.split("/")[1]
        transfers = self.actions(mount_point, pre)
        with self._post_on_failure(mount_point, post):
            _, t = self.manage(array, "attach", volume, rport, restore.lun, self.name)
        transfers += t
        try:
            path = self._target(restore.port, restore.lun)
            counter = [0, 0]
            backup_fs = FatVolume(self._device(path, self._capacity(path), counter, readonly=True),
                                  readonly=True)
            contents = {p: backup_fs.read_file(p) for p in paths}
            backup_fs.close()
            transfers.append(Transfer(path[0].resources(False), counter[0]))
            with self.fs_locks[mount_point]:
                before = tuple(self.moved[mount_point])
                fs = self.filesystem(mount_point)
                for p, data in contents.items():
                    fs.write_bytes(p, data)
                fs.device.flush()
                transfers += self._fs_transfers(mount_point, before)
        except BaseException:
            self._post_after_failure(mount_point, post)
            self._detach_quietly(array, rport, restore.lun)
            raise
        _, t = self.manage(array, "detach", rport, restore.lun)
        transfers += t
        transfers += self.actions(mount_point, post)
        return {"files": paths, "bytes": sum(len(d) for d in contents.values()),
                "transfers": transfers}

    def client_delete(self, device_id: str, volume: int) -> dict:
        """Fig. 14: the array deletes the backup's volume info (and a snapshot itself)."""
        array = self.arrays_by_device.get(device_id)
        if array is None:
            raise SanError("NO_SUCH_VOLUME", f"no array with device ID {device_id} is on the LAN")
        _, transfers = self.manage(array, "delete_backup", volume)
        return {"transfers": transfers}

