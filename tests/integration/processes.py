"""Processes a test started in a session of their own, found to end exactly those."""
import os
from pathlib import Path


def session_pids(sid: int) -> list[int]:
    """Every live process of session `sid` (a test kills these, never `ray stop`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids
