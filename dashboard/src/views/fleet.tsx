import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, STATUSES, type Status } from '../api';
import { age, cpus } from '../format';
import { usePoll } from '../hooks';
import { MemoryBar, Spinner, StatusBadge, Urls } from './common';

const FILTER_KEY = 'runta.fleet.filter';

export function Fleet() {
  const { data, error, loading } = usePoll(api.listAll, 2000, []);
  const saved = JSON.parse(sessionStorage.getItem(FILTER_KEY) ?? '{}');
  const [status, setStatus] = useState<'all' | Status>(saved.status ?? 'all');
  const [query, setQuery] = useState<string>(saved.query ?? '');
  useEffect(() => {
    document.title = 'Runtimes · Runta';
  }, []);
  useEffect(() => {
    sessionStorage.setItem(FILTER_KEY, JSON.stringify({ status, query }));
  }, [status, query]);

  const counts = useMemo(() => {
    const c = new Map<Status, number>();
    for (const r of data ?? []) c.set(r.status, (c.get(r.status) ?? 0) + 1);
    return c;
  }, [data]);
  const q = query.trim().toLowerCase();
  const rows = (data ?? [])
    .filter((r) => status === 'all' || r.status === status)
    .filter((r) => !q || r.name.includes(q) || r.id.startsWith(q))
    .sort((a, b) => a.name.localeCompare(b.name));
  const now = Date.now();

  return (
    <section aria-labelledby="fleet-title">
      <div class="page-head">
        <div>
          <h1 id="fleet-title">Runtimes</h1>
          <p class="muted">
            {data ? `${data.length} in total · ${counts.get('running') ?? 0} running` : 'Isolated runtimes of this tenant'}
            <span class="live" title="Refreshes every 2 seconds">
              <span class="live-dot" aria-hidden="true" /> live
            </span>
          </p>
        </div>
      </div>

      <div class="toolbar">
        <div class="chips" role="group" aria-label="Filter by status">
          <button
            type="button"
            class="chip"
            aria-pressed={status === 'all'}
            onClick={() => setStatus('all')}
          >
            All <span class="chip-count">{data?.length ?? 0}</span>
          </button>
          {STATUSES.filter((s) => counts.get(s) || s === status || s === 'running' || s === 'paused' || s === 'shutdown').map(
            (s) => (
              <button
                type="button"
                key={s}
                class="chip"
                aria-pressed={status === s}
                onClick={() => setStatus(s)}
              >
                {s} <span class="chip-count">{counts.get(s) ?? 0}</span>
              </button>
            ),
          )}
        </div>
        <div class="search">
          <label for="fleet-search" class="sr-only">
            Filter by name
          </label>
          <input
            id="fleet-search"
            type="search"
            placeholder="Filter by name or id…"
            value={query}
            onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
          />
        </div>
      </div>

      {error && (
        <p class="alert" role="alert">
          Could not refresh the list: {error.message}
        </p>
      )}
      {loading && !data ? (
        <Spinner />
      ) : data && data.length === 0 ? (
        <div class="empty card">
          <h2>No runtimes yet</h2>
          <p class="muted">A runtime is an isolated Linux environment with its own filesystem, processes and network.</p>
          <a href="#/new" class="btn btn-primary">
            Create your first runtime
          </a>
        </div>
      ) : (
        <div class="card table-card">
          <table class="fleet">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Image</th>
                <th scope="col" class="r">vCPUs</th>
                <th scope="col">Memory used / limit</th>
                <th scope="col">Age</th>
                <th scope="col">Published</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} data-runtime={r.name}>
                  <td data-label="Name">
                    <div>
                      <a class="rt-name" href={`#/runtimes/${encodeURIComponent(r.name)}`}>
                        {r.name}
                      </a>
                      <div class="mono muted small">{r.id.slice(0, 8)}</div>
                    </div>
                  </td>
                  <td data-label="Status">
                    <div>
                      <StatusBadge status={r.status} error={r.error} />
                    </div>
                  </td>
                  <td data-label="Image" class="mono">
                    {r.image}
                  </td>
                  <td data-label="vCPUs" class="r num">
                    {cpus(r.resources.requests.vcpus)}
                  </td>
                  <td data-label="Memory">
                    <MemoryBar r={r} />
                  </td>
                  <td data-label="Age" title={r.created_at}>
                    {age(r.created_at, now)}
                  </td>
                  <td data-label="Published">
                    <Urls r={r} />
                  </td>
                </tr>
              ))}
              {rows.length === 0 && (
                <tr>
                  <td colSpan={7} class="muted center">
                    No runtime matches this filter.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
