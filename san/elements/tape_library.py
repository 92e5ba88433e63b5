"""The tape library: drives and media.

In this version it knows its drives and media; tape images, labels and tape flows arrive
with the tape-library issue.
"""
from __future__ import annotations


class TapeLibrary:
    def __init__(self, spec):
        self.spec = spec
        self.name = spec.name
        self.media = list(spec.media)

    def describe(self) -> dict:
        return {"name": self.name, "drives": self.spec.drives, "media": self.media}
