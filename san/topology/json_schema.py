"""The JSON Schema (draft 2020-12) of topology and scenario files: what `san schema` prints.

It is made from the same pydantic models that validate the files, so it cannot drift from
them: each value type brings its own schema (`fields`: a size is an integer or a string with
a unit, a speed a name or 'N MB/s', ...), each model its description and its defaults as
written in YAML (`models.SanModel`).  Here the documents are assembled: a step is `Step`, a
`oneOf` of one alternative per op, each requiring `op` to be that op's name (so an editor
picks the alternative by `op`, as the loader does); `concurrent`'s `steps` are `Step`s too;
a scenario's `topology` is a path or an inline `Topology`.

The schema checks what one file can say about itself (keys, types, units, patterns, ranges);
`san validate` checks more (names defined elsewhere in the file, uniqueness, sizes of copy
destinations), and is the authority.  It uses only keywords that mean the same in draft-07,
so editors whose language server speaks draft-07 validate with it as well.
"""
from __future__ import annotations

import json

from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from san.topology.fields import ERROR_CODES
from san.topology.models import Topology
from san.topology.steps import OPS, STEP_REF, ScenarioHead

DIALECT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("topology", "scenario")
_ORDER = ("$schema", "title", "description", "type", "properties", "required",
          "additionalProperties", "$defs")


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, without a title on every property (the key says it)."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def _share(node, schema: dict, ref: str):
    """`node` with every subschema equal to `schema` replaced by a `$ref` to it."""
    if node == schema:
        return {"$ref": ref}
    if isinstance(node, dict):
        return {k: _share(v, schema, ref) for k, v in node.items()}
    if isinstance(node, list):
        return [_share(v, schema, ref) for v in node]
    return node


def _document(title: str, schema: dict) -> dict:
    """`schema` as a document: the dialect and title first, `$defs` last, defs sorted."""
    doc = {"$schema": DIALECT, **schema, "title": title}
    if "$defs" in doc:
        doc["$defs"] = dict(sorted(doc["$defs"].items()))
    first = {k: doc[k] for k in _ORDER if k in doc}
    return {**first, **{k: v for k, v in doc.items() if k not in first}}


def topology_schema() -> dict:
    """The JSON Schema of a topology file."""
    return _document("san topology file",
                     Topology.model_json_schema(schema_generator=_Generator))


def scenario_schema() -> dict:
    """The JSON Schema of a scenario file, its steps one of the ops' schemas by `op`."""
    models = [ScenarioHead, Topology, *OPS.values()]
    _, top = models_json_schema([(m, "validation") for m in models],
                                schema_generator=_Generator)
    defs = top["$defs"]
    head = defs.pop(ScenarioHead.__name__)
    alternatives = []
    for op, cls in OPS.items():
        alternative = defs[cls.__name__]
        alternative["title"] = f"op: {op}"
        alternative["properties"]["op"] = {"const": op, "description": "The op."}
        alternative["required"] = ["op"] + [k for k in alternative.get("required", [])
                                            if k != "op"]
        alternatives.append({"$ref": f"#/$defs/{cls.__name__}"})
    step = STEP_REF.rsplit("/", 1)[-1]
    assert step not in defs, f"a model is named {step!r}, the name of the steps' schema"
    defs[step] = {
        "description": "A step: a mapping whose `op` says what it does and which arguments "
                       "it takes.",
        "type": "object",
        "required": ["op"],
        "properties": {"op": {"enum": list(OPS), "description": "The op."}},
        "oneOf": alternatives,
    }
    codes = {"type": "string", "enum": list(ERROR_CODES)}     # in every step: once is enough
    defs = _share(defs, codes, "#/$defs/ErrorCode")
    defs["ErrorCode"] = {**codes, "description": "An error code (docs/reference.md, "
                                                "\"Error codes\")."}
    return _document("san scenario file", {**head, "$defs": defs})


def schema_of(kind: str) -> dict:
    """The schema of `kind` ('topology' or 'scenario'); ValueError for another kind."""
    if kind == "topology":
        return topology_schema()
    if kind == "scenario":
        return scenario_schema()
    raise ValueError(f"unknown schema kind {kind!r} (expected one of: {', '.join(KINDS)})")


def schema_text(kind: str) -> str:
    """The schema of `kind` as `san schema` prints it (and docs/KIND.schema.json holds it)."""
    return json.dumps(schema_of(kind), indent=2, ensure_ascii=False) + "\n"
