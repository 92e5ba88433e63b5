"""san.fat.names: file paths inside a mount, and volume labels."""
from __future__ import annotations

import pytest

from san.errors import SanError
from san.fat.names import fat_label, normalize


@pytest.mark.parametrize("given,expected", [
    ("a.txt", "/a.txt"),
    ("/a.txt", "/a.txt"),
    ("a/./b", "/a/b"),
    ("./a//b/c.d", "/a/b/c.d"),
    ("/x/../y", "/y"),
    ("a/b/../../c", "/c"),
    ("Mixed Case/Long file name.tar.gz", "/Mixed Case/Long file name.tar.gz"),
    ("na\u00efve \u65e5\u672c.txt", "/na\u00efve \u65e5\u672c.txt"),
    (".hidden", "/.hidden"),
    ("a+b,c;d=e[f].g", "/a+b,c;d=e[f].g"),
])
def test_normalize_good(given, expected):
    assert normalize(given) == expected


@pytest.mark.parametrize("given,why", [
    ("", "empty"),
    ("../x", "leaves the mount"),
    ("/a/../../x", "leaves the mount"),
    ("..", "names no file"),
    ("/", "names no file"),
    ("a/", "names no file"),
    ("a/.", "names no file"),
    ("a\x00b", "NUL"),
    ("a:b", "not allow"),
    ("what?", "not allow"),
    ("a/b*c", "not allow"),
    ('say"hi"', "not allow"),
    ("back\\slash", "not allow"),
    ("tab\there", "not allow"),
    ("trailing.", "ends with a dot"),
    ("trailing ", "ends with a dot or a space"),
    ("x" * 128, "longer than"),
])
def test_normalize_bad(given, why):
    with pytest.raises(SanError) as err:
        normalize(given)
    assert err.value.code == "INVALID_INPUT"
    assert why in err.value.message
    assert repr(given)[:20].strip("'") in err.value.message or given == ""


def test_long_name_limit_is_exactly_127():
    assert normalize("y" * 127) == "/" + "y" * 127


@pytest.mark.parametrize("label,expected", [
    ("db", "DB"), ("NO NAME", "NO_NAME"), ("orders/db.v2", "ORDERS_D"), ("", "SAN"),
    ("\u00e9t\u00e9", "T"), ("DATA_VOLUME_1", "DATA_VOL")])
def test_fat_label(label, expected):
    assert fat_label(label) == expected
