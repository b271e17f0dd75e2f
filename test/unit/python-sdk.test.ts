import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { PYTHON_ERROR_CODES_PATH, renderPythonErrorCodes } from "../../scripts/gen-python-error-codes.js";

test("the Python SDK's error table is the one @sail/protocol has (regenerate with npm run gen:python)", () => {
  assert.equal(readFileSync(PYTHON_ERROR_CODES_PATH, "utf8"), renderPythonErrorCodes());
});
