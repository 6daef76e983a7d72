import { useEffect, useRef } from 'preact/hooks';
import { api, holdsCapacity, STATUSES, type Runtime } from '../api';
import { Sparkline } from '../chart';
import { cpus, mib, seconds } from '../format';
import { usePoll } from '../hooks';
import { Spinner, StatusBadge } from './common';

const MAX_SAMPLES = 60;

export function Usage() {
  const { data, error, loading } = usePoll(api.listAll, 3000, []);
  const seen = useRef<Runtime[] | undefined>(undefined);
  const prev = useRef<{ t: number; cpu: Map<string, number> } | null>(null);
  const samples = useRef<{ cpu: number | null; mem: number }[]>([]);
  useEffect(() => {
    document.title = 'Usage · Runta';
  }, []);

  if (data && data !== seen.current) {
    seen.current = data;
    const now = performance.now();
    const cpuNow = new Map(data.map((r) => [r.id, r.resources.current?.cpu_seconds ?? 0]));
    let rate: number | null = null;
    if (prev.current) {
      const dt = (now - prev.current.t) / 1000;
      let d = 0;
      for (const [id, c] of cpuNow) d += Math.max(0, c - (prev.current.cpu.get(id) ?? c));
      rate = dt > 0 ? (d / dt) * 100 : null;
    }
    prev.current = { t: now, cpu: cpuNow };
    const mem = data.reduce((a, r) => a + (r.resources.current?.memory_mib_used ?? 0), 0);
    samples.current = [...samples.current, { cpu: rate, mem }].slice(-MAX_SAMPLES);
  }

  if (!data) return loading ? <Spinner /> : <p class="alert" role="alert">{error?.message}</p>;

  const holding = data.filter((r) => holdsCapacity(r.status));
  const vcpus = holding.reduce((a, r) => a + r.resources.requests.vcpus, 0);
  const memReserved = holding.reduce((a, r) => a + r.resources.limits.memory_mib, 0);
  const memUsed = data.reduce((a, r) => a + (r.resources.current?.memory_mib_used ?? 0), 0);
  const cpuTotal = data.reduce((a, r) => a + (r.resources.current?.cpu_seconds ?? 0), 0);
  const published = data.reduce((a, r) => a + r.publish.length, 0);
  const byStatus = STATUSES.map((s) => [s, data.filter((r) => r.status === s).length] as const).filter(([, n]) => n);
  const rows = [...data].sort(
    (a, b) => (b.resources.current?.memory_mib_used ?? 0) - (a.resources.current?.memory_mib_used ?? 0),
  );
  const maxUsed = Math.max(1, ...rows.map((r) => r.resources.current?.memory_mib_used ?? 0));

  return (
    <section aria-labelledby="usage-page-title">
      <div class="page-head">
        <div>
          <h1 id="usage-page-title">Usage</h1>
          <p class="muted">Totals across every runtime of this tenant, refreshed every 3 seconds.</p>
        </div>
      </div>
      {error && (
        <p class="alert" role="alert">
          Could not refresh: {error.message}
        </p>
      )}
      <div class="stats">
        <div class="stat card">
          <div class="stat-label">Runtimes</div>
          <div class="stat-value num">{data.length}</div>
          <div class="stat-sub">
            {byStatus.length ? byStatus.map(([s, n]) => `${n} ${s}`).join(' · ') : 'none yet'}
          </div>
        </div>
        <div class="stat card">
          <div class="stat-label">vCPUs reserved</div>
          <div class="stat-value num">{cpus(vcpus)}</div>
          <div class="stat-sub">by {holding.length} active runtime{holding.length === 1 ? '' : 's'}</div>
        </div>
        <div class="stat card">
          <div class="stat-label">Memory in use</div>
          <div class="stat-value num">{mib(memUsed)}</div>
          <div class="stat-sub">of {mib(memReserved)} reserved (limits)</div>
        </div>
        <div class="stat card">
          <div class="stat-label">CPU time</div>
          <div class="stat-value num">{seconds(cpuTotal)}</div>
          <div class="stat-sub">
            since boot · {published} published port{published === 1 ? '' : 's'}
          </div>
        </div>
      </div>

      <section class="card" aria-labelledby="fleet-trend">
        <div class="card-head">
          <h2 id="fleet-trend">Fleet trend</h2>
          <span class="muted small">sampled while this page is open</span>
        </div>
        <div class="sparks sparks-2">
          <Sparkline
            points={MAX_SAMPLES}
            s={{
              label: 'CPU (all runtimes, % of one core)',
              values: samples.current.map((s) => s.cpu),
              max: Math.max(100, ...samples.current.map((s) => s.cpu ?? 0)),
              format: (v) => `${v.toFixed(v < 10 ? 1 : 0)}%`,
              color: '#3b5bdb',
            }}
          />
          <Sparkline
            points={MAX_SAMPLES}
            s={{
              label: 'Memory in use',
              values: samples.current.map((s) => s.mem),
              max: Math.max(memReserved, 1),
              format: (v) => mib(v),
              color: '#0c8599',
            }}
          />
        </div>
      </section>

      <section class="card table-card" aria-labelledby="per-rt">
        <div class="card-head">
          <h2 id="per-rt">By runtime</h2>
        </div>
        <table class="fleet">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col" class="r">vCPUs</th>
              <th scope="col">Memory in use</th>
              <th scope="col" class="r">Limit</th>
              <th scope="col" class="r">CPU time</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => {
              const used = r.resources.current?.memory_mib_used;
              return (
                <tr key={r.id}>
                  <td data-label="Name">
                    <a class="rt-name" href={`#/runtimes/${encodeURIComponent(r.name)}`}>
                      {r.name}
                    </a>
                  </td>
                  <td data-label="Status">
                    <StatusBadge status={r.status} />
                  </td>
                  <td data-label="vCPUs" class="r num">
                    {cpus(r.resources.requests.vcpus)}
                  </td>
                  <td data-label="Memory in use">
                    <div class="hbar">
                      <div class="bar" aria-hidden="true">
                        <div class="bar-fill bar-ok" style={{ width: `${((used ?? 0) / maxUsed) * 100}%` }} />
                      </div>
                      <span class="num">{used != null ? mib(used) : '—'}</span>
                    </div>
                  </td>
                  <td data-label="Limit" class="r num">
                    {mib(r.resources.limits.memory_mib)}
                  </td>
                  <td data-label="CPU time" class="r num">
                    {r.resources.current?.cpu_seconds != null ? seconds(r.resources.current.cpu_seconds) : '—'}
                  </td>
                </tr>
              );
            })}
            {rows.length === 0 && (
              <tr>
                <td colSpan={6} class="muted center">
                  No runtimes yet.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </section>
    </section>
  );
}
