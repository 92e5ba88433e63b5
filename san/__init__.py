"""san: a distributed simulator of a whole storage area network, on Ray.

Disk arrays, client hosts, backup servers, FC switches and tape libraries are Ray actors
wired from a YAML topology; block I/O flows between them as numpy chunks.  See README.md.
"""
__version__ = "0.5.0"
