"""`san bench --only serve`: a standard NBD client through `san serve`, beside the host's own I/O.

`nbdcopy` (Debian's libnbd-bin) copies an image into a served mount and back out of it; the
baseline is the same mount's host moving the same number of bytes as a `write` step and a
read of the volume do (`Host.write`, `Host.read_discard`), through the same fabric, in the
same run.  What the NBD path adds: the client's socket, the NBD server's parsing, and one
more hop (driver -> host actor) for every byte.  Both sides overwrite space written by an
untimed warm-up, and reads come from the page cache.  After the timed runs the image is
copied in once more and read back whole: it must be byte for byte the image.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np

from ..errors import SanError
from ..units import format_size
from .core import OVERWRITE, READS, Baseline, Figure, alternate, check, clock, gibps, rate
from .fabric import ONE, WINDOW, _seeds, load

NBDCOPY = "nbdcopy"


def _nbdcopy(source: str, dest: str) -> None:
    done = subprocess.run([NBDCOPY, source, dest], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SanError("INVALID_INPUT", f"{NBDCOPY} {source} {dest} failed (exit "
                                        f"{done.returncode}): {done.stderr.strip()}")


def bench_serve(s, res) -> tuple[list, list]:
    """nbdcopy into and out of a served mount, beside host write / read of as many bytes."""
    from ..fabric import San
    from ..serve import Serving
    if shutil.which(NBDCOPY) is None:
        raise SanError("INVALID_INPUT", f"{NBDCOPY} is not installed (Debian package libnbd-bin)")
    size = s.size
    state = s.tmp / "serve-state"
    image, back = s.tmp / "image.raw", s.tmp / "back.raw"
    np.random.default_rng(12).integers(0, 256, size, dtype=np.uint8).tofile(image)
    san = San(load(s.tmp, "serve", ONE.replace("SIZE", str(size))), state, window=WINDOW).start()
    serving = Serving(san, state, [("h1", "/v")], ("127.0.0.1", 0))
    try:
        (uri,) = serving.start()
        seeds = _seeds()

        def nbd_write():
            _nbdcopy(str(image), uri)

        def host_write():
            san.call("h1", "write", "/v", 0, size, next(seeds))

        nbd_write(), host_write()                       # warm-up: the space exists
        w = alternate({"nbd": clock(nbd_write), "host": clock(host_write)}, s.repeat)
        r = alternate({"nbd": clock(lambda: _nbdcopy(uri, "null:")),
                       "host": clock(lambda: san.call("h1", "read_discard", "/v", 0, size))},
                      s.repeat)
        nbd_write()
        _nbdcopy(uri, str(back))
        check(back.read_bytes() == image.read_bytes(),
              "serve: the image read back through NBD differs from the one copied in")
    finally:
        try:
            if serving.address is not None:
                serving.stop()
        finally:
            san.shutdown()
            shutil.rmtree(state, ignore_errors=True)
    figures = []
    for kind, times, space, host_what in (
            ("write", w, OVERWRITE, "a `write` step of the host (Host.write)"),
            ("read", r, READS, "the host reading the volume (Host.read_discard)")):
        figures.append(Figure(
            "serve", f"serve.nbdcopy_{kind}", f"nbdcopy {kind} (NBD)",
            rate(size, times["nbd"]), "GiB/s",
            f"nbdcopy {'copies an image file into' if kind == 'write' else 'reads'} a "
            f"{format_size(size)} mount served by san serve (NBD on 127.0.0.1)",
            Baseline("host I/O", rate(size, times["host"]),
                     f"the same number of bytes moved by {host_what}, through the same fabric",
                     gibps(size, times["host"])),
            space=space, runs=gibps(size, times["nbd"]),
            params={"size": size, "repeat": s.repeat}))
    return figures, []
