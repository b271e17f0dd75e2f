/** Percentiles over samples in milliseconds. */
export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export async function timeMs(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

export function summary(label: string, samples: number[]): { label: string; p50: number; p95: number; p99: number; n: number } {
  return { label, p50: percentile(samples, 50), p95: percentile(samples, 95), p99: percentile(samples, 99), n: samples.length };
}

/** One line per row: p50 and p95, and p99 when asked (a p99 needs a few hundred samples to mean much). */
export function printRows(rows: Array<ReturnType<typeof summary>>, options: { p99?: boolean } = {}): void {
  const ms = (value: number) => `${value.toFixed(1).padStart(7)} ms`;
  for (const r of rows) console.log(`${r.label.padEnd(34)} p50 ${ms(r.p50)}   p95 ${ms(r.p95)}${options.p99 ? `   p99 ${ms(r.p99)}` : ""}   (n=${r.n})`);
}
