# Extracts definitions.Observation and every definition it reaches from the official FHIR R4 JSON
# schema, for observation_test.go. Run from the repository root:
#   python3 testdata/fhir/schema/extract.py ../shared/fhir/schema/fhir.schema.json
# Observation.contained reaches ResourceList (every resource type, the whole schema); it is cut, and
# ResourceList matches nothing: the service never writes contained resources.
import json, sys

src = json.load(open(sys.argv[1]))
defs = src["definitions"]
keep = {"Observation"}


def walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                name = v.rsplit("/", 1)[1]
                if name != "ResourceList" and name not in keep:
                    keep.add(name)
                    walk(defs[name])
            else:
                walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)


walk(defs["Observation"])
out = {
    "$schema": src["$schema"],
    "id": src["id"],
    "description": "definitions.Observation of the FHIR R4 (4.0.1) JSON schema and every definition it references, "
    "copied unchanged; ResourceList (contained resources) matches nothing. See README.md.",
    "definitions": {k: defs[k] for k in sorted(keep)},
}
out["definitions"]["ResourceList"] = {"description": "Cut from the extract: matches nothing.", "enum": []}
with open("testdata/fhir/schema/observation.schema.json", "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(len(keep), "definitions")
