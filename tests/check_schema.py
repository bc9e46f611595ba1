#!/usr/bin/python3
"""marshal tests: every valid typemap validates against typemaps/typemap.schema.json.

Uses Debian's python3-jsonschema (Draft 2020-12). Also checks that the malformed
typemaps whose mistake is one of shape (not of meaning) are rejected by the
schema too, so the schema is not vacuous. Prints 'N passed, M failed'.
"""
import glob
import json
import os
import sys

import jsonschema

root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
with open(os.path.join(root, "typemaps/typemap.schema.json")) as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)

good = sorted(glob.glob(os.path.join(root, "typemaps/*.json")) +
              glob.glob(os.path.join(root, "tests/typemaps/good/*.json")) +
              glob.glob(os.path.join(root, "tests/fixtures/*.json")))
good = [g for g in good if not g.endswith("typemap.schema.json")]
# Shape mistakes the schema must reject as well as the loader.
shape_bad = ["unknown_top_key", "missing_version", "wrong_version", "not_an_object", "unknown_field_key",
             "unknown_struct_key", "bad_pack", "empty_struct", "two_kind_keys", "no_kind_key", "bad_dir",
             "count_negative", "array_without_count", "missing_returns", "bool_bad_size", "bool_no_true",
             "string_bad_encoding", "callback_no_scope", "interface_bad_iid", "class_no_threading",
             "library_empty_load", "library_unknown_os", "constant_object", "sentinel_float",
             "enum_no_underlying", "versioned_symbol_empty",
             "const_out", "const_inout", "const_not_bool"]
passed = failed = 0
for path in good:
    with open(path) as f:
        doc = json.load(f)
    errors = list(validator.iter_errors(doc))
    if errors:
        failed += 1
        print(f"FAIL {os.path.relpath(path, root)}: {errors[0].json_path}: {errors[0].message}")
    else:
        passed += 1
for name in shape_bad:
    path = os.path.join(root, "tests/typemaps/bad", name + ".json")
    with open(path) as f:
        doc = json.load(f)
    if validator.is_valid(doc):
        failed += 1
        print(f"FAIL {name}.json: the schema accepts it")
    else:
        passed += 1
print(f"schema: {len(good)} valid typemaps, {len(shape_bad)} malformed ones")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or passed == 0 else 0)
