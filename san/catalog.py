"""The backup server's catalog (Fig. 6): one row per copy of a backup, in SQLite.

``STATE_DIR/servers/SERVER/catalog.sqlite``, table ``backups``: host, mount_point, type
('disk' or 'tape': where this copy lives), device_id (the array's device ID, or the tape
library's name), media_id (volume number or tape ID, always text), file (the file number on
a tape, or NULL), label, timestamp ('YYYY-MM-DDTHH:MM:SSZ', when the backup was ordered).
Every change is one transaction, so a crash never leaves half a row.  The same database
holds the server's other tables: ``backup_volumes`` (Fig. 4, learnt by list_destinations)
and ``definitions`` added by the `define` op (Fig. 5; the topology's are not stored).
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

FIELDS = ("host", "mount_point", "type", "device_id", "media_id", "file", "label", "timestamp")
KEY = ("device_id", "media_id", "file")


def row_key(row: dict) -> tuple:
    """What names one copy of a backup: where it lives (device, media, file)."""
    return (row["device_id"], str(row["media_id"]), None if row.get("file") is None else str(row["file"]))


class Catalog:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "catalog.sqlite"
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS backups (id INTEGER PRIMARY KEY, host TEXT, "
                   "mount_point TEXT, type TEXT, device_id TEXT, media_id TEXT, file TEXT, "
                   "label TEXT, timestamp TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS backup_volumes (host TEXT, mount_point TEXT, "
                   "device_id TEXT, volumes TEXT, PRIMARY KEY (host, mount_point))")
        db.execute("CREATE TABLE IF NOT EXISTS definitions (name TEXT PRIMARY KEY, body TEXT)")
        return db

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

    def _delete_sql(self, key: tuple):
        device, media, file = key
        if file is None:
            return ("DELETE FROM backups WHERE device_id = ? AND media_id = ? AND file IS NULL",
                    (device, str(media)))
        return ("DELETE FROM backups WHERE device_id = ? AND media_id = ? AND file = ?",
                (device, str(media), str(file)))

    def delete(self, key: tuple) -> None:
        self._tx([self._delete_sql(key)])

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
