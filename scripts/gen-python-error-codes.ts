/**
 * The Python SDK's error table is generated from `@sail/protocol`'s ERROR_CODES, so the two
 * SDKs can never disagree on a code's class or status. `npm run gen:python` rewrites it;
 * test/unit/python-sdk.test.ts fails when the committed file is stale.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ERROR_CODES } from "@sail/protocol";

export const PYTHON_ERROR_CODES_PATH = fileURLToPath(new URL("../sdks/python/sail/_error_codes.py", import.meta.url));

export function renderPythonErrorCodes(): string {
  const lines = Object.entries(ERROR_CODES).map(([code, { status, kind }]) => `    ${JSON.stringify(code)}: (${status}, ${JSON.stringify(kind)}),`);
  return [
    '"""Every Sail error code: (HTTP status, kind). Generated from packages/protocol/src/errors.ts',
    'by `npm run gen:python`; do not edit."""',
    "",
    "from typing import Dict, Tuple",
    "",
    "ERROR_CODES: Dict[str, Tuple[int, str]] = {",
    ...lines,
    "}",
    "",
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(PYTHON_ERROR_CODES_PATH, renderPythonErrorCodes());
  console.log(`wrote ${PYTHON_ERROR_CODES_PATH}`);
}
