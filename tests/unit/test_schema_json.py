"""The JSON Schemas of `san schema`: current in docs/, and they agree with `san validate`.

Every shipped topology and scenario validates against them (with a draft 2020-12 validator and
a draft-07 one, as many editors have); bad files are rejected by them and by `san validate`
alike; each custom value type has a real schema; steps are one of the ops, keyed by `op`.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from san.topology import OPS, validate_files
from san.topology.json_schema import KINDS, schema_of, schema_text

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SHIPPED = ([("topology", p) for p in sorted((ROOT / "topologies").glob("*.yaml"))]
           + [("scenario", p) for p in sorted((ROOT / "topologies" / "scenarios").glob("*.yaml"))]
           + [("scenario", p) for p in sorted((ROOT / "tests" / "unit" / "data").glob("*.yaml"))])
VALIDATORS = (jsonschema.Draft202012Validator, jsonschema.Draft7Validator)


class Yaml12Loader(yaml.SafeLoader):
    """YAML as a language server reads it (YAML 1.2): a timestamp is a string."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load(text: str):
    return yaml.load(text, Loader=Yaml12Loader)


@pytest.fixture(scope="module")
def schemas() -> dict:
    return {kind: schema_of(kind) for kind in KINDS}


def errors(schema: dict, data, validator=jsonschema.Draft202012Validator) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}"
            for e in validator(schema).iter_errors(data)]


