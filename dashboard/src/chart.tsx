// A tiny SVG line chart for client-side usage samples (no chart library).

export interface Series {
  label: string;
  values: (number | null)[];
  max: number;
  format: (v: number) => string;
  color: string;
}

export function Sparkline({ s, points }: { s: Series; points: number }) {
  const W = 300;
  const H = 64;
  const n = Math.max(points, 2);
  const x = (i: number) => (i / (n - 1)) * W;
  const y = (v: number) => H - Math.min(1, Math.max(0, v / (s.max || 1))) * (H - 4) - 2;
  // Right-align: the newest sample sits at the right edge.
  const offset = n - s.values.length;
  const segs: string[] = [];
  let cur: string[] = [];
  s.values.forEach((v, i) => {
    if (v == null) {
      if (cur.length) segs.push(cur.join(' '));
      cur = [];
    } else cur.push(`${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`);
  });
  if (cur.length) segs.push(cur.join(' '));
  const last = [...s.values].reverse().find((v) => v != null) ?? null;
  const peak = Math.max(0, ...s.values.filter((v): v is number => v != null));
  return (
    <figure class="spark">
      <figcaption>
        <span class="spark-label">{s.label}</span>
        <span class="spark-value num">{last == null ? '—' : s.format(last)}</span>
      </figcaption>
      <svg
        viewBox={`0 0 ${W} ${H}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={`${s.label}: now ${last == null ? 'unknown' : s.format(last)}, peak ${s.format(peak)} over the last ${s.values.length} samples`}
      >
        <line x1="0" x2={W} y1={H / 2} y2={H / 2} class="grid" vector-effect="non-scaling-stroke" />
        {segs.map((pts, i) => {
          const first = pts.split(' ')[0].split(',')[0];
          const lastX = pts.split(' ').slice(-1)[0].split(',')[0];
          return (
            <g key={i}>
              <polygon points={`${first},${H} ${pts} ${lastX},${H}`} fill={s.color} fill-opacity="0.12" />
              <polyline
                points={pts}
                fill="none"
                stroke={s.color}
                stroke-width="2"
                vector-effect="non-scaling-stroke"
                stroke-linejoin="round"
              />
            </g>
          );
        })}
      </svg>
      <div class="spark-axis muted small">
        <span>scale 0 – {s.format(s.max)}</span>
        <span>now</span>
      </div>
    </figure>
  );
}
