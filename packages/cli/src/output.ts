import { SailError } from "@sail/sdk";

/** A plain aligned table for humans; `--json` prints the data instead. */
export function printTable(rows: Array<Record<string, string | number | null | undefined>>, columns: string[]): void {
  if (rows.length === 0) {
    console.log("(none)");
    return;
  }
  const cells = rows.map((row) => columns.map((c) => String(row[c] ?? "-")));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => v.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  console.log(line(columns.map((c) => c.toUpperCase())));
  for (const row of cells) console.log(line(row));
}

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** Errors end the command with exit code 1 and `sail: CODE: message` on stderr. */
export function failWith(err: unknown): never {
  if (err instanceof SailError) {
    process.stderr.write(`sail: ${err.code}: ${err.message}\n`);
  } else {
    process.stderr.write(`sail: ${(err as Error)?.message ?? String(err)}\n`);
  }
  process.exit(1);
}