@pytest.mark.parametrize("kind", KINDS)
def test_the_schemas_in_docs_are_current(kind):
    """If this fails, regenerate: san schema KIND -o docs/KIND.schema.json"""
    assert (DOCS / f"{kind}.schema.json").read_text() == schema_text(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_a_schema_is_a_valid_draft_2020_12_and_draft_07_schema(schemas, kind):
    for validator in VALIDATORS:
        validator.check_schema(schemas[kind])


@pytest.mark.parametrize("validator", VALIDATORS, ids=lambda v: v.__name__)
@pytest.mark.parametrize("kind,path", SHIPPED, ids=lambda x: getattr(x, "name", x))
def test_every_shipped_file_is_valid_for_its_schema(schemas, kind, path, validator):
    assert validate_files([path]) == []
    assert errors(schemas[kind], load(path.read_text()), validator) == []


NULLS = """\
name: n
lan: null
fabric: {switches: [{name: s, ports: null, speed: null}], isls: null}
hosts: null
tape_libraries: [{name: l, media: [T00001], drives: null}]
"""


@pytest.mark.parametrize("validator", VALIDATORS, ids=lambda v: v.__name__)
def test_an_optional_key_set_to_null_is_valid_for_the_schema_as_for_validate(
        schemas, tmp_path, validator):
    """`key: null` is the key left out (docs/reference.md); the schema said "not an integer"
    for six of these, though editors.md promises it accepts what `san validate` accepts."""
    path = tmp_path / "nulls.yaml"
    path.write_text(NULLS)
    assert validate_files([path]) == []
    assert errors(schemas["topology"], load(NULLS), validator) == []
    wrong = load(NULLS.replace("drives: null", "drives: many"))
    assert errors(schemas["topology"], wrong, validator)          # not anything at all


TOPOLOGY = (ROOT / "topologies" / "two-arrays.yaml").read_text()
SCENARIO = "name: s\ntopology: ../two-arrays.yaml\nsteps:\n"

# each case: (id, kind, file text); the schema and `san validate` must both reject it
BAD = [
    ("unknown-top-key", "topology", TOPOLOGY + "bogus: 1\n"),
    ("bad-speed", "topology", TOPOLOGY.replace("speed: 1GbE", "speed: 3 furlongs")),
    ("bad-size-unit", "topology", TOPOLOGY.replace("snapshot_pool: 8GiB", "snapshot_pool: 8GiBs")),
    ("size-not-whole-blocks", "topology",
     TOPOLOGY.replace("{number: 2, size: 2GiB}", "{number: 2, size: 1000}")),
    ("bad-name", "topology", TOPOLOGY.replace("name: two-arrays", "name: 2arrays")),
    ("bad-wwpn", "topology", TOPOLOGY.replace('"21:00:00:e0:8b:00:00:01"', "21-00")),
    ("bad-port-ref", "topology",
     TOPOLOGY.replace("[host1/hba0, array1/fc0]", "[host1, array1/fc0]")),
    ("bad-schedule", "topology", TOPOLOGY.replace("daily 02:00", "nightly")),
    ("bad-action", "topology", TOPOLOGY.replace("pre: [quiesce, flush]", "pre: [rm -rf]")),
    ("lun-out-of-range", "topology", TOPOLOGY.replace("lun: 9", "lun: 16384")),
    ("missing-required", "topology", TOPOLOGY.replace("    device_id: HTC-0002\n", "")),
    ("bad-time", "topology", TOPOLOGY.replace("start: 2026-01-01T00:00:00Z", "start: soon")),
    ("unknown-op", "scenario", SCENARIO + "  - {op: fly}\n"),
    ("missing-op", "scenario", SCENARIO + "  - {host: host1}\n"),
    ("missing-argument", "scenario",
     SCENARIO + "  - {op: write, host: host1, mount: /db, offset: 0, size: 1MiB}\n"),
    ("argument-of-another-op", "scenario",
     SCENARIO + "  - {op: backup, definition: db-nightly, as: b, media: T00001}\n"),
    ("as-written-as-the-field-name", "scenario",
     SCENARIO + "  - {op: backup, definition: db-nightly, as_: b}\n"),
    ("bad-duration", "scenario", SCENARIO + "  - {op: advance_clock, by: a while}\n"),
    ("bad-error-code", "scenario",
     SCENARIO + "  - {op: lose_catalog, server: backup1, expect_error: OOPS}\n"),
    ("bad-step-inside-concurrent", "scenario",
     SCENARIO + "  - {op: concurrent, steps: [{op: advance_clock, by: 1h}, {op: fly}]}\n"),
    ("bad-inline-topology", "scenario",
     "name: s\ntopology: {name: t, arrays: 7}\nsteps: []\n"),
    ("steps-not-a-list", "scenario", "name: s\ntopology: ../two-arrays.yaml\nsteps: {}\n"),
]


@pytest.mark.parametrize("kind,text", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_files_are_rejected_by_the_schema_and_by_validate(schemas, tmp_path, kind, text):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (tmp_path / "two-arrays.yaml").write_text(TOPOLOGY)
    path = folder / "bad.yaml"
    path.write_text(text)
    assert validate_files([path]) != []
    for validator in VALIDATORS:
        assert errors(schemas[kind], load(text), validator) != []


def _walk(node, path=()):
    """(path, subschema) of every schema object inside `node`."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (i,))


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_has_a_real_schema_and_a_description(schemas, kind):
    for path, node in _walk(schemas[kind]):
        if path and path[-2:-1] == ("properties",):
            assert set(node) - {"default", "description"}, f"{path} accepts anything"
            if path[-1] != "op":
                assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_are_written_as_a_user_would_and_are_valid(schemas, kind):
    """A default is shown as YAML writes it (8GFC, not 800000000.0) and passes its own schema."""
    schema = schemas[kind]
    checked = 0
    for path, node in _walk(schema):
        if path[-2:-1] == ("properties",) and node.get("default") is not None:
            resolver = {k: v for k, v in node.items() if k != "default"}
            resolver["$defs"] = schema["$defs"]
            assert errors(resolver, node["default"]) == [], path
            checked += 1
    assert checked > 10


# each case: (kind, $defs name, property, a value it accepts, a value it refuses)
CUSTOM_TYPES = [
    ("topology", "Volume", "size", "4MiB", "4 MiBs"),
    ("topology", "Volume", "size", 1048576, 1000),
    ("topology", "Switch", "speed", "8GFC", 800),
    ("topology", "Switch", "speed", "100 MB/s", "fast"),
    ("topology", "Switch", "name", "fcsw-1.a_b", "1fcsw"),
    ("topology", "ArrayPort", "wwpn", "50:06:0e:80:00:00:00:01", "50:06:0e:80"),
    ("topology", "Zone", "members", ["array1/fc0"], ["array1"]),
    ("topology", "Definition", "schedule", "weekly sun 03:00", "weekly someday 03:00"),
    ("topology", "Definition", "label", "x" * 128, "x" * 129),
    ("topology", "Mount", "mount_point", "/db", "db"),
    ("topology", "Mount", "lun", 16383, -1),
    ("topology", "Array", "device_id", 1, True),
    ("scenario", "Topology", "start", "2026-01-01T00:00:00Z", "tomorrow"),
    ("topology", "Placement", "resources", {"site_a": 0.01}, {"site_a": -1}),
    ("scenario", "AdvanceClockStep", "by", "30s", "30"),
    ("scenario", "FaultStep", "target", "array1/fc0", "a/b/c"),
    ("scenario", "ExpectCatalogStep", "rows", [{"media_id": 1, "file": None}], [{"nope": 1}]),
    ("scenario", "WriteFilesStep", "files", {"a.txt": {"size": 10, "seed": 1}},
     {"a.txt": {"size": 10}}),
]


@pytest.mark.parametrize("kind,model,key,good,bad", CUSTOM_TYPES)
def test_custom_value_types_have_their_own_schema(schemas, kind, model, key, good, bad):
    schema = schemas[kind]
    prop = dict(schema["$defs"][model]["properties"][key], **{"$defs": schema["$defs"]})
    assert errors(prop, good) == []
    assert errors(prop, bad) != []


def test_a_step_is_one_of_the_ops_keyed_by_op(schemas):
    defs = schemas["scenario"]["$defs"]
    step = defs["Step"]
    assert step["properties"]["op"]["enum"] == list(OPS)
    assert [a["$ref"] for a in step["oneOf"]] == [f"#/$defs/{cls.__name__}"
                                                  for cls in OPS.values()]
    for op, cls in OPS.items():
        alternative = defs[cls.__name__]
        assert alternative["properties"]["op"]["const"] == op
        assert alternative["required"][0] == "op"
        assert alternative["additionalProperties"] is False
        assert "as" in alternative["properties"] and "as_" not in alternative["properties"]
    assert "from" in defs["RebuildCatalogStep"]["properties"]
    assert "as" in defs["CheckpointStep"]["required"]
    assert defs["ConcurrentStep"]["properties"]["steps"]["items"] == {"$ref": "#/$defs/Step"}
    assert schemas["scenario"]["properties"]["steps"]["items"] == {"$ref": "#/$defs/Step"}


def test_a_scenario_topology_is_a_path_or_a_topology(schemas):
    schema = schemas["scenario"]
    ok = {"name": "s", "steps": []}
    inline = json.loads(json.dumps(load(TOPOLOGY)))
    assert errors(schema, {**ok, "topology": "../two-arrays.yaml"}) == []
    assert errors(schema, {**ok, "topology": inline}) == []
    assert errors(schema, {**ok, "topology": ""}) != []


# keywords whose meaning is the same in draft-07 and 2020-12 (`$defs` is only a location in
# draft-07, reached through JSON-pointer `$ref`s, which both resolve alike)
PORTABLE = {"$schema", "$ref", "$defs", "title", "description", "default", "examples", "type",
            "properties", "required", "additionalProperties", "propertyNames", "items", "enum",
            "const", "pattern", "minimum", "maximum", "multipleOf", "minLength", "maxLength",
            "anyOf", "oneOf"}


def _keywords(schema: dict) -> set[str]:
    found = set(schema)
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            for sub in value.values():
                found |= _keywords(sub)
        elif key in ("items", "additionalProperties", "propertyNames") and isinstance(value, dict):
            found |= _keywords(value)
        elif key in ("anyOf", "oneOf"):
            for sub in value:
                found |= _keywords(sub)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_a_schema_uses_only_keywords_that_draft_07_reads_alike(schemas, kind):
    assert _keywords(schemas[kind]) - PORTABLE == set()
