"""The closed vocabulary of a host's pre- and post-processing actions (`pre:` / `post:`).

A word names something the host does to a mount around a backup or a restore; it is never a
command line.  The topology checks refuse any other word, and the host refuses it again
(`san.flows.client_host.Host.action`).  It lives here, with nothing else, so a host's actor
process can check a word without importing the topology package (pydantic and all: a quarter
of a second of every SAN's start-up).
"""

ACTIONS = ("quiesce", "resume", "flush", "unmount", "mount", "fsck", "repair")

__all__ = ["ACTIONS"]
