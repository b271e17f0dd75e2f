/** A small live line chart (SVG): the last samples of one rate, scaled to its own maximum. */
export function Sparkline({ values, label, format }: { values: number[]; label: string; format: (n: number) => string }) {
  const width = 160;
  const height = 36;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(" ");
  const last = values[values.length - 1] ?? 0;
  return (
    <figure class="spark">
      <figcaption>
        <span>{label}</span>
        <strong>{format(last)}</strong>
      </figcaption>
      <svg viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img" aria-label={`${label}: ${format(last)}`}>
        <polyline points={points} fill="none" stroke="currentColor" stroke-width="1.5" />
      </svg>
    </figure>
  );
}
