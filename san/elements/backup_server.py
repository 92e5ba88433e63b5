"""The backup server: definitions (Fig. 5), catalog (Fig. 6) and the server side of every flow.

In this version it holds its definitions from the topology and answers for them; the
catalog and the backup flows arrive with the backup-software issue.
"""
from __future__ import annotations


class BackupServer:
    def __init__(self, spec):
        self.spec = spec
        self.name = spec.name
        self.definitions = {d.name: d for d in spec.definitions}

    def describe(self) -> dict:
        return {"name": self.name, "tape_library": self.spec.tape_library,
                "definitions": sorted(self.definitions)}
