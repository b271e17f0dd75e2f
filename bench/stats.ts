/** Percentiles over samples in milliseconds. */
export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

export async function timeMs(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

export function summary(label: string, samples: number[]): { label: string; p50: number; p95: number; n: number } {
  return { label, p50: percentile(samples, 50), p95: percentile(samples, 95), n: samples.length };
}

export function printRows(rows: Array<ReturnType<typeof summary>>): void {
  for (const r of rows) console.log(`${r.label.padEnd(34)} p50 ${r.p50.toFixed(1).padStart(7)} ms   p95 ${r.p95.toFixed(1).padStart(7)} ms   (n=${r.n})`);
}
