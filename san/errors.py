"""The one exception hierarchy of `san`: every failure carries a stable code.

The codes are the user-facing contract (docs/reference.md, "Error codes"): a scenario step names
them in `expect_error`, the report prints them, tests assert them.  Every element raises
`SanError(code, message)` with a sentence naming the objects involved, e.g.
``ZONING_DENIED: host1/hba0 is not zoned with array2/fc0``.

`ValidationFailed` is the exit-2 case: it carries every located problem of the input files.
`InternalError` is a bug met on the way (any other exception, caught where it would otherwise
reach the user as a traceback): coded ``INVALID_INPUT``, as the contract's list has no code for
bugs, but never what a step expects, and the CLI says ``internal error`` and exits 1.
"""
from __future__ import annotations

CODES = frozenset("""
ZONING_DENIED LUN_NOT_MAPPED LBA_OUT_OF_RANGE READ_ONLY NOT_A_COPY_DESTINATION NO_SUCH_VOLUME
NO_SUCH_PORT NO_SUCH_MOUNT NO_SUCH_BACKUP NO_SUCH_MEDIA NO_SUCH_FILE INVALID_VOLUME_INFO
CAPACITY_MISMATCH POOL_FULL TAPE_FULL MEDIA_ERROR NO_SPACE FSCK_FAILED BUSY LINK_DOWN
ELEMENT_DOWN UNAUTHORIZED CHECKSUM_MISMATCH VERIFY_MISMATCH CATALOG_MISMATCH INVALID_INPUT
""".split())


class SanError(Exception):
    """A failure with a stable `code` (one of `CODES`) and a message naming the objects.

    >>> str(SanError("READ_ONLY", "array1 volume 3 is a snapshot"))
    'READ_ONLY: array1 volume 3 is a snapshot'
    """

    #: What the failed work had done when it failed, where a flow knows it: ``transfers``
    #: (what it moved, charged to its step) and ``result`` (what it found).  A step that fails
    #: reports them (`san.runner`): a write cut by a fault still took the link's time.
    partial: dict | None = None

    def __init__(self, code: str, message: str):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}; expected one of {sorted(CODES)}")
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class ValidationFailed(SanError):
    """Input files are invalid; `problems` holds every located problem (exit code 2)."""

    def __init__(self, problems: list):
        self.problems = list(problems)
        super().__init__("INVALID_INPUT", f"{len(self.problems)} problem(s) in the input files")

    def __reduce__(self):
        return (ValidationFailed, (self.problems,))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class InternalError(SanError):
    """A bug met while doing `where`: the exception `exc`, on one line.

    >>> e = InternalError.of("backup", KeyError("d2"))
    >>> e.code, e.message
    ('INVALID_INPUT', "internal error in backup: KeyError: 'd2'")
    """

    def __init__(self, message: str):
        super().__init__("INVALID_INPUT", message)

    def __reduce__(self):       # crosses Ray (pickled) as itself, not as a plain SanError
        return (InternalError, (self.message,))

    @classmethod
    def of(cls, where: str, exc: BaseException) -> "InternalError":
        """The error for `exc`, met in `where`; `exc` stays its cause (its traceback, for
        whoever debugs it: ``raise InternalError.of(...) from exc`` says the same)."""
        text = str(exc).strip().splitlines()
        line = text[0] + (" ..." if len(text) > 1 else "") if text else ""
        err = cls(f"internal error in {where}: {type(exc).__name__}" + (f": {line}" if line else ""))
        err.__cause__ = exc
        return err
