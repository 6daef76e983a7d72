import type { Runtime, Status } from '../api';
import { mib } from '../format';

export function StatusBadge({ status, error }: { status: Status; error?: string | null }) {
  return (
    <span class={`badge badge-${status}`} title={error ?? undefined}>
      <span class="dot" aria-hidden="true" />
      {status}
    </span>
  );
}

/** "used / limit" with a small bar. */
export function MemoryBar({ r }: { r: Runtime }) {
  const limit = r.resources.limits.memory_mib;
  const used = r.resources.current?.memory_mib_used;
  const pct = used != null && limit > 0 ? Math.min(100, (used / limit) * 100) : 0;
  const level = pct > 90 ? 'hot' : pct > 70 ? 'warm' : 'ok';
  return (
    <div class="membar">
      <div class="membar-text">
        <span class="num">{used != null ? mib(used) : '—'}</span>
        <span class="muted"> / {mib(limit)}</span>
      </div>
      <div
        class="bar"
        role="img"
        aria-label={used != null ? `${pct.toFixed(0)}% of the memory limit in use` : 'no usage data'}
      >
        <div class={`bar-fill bar-${level}`} style={{ width: `${pct}%` }} />
      </div>
    </div>
  );
}

export function Urls({ r }: { r: Runtime }) {
  if (!r.publish.length) return <span class="muted">—</span>;
  return (
    <ul class="urls">
      {r.publish.map((p) => (
        <li key={p.url}>
          <span class="port-pill" title={`port ${p.port} in the runtime, over ${p.protocol}`}>
            {p.port}
          </span>
          <a href={p.url} target="_blank" rel="noopener noreferrer" title={p.url}>
            {p.url.replace(/^https?:\/\//, '')}
          </a>
        </li>
      ))}
    </ul>
  );
}

export function Spinner({ label = 'Loading…' }: { label?: string }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" /> {label}
    </p>
  );
}
