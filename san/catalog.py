"""The backup server's catalog (Fig. 6): one row per copy of a backup, in SQLite.

``STATE_DIR/servers/SERVER/catalog.sqlite``, table ``backups``: host, mount_point, type
('disk' or 'tape': where this copy lives), device_id (the array's device ID, or the tape
library's name), media_id (volume number or tape ID, always text), file (the file number on
a tape, or NULL), label, timestamp ('YYYY-MM-DDTHH:MM:SSZ', when the backup was ordered).
Every change is one transaction, so a crash never leaves half a row (`add_many`, the rows a
rebuild found, is one too).  The same database holds the server's other tables:
``backup_volumes`` (Fig. 4, learnt by list_destinations) and ``definitions`` added by the
`define` op (Fig. 5; the topology's are not stored).
"""
from __future__ import annotations

import json
import operator
import sqlite3
import threading
from pathlib import Path

from .errors import SanError

FIELDS = ("host", "mount_point", "type", "device_id", "media_id", "file", "label", "timestamp")
KEY = ("device_id", "media_id", "file")
_INSERT = f"INSERT INTO backups ({', '.join(FIELDS)}) VALUES "
_ROW = "(" + ", ".join("?" * len(FIELDS)) + ")"
_MANY = 100     # rows per INSERT of `add_many`: half the time of one statement per row


def row_key(row: dict) -> tuple:
    """What names one copy of a backup: where it lives (device, media, file)."""
    return (row["device_id"], str(row["media_id"]), None if row.get("file") is None else str(row["file"]))


_FIELDS_OF = operator.itemgetter(*FIELDS)
_TEXT = frozenset({str, type(None)})


def _stored(row: dict) -> tuple[tuple, dict]:
    """The values of `row` as the catalog stores them (text or None, in FIELDS order), and
    the row as stored: `row` itself when it is that already."""
    try:
        values = _FIELDS_OF(row)
        if _TEXT.issuperset(map(type, values)):     # the common case: nothing to convert
            return values, (row if len(row) == len(FIELDS) else dict(zip(FIELDS, values)))
    except KeyError:                                # a missing field is None
        pass
    values = tuple(None if (v := row.get(f)) is None else str(v) for f in FIELDS)
    return values, dict(zip(FIELDS, values))


class Catalog:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "catalog.sqlite"
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            raise SanError("INVALID_INPUT", (
                f"{self.path} is not a usable catalog ({exc}); move it away, and a "
                f"rebuild_catalog step rebuilds the catalog from the arrays and tape "
                f"labels")) from exc

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._create(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        # A commit is in the WAL file when it returns, so it survives the death of the server
        # (an actor killed, then restarted); it is not fsync-ed: a crash of the machine may
        # lose the latest commits (never half of one), as it may lose the latest writes to a
        # volume (docs/integrity.md, Durability).  SQLite's default, FULL, fsyncs every commit.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")     # the tables in one transaction: one commit, not three
        db.execute("CREATE TABLE IF NOT EXISTS backups (id INTEGER PRIMARY KEY, host TEXT, "
                   "mount_point TEXT, type TEXT, device_id TEXT, media_id TEXT, file TEXT, "
                   "label TEXT, timestamp TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS backup_volumes (host TEXT, mount_point TEXT, "
                   "device_id TEXT, volumes TEXT, PRIMARY KEY (host, mount_point))")
        db.execute("CREATE TABLE IF NOT EXISTS definitions (name TEXT PRIMARY KEY, body TEXT)")
        db.execute("COMMIT")

    def _tx(self, statements) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- rows ---------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(FIELDS)} FROM backups ORDER BY id")
            return [dict(zip(FIELDS, r)) for r in cur.fetchall()]

    def find(self, key: tuple) -> dict | None:
        return next((r for r in self.rows() if row_key(r) == key), None)

    def add(self, row: dict, replacing: tuple | None = None) -> dict:
        """Add a row (in one transaction with dropping the rows of `replacing`, if given)."""
        row = {f: (None if row.get(f) is None else str(row[f])) for f in FIELDS}
        statements = []
        if replacing is not None:
            statements.append(self._delete_sql(replacing))
        statements.append((f"INSERT INTO backups ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                           tuple(row[f] for f in FIELDS)))
        self._tx(statements)
        return row

    def add_many(self, rows: list[dict]) -> list[dict]:
        """Add rows in one transaction (the rows a catalog rebuild found): all of them or,
        after a crash, none; but not a row whose key (`row_key`) the catalog holds by then (a
        flow may have added its row since the rebuild listed the keys).  Returns the rows
        added, as stored (text or None)."""
        if not rows:
            return []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                held = {row_key(dict(zip(KEY, r))) for r in
                        self._db.execute("SELECT device_id, media_id, file FROM backups")}
                fresh = [row for row in rows if row_key(row) not in held]
                if not fresh:
                    self._db.execute("COMMIT")
                    return []
                values, stored = zip(*map(_stored, fresh))
                for at in range(0, len(values), _MANY):    # INSERT ... VALUES (..), (..), ...
                    chunk = values[at:at + _MANY]
                    self._db.execute(_INSERT + ", ".join([_ROW] * len(chunk)),
                                     [v for row in chunk for v in row])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return list(stored)

    def keys(self) -> set[tuple]:
        """The key (`row_key`) of every row."""
        with self._lock:
            cur = self._db.execute("SELECT device_id, media_id, file FROM backups")
            return {row_key(dict(zip(KEY, r))) for r in cur.fetchall()}

    def _delete_sql(self, key: tuple):
        device, media, file = key
        if file is None:
            return ("DELETE FROM backups WHERE device_id = ? AND media_id = ? AND file IS NULL",
                    (device, str(media)))
        return ("DELETE FROM backups WHERE device_id = ? AND media_id = ? AND file = ?",
                (device, str(media), str(file)))

    def delete(self, key: tuple) -> None:
        self._tx([self._delete_sql(key)])

    def delete_row(self, row: dict) -> bool:
        """Delete `row` if the catalog holds it as it is (every field equal; a row added at its
        key since is kept); whether it was there."""
        values, _ = _stored(row)
        where = " AND ".join(f"{f} IS ?" for f in FIELDS)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                gone = self._db.execute(f"DELETE FROM backups WHERE {where}", values).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return gone > 0

    def lose(self) -> None:
        """The catalog is lost (the server's disk died): every row goes; definitions stay."""
        self._tx([("DELETE FROM backups", ()), ("DELETE FROM backup_volumes", ())])

    # -- the backup volume table (Fig. 4) and defined definitions -----------------------------
    def set_backup_volumes(self, host: str, mount_point: str, device_id: str, volumes: list) -> None:
        self._tx([("INSERT OR REPLACE INTO backup_volumes VALUES (?, ?, ?, ?)",
                   (host, mount_point, device_id, json.dumps(volumes)))])

    def backup_volumes(self) -> list[dict]:
        with self._lock:
            cur = self._db.execute("SELECT host, mount_point, device_id, volumes FROM backup_volumes")
            return [{"host": h, "mount_point": m, "device_id": d, "volumes": json.loads(v)}
                    for h, m, d, v in cur.fetchall()]

    def save_definition(self, name: str, body: dict) -> None:
        self._tx([("INSERT OR REPLACE INTO definitions VALUES (?, ?)", (name, json.dumps(body)))])

    def definitions(self) -> dict[str, dict]:
        with self._lock:
            cur = self._db.execute("SELECT name, body FROM definitions")
            return {n: json.loads(b) for n, b in cur.fetchall()}

    def close(self) -> None:
        with self._lock:
            self._db.close()
