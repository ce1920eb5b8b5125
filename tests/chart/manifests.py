"""Reads a YAML stream (helm template's output) on stdin and prints its
documents as one JSON array, empty documents left out. With --validate
SCHEMA, instead checks every document of the given kind against that JSON
Schema (draft-07) and prints each error: --validate SCHEMA --kind KIND.
Run by tests/chart.rs with the Python of the chart tools' venv (PyYAML and
jsonschema come with kubernetes-validate)."""

import json
import sys

import yaml


def main():
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]
    if len(sys.argv) == 1:
        json.dump(docs, sys.stdout)
        return 0
    if len(sys.argv) != 5 or sys.argv[1] != "--validate" or sys.argv[3] != "--kind":
        print("usage: manifests.py [--validate SCHEMA --kind KIND] < STREAM", file=sys.stderr)
        return 2
    import jsonschema

    with open(sys.argv[2]) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema)
    checked, failed = 0, 0
    for doc in docs:
        if doc.get("kind") != sys.argv[4]:
            continue
        checked += 1
        for error in validator.iter_errors(doc):
            failed += 1
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            print(f"{sys.argv[4]} {doc['metadata'].get('name')}: {path}: {error.message}")
    print(f"checked {checked} {sys.argv[4]}, {failed} errors")
    return 1 if failed else 0


sys.exit(main())
