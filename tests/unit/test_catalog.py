"""The catalog in SQLite: rows, keys, transactions, loss, the other server tables."""
import sqlite3

import pytest

from san.catalog import Catalog, row_key
from san.errors import SanError

ROW = {"host": "host1", "mount_point": "/db", "type": "disk", "device_id": "HTC-0001",
       "media_id": 1, "file": None, "label": "nightly", "timestamp": "2026-01-01T02:00:00Z"}


def test_rows_are_text_and_survive_reopen(tmp_path):
    cat = Catalog(tmp_path)
    assert cat.add(ROW)["media_id"] == "1"
    cat.close()
    again = Catalog(tmp_path)
    assert again.rows() == [{**ROW, "media_id": "1"}]
    assert again.find(("HTC-0001", "1", None))["label"] == "nightly"
    assert again.find(("HTC-0001", "2", None)) is None


def test_replacing_drops_the_old_rows_in_the_same_transaction(tmp_path):
    cat = Catalog(tmp_path)
    cat.add(ROW)
    cat.add({**ROW, "media_id": 2})
    cat.add({**ROW, "label": "new"}, replacing=row_key(ROW))
    assert [(r["media_id"], r["label"]) for r in cat.rows()] == [("2", "nightly"), ("1", "new")]


def test_delete_row_deletes_only_that_row_as_it_was(tmp_path):
    """A flow that found its row stale deletes it, but not a row added at its key since."""
    cat = Catalog(tmp_path)
    cat.add(ROW)
    cat.add({**ROW, "media_id": 2})
    assert cat.delete_row(ROW) is True
    assert [r["media_id"] for r in cat.rows()] == ["2"]
    assert cat.delete_row(ROW) is False
    cat.add({**ROW, "label": "newer"})
    assert cat.delete_row(ROW) is False          # same key, another backup: kept
    assert sorted(r["label"] for r in cat.rows()) == ["newer", "nightly"]
    tape = {**ROW, "type": "tape", "device_id": "lib1", "media_id": "T00001", "file": 2}
    cat.add(tape)
    assert cat.delete_row(tape) is True          # a NULL-free key too (`IS` compares both)
    assert len(cat.rows()) == 2


def test_a_failed_transaction_leaves_nothing(tmp_path, monkeypatch):
    cat = Catalog(tmp_path)
    cat.add(ROW)
    with pytest.raises(sqlite3.Error):
        cat._tx([cat._delete_sql(row_key(ROW)), ("INSERT INTO nowhere VALUES (1)", ())])
    assert len(cat.rows()) == 1


def test_tape_keys_include_the_file_number(tmp_path):
    cat = Catalog(tmp_path)
    tape = {**ROW, "type": "tape", "device_id": "lib1", "media_id": "T00001", "file": 2}
    cat.add(tape)
    cat.add({**tape, "file": 3})
    cat.delete(("lib1", "T00001", "2"))
    assert [r["file"] for r in cat.rows()] == ["3"]


def test_losing_the_catalog_keeps_definitions(tmp_path):
    cat = Catalog(tmp_path)
    cat.add(ROW)
    cat.set_backup_volumes("host1", "/db", "HTC-0001", [1, 2])
    cat.save_definition("d1", {"host": "host1"})
    cat.lose()
    assert cat.rows() == [] and cat.backup_volumes() == []
    assert cat.definitions() == {"d1": {"host": "host1"}}


def test_many_rows_are_one_transaction_stored_as_text(tmp_path):
    cat = Catalog(tmp_path)
    rows = [{**ROW, "media_id": n, "label": f"snap {n}"} for n in range(1000)]
    added = cat.add_many(rows)
    assert added == [{**ROW, "media_id": str(n), "label": f"snap {n}"} for n in range(1000)]
    assert cat.rows() == added and cat.keys() == {row_key(r) for r in rows}
    assert cat.add_many([]) == []
    # a failure while inserting leaves none of the rows
    cat._db.execute("CREATE TRIGGER boom BEFORE INSERT ON backups WHEN NEW.media_id = 'boom' "
                    "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.Error):
        cat.add_many([{**ROW, "media_id": 5000}, {**ROW, "media_id": "boom"}])
    assert len(cat.rows()) == 1000
    cat.close()
    assert Catalog(tmp_path).rows() == added


def test_commits_survive_the_process_but_are_not_fsynced(tmp_path):
    # the durability of the state dir (docs/integrity.md): in the WAL when a commit returns
    cat = Catalog(tmp_path)
    assert cat._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat._db.execute("PRAGMA synchronous").fetchone()[0] == 1     # NORMAL
    cat.add(ROW)
    other = sqlite3.connect(tmp_path / "catalog.sqlite")         # another process's view
    assert other.execute("SELECT count(*) FROM backups").fetchone()[0] == 1


def test_a_rebuild_adds_no_row_whose_key_a_flow_added_meanwhile(tmp_path):
    cat = Catalog(tmp_path)
    cat.add({**ROW, "label": "added by a mirror meanwhile"})        # after the rebuild listed keys
    added = cat.add_many([ROW, {**ROW, "media_id": 2}])
    assert [r["media_id"] for r in added] == ["2"]
    assert sorted((r["media_id"], r["label"]) for r in cat.rows()) == [
        ("1", "added by a mirror meanwhile"), ("2", "nightly")]
    assert cat.add_many([ROW]) == []                                  # nothing new: nothing added


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b"SQLite format 3\x00" + bytes(84) + b"\xff" * 4000])
def test_a_damaged_catalog_file_is_refused_naming_it(tmp_path, content):
    """A catalog.sqlite that SQLite cannot read: INVALID_INPUT naming the file and the way
    out (move it away, rebuild), not sqlite3's bare DatabaseError."""
    (tmp_path / "catalog.sqlite").write_bytes(content)
    with pytest.raises(SanError) as info:
        Catalog(tmp_path)
    assert info.value.code == "INVALID_INPUT"
    assert info.value.message.startswith(f"{tmp_path / 'catalog.sqlite'} is not a usable catalog (")
    assert "rebuild_catalog" in info.value.message
    (tmp_path / "catalog.sqlite").rename(tmp_path / "damaged.sqlite")
    assert Catalog(tmp_path).rows() == []
