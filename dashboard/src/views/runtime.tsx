import { useEffect, useRef, useState } from 'preact/hooks';
import { allowedActions, api, ApiError, type ExecResult, type Runtime } from '../api';
import { Sparkline } from '../chart';
import { age, cpus, dateTime, mib, time } from '../format';
import { navigate, usePoll } from '../hooks';
import { TerminalPanel } from '../terminal';
import { toast } from '../toast';
import { Spinner, StatusBadge, Urls } from './common';
import { EgressPanel } from './egress';
import { BindingsPanel } from './secrets';

interface Sample { t: number; cpu: number | null; mem: number | null }
const MAX_SAMPLES = 90;

export function RuntimePage({ name }: { name: string }) {
  const rt = usePoll(() => api.get(name), 2000, [name]);
  const r = rt.data;
  const samples = useRef<Sample[]>([]);
  const last = useRef<{ t: number; cpu: number } | null>(null);

  useEffect(() => {
    document.title = `${name} · Runta`;
  }, [name]);

  // Sample current usage on every refresh; CPU is the rate between two samples.
  const seen = useRef<Runtime | undefined>(undefined);
  if (r && r !== seen.current) {
    seen.current = r;
    const now = performance.now();
    // Usage is null while the runtime is not up (resources.current is always there).
    const cur = r.resources.current;
    const cpuNow = cur?.cpu_seconds ?? null;
    let cpu: number | null = null;
    if (cpuNow !== null && last.current && now > last.current.t) {
      const dt = (now - last.current.t) / 1000;
      cpu = Math.max(0, ((cpuNow - last.current.cpu) / dt) * 100);
    }
    last.current = cpuNow !== null ? { t: now, cpu: cpuNow } : null;
    samples.current = [...samples.current, { t: now, cpu, mem: cur ? cur.memory_mib_used : null }].slice(-MAX_SAMPLES);
  }

  if (rt.error && rt.error.status === 404) {
    return (
      <div class="empty card">
        <h1>No runtime named “{name}”</h1>
        <p class="muted">It may have been deleted.</p>
        <a class="btn btn-secondary" href="#/">
          Back to runtimes
        </a>
      </div>
    );
  }
  if (!r) return rt.error ? <p class="alert" role="alert">{rt.error.message}</p> : <Spinner />;

  return (
    <div>
      <div class="page-head">
        <div>
          <p class="crumbs">
            <a href="#/">Runtimes</a> <span aria-hidden="true">/</span> {r.name}
          </p>
          <h1 class="title-row">
            <span>{r.name}</span> <StatusBadge status={r.status} error={r.error} />
          </h1>
          <p class="muted mono small">{r.id}</p>
        </div>
        <Lifecycle r={r} onChange={rt.refresh} />
      </div>
      {r.error && (
        <p class="alert" role="alert">
          {r.error}
        </p>
      )}
      {rt.error && (
        <p class="alert" role="alert">
          Could not refresh: {rt.error.message}
        </p>
      )}
      <div class="detail-grid">
        <div class="detail-main">
          <TerminalPanel
            runtimeId={r.id}
            canConnect={r.status === 'running' || r.status === 'suspended'}
            hint={
              r.status === 'paused'
                ? 'The runtime is paused: resume it to open a terminal.'
                : r.status === 'creating'
                  ? 'The runtime is starting…'
                  : 'Boot the runtime to open a terminal.'
            }
          />
          <CommandBox r={r} />
          <EgressPanel r={r} onChange={rt.refresh} />
          <BindingsPanel r={r} />
          <Events r={r} />
        </div>
        <aside class="detail-side">
          <Overview r={r} />
          <UsageChart r={r} samples={samples.current} />
          <Resize r={r} onChange={rt.refresh} />
        </aside>
      </div>
    </div>
  );
}

function Lifecycle({ r, onChange }: { r: Runtime; onChange: () => void }) {
  const [busy, setBusy] = useState<string | null>(null);
  const dialog = useRef<HTMLDialogElement>(null);
  const can = allowedActions(r);
  const act = async (verb: 'start' | 'stop' | 'pause' | 'resume', label: string) => {
    setBusy(verb);
    try {
      await api.action(r.id, verb);
      toast(`${r.name}: ${label}`);
    } catch (e) {
      toast(`${r.name}: ${e instanceof Error ? e.message : String(e)}`, 'error');
    } finally {
      setBusy(null);
      onChange();
    }
  };
  const del = async () => {
    dialog.current?.close();
    setBusy('delete');
    try {
      await api.remove(r.id);
      toast(`Deleted ${r.name}`);
      navigate('/');
    } catch (e) {
      toast(`${r.name}: ${e instanceof Error ? e.message : String(e)}`, 'error');
      setBusy(null);
      onChange();
    }
  };
  const b = (show: boolean, verb: 'start' | 'stop' | 'pause' | 'resume', label: string, done: string, cls = 'btn-secondary') =>
    show && (
      <button type="button" class={`btn ${cls}`} disabled={busy !== null} onClick={() => act(verb, done)}>
        {busy === verb ? `${label}…` : label}
      </button>
    );
  return (
    <div class="actions" role="group" aria-label="Lifecycle">
      {b(can.boot, 'start', 'Boot', 'booted', 'btn-primary')}
      {b(can.resume, 'resume', 'Resume', 'resumed', 'btn-primary')}
      {b(can.pause, 'pause', 'Pause', 'paused')}
      {b(can.stop, 'stop', 'Shut down', 'shut down')}
      {can.del && (
        <button
          type="button"
          class="btn btn-danger"
          disabled={busy !== null}
          onClick={() => dialog.current?.showModal()}
        >
          {busy === 'delete' ? 'Deleting…' : 'Delete'}
        </button>
      )}
      <dialog ref={dialog} class="dialog" aria-labelledby="del-title" aria-describedby="del-desc">
        <form method="dialog">
          <h2 id="del-title">Delete {r.name}?</h2>
          <p id="del-desc">
            Its processes are killed and its files removed. This cannot be undone.
          </p>
          <div class="form-actions">
            <button type="submit" class="btn btn-secondary" autofocus>
              Cancel
            </button>
            <button type="button" class="btn btn-danger" onClick={del}>
              Delete runtime
            </button>
          </div>
        </form>
      </dialog>
    </div>
  );
}

function Overview({ r }: { r: Runtime }) {
  const envKeys = Object.keys(r.env);
  return (
    <section class="card" aria-labelledby="ov-title">
      <div class="card-head">
        <h2 id="ov-title">Overview</h2>
      </div>
      <dl class="kv">
        <dt>Image</dt>
        <dd class="mono">{r.image}</dd>
        <dt>vCPUs</dt>
        <dd class="num">{cpus(r.resources.requests.vcpus)}</dd>
        <dt>Memory</dt>
        <dd class="num">
          {r.resources.current?.memory_mib_used != null ? mib(r.resources.current.memory_mib_used) : '—'} used of {mib(r.resources.limits.memory_mib)}
        </dd>
        <dt>CPU time</dt>
        <dd class="num">
          {r.resources.current?.cpu_seconds != null ? `${r.resources.current.cpu_seconds.toFixed(2)} s` : '—'}
        </dd>
        <dt>Address</dt>
        <dd class="mono">{r.ip ?? '—'}</dd>
        <dt>Created</dt>
        <dd title={r.created_at}>
          {dateTime(r.created_at)} <span class="muted">({age(r.created_at)} ago)</span>
        </dd>
        <dt>Booted</dt>
        <dd>{dateTime(r.started_at)}</dd>
        <dt>Idle timeout</dt>
        <dd>
          {r.idle_timeout_secs
            ? `${r.idle_timeout_secs} s${r.idle_policy?.mode === 'suspend_only' || r.idle_wakeup === false ? ', wakes only on start or resume' : ', wakes on a request'}`
            : 'never'}
        </dd>
        <dt>Published</dt>
        <dd>
          <Urls r={r} />
        </dd>
        <dt>Env</dt>
        <dd class="mono small">{envKeys.length ? envKeys.join(', ') : <span class="muted">—</span>}</dd>
      </dl>
    </section>
  );
}

function UsageChart({ r, samples }: { r: Runtime; samples: Sample[] }) {
  const vcpus = r.resources.requests.vcpus;
  const cpuMax = Math.max(100 * vcpus, ...samples.map((s) => s.cpu ?? 0));
  return (
    <section class="card" aria-labelledby="usage-title">
      <div class="card-head">
        <h2 id="usage-title">Usage</h2>
        <span class="muted small">sampled every 2 s while this page is open</span>
      </div>
      <div class="sparks">
        <Sparkline
          points={MAX_SAMPLES}
          s={{
            label: 'CPU (% of one core)',
            values: samples.map((s) => s.cpu),
            max: cpuMax,
            format: (v) => `${v.toFixed(v < 10 ? 1 : 0)}%`,
            color: '#3b5bdb',
          }}
        />
        <Sparkline
          points={MAX_SAMPLES}
          s={{
            label: 'Memory',
            values: samples.map((s) => s.mem),
            max: r.resources.limits.memory_mib,
            format: (v) => mib(v),
            color: '#0c8599',
          }}
        />
      </div>
    </section>
  );
}

function Resize({ r, onChange }: { r: Runtime; onChange: () => void }) {
  const [value, setValue] = useState(String(r.resources.requests.memory_mib));
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const n = Number(value);
    if (!Number.isInteger(n)) {
      setError('Enter a whole number of MiB.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const u = await api.resizeMemory(r.id, n);
      toast(`${r.name}: memory is now ${mib(u.resources.limits.memory_mib)}`);
      setValue(String(u.resources.requests.memory_mib));
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(0, 'internal', String(err));
      setError(e.field && e.message.startsWith(`${e.field}: `) ? e.message.slice(e.field.length + 2) : e.message);
    } finally {
      setBusy(false);
      onChange();
    }
  };
  const disabled = r.status === 'creating' || r.status === 'deleting';
  return (
    <section class="card" aria-labelledby="resize-title">
      <div class="card-head">
        <h2 id="resize-title">Resize memory</h2>
      </div>
      <form class="inline-form" onSubmit={submit} noValidate>
        <label for="resize-mib">Memory (MiB)</label>
        <div class="row">
          <input
            id="resize-mib"
            inputMode="numeric"
            value={value}
            disabled={disabled}
            aria-invalid={error ? 'true' : undefined}
            aria-describedby={error ? 'resize-error' : 'resize-help'}
            onInput={(e) => setValue((e.target as HTMLInputElement).value)}
          />
          <button type="submit" class="btn btn-secondary" disabled={busy || disabled}>
            {busy ? 'Applying…' : 'Apply'}
          </button>
        </div>
        {error ? (
          <p id="resize-error" class="field-error" role="alert">
            {error}
          </p>
        ) : (
          <p id="resize-help" class="hint">
            Applied live, without a restart. Currently {mib(r.resources.requests.memory_mib)}.
          </p>
        )}
      </form>
    </section>
  );
}

function CommandBox({ r }: { r: Runtime }) {
  const [cmd, setCmd] = useState('');
  const [result, setResult] = useState<{ cmd: string; res?: ExecResult; error?: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const run = async (e: Event) => {
    e.preventDefault();
    const c = cmd.trim();
    if (!c) return;
    setBusy(true);
    try {
      setResult({ cmd: c, res: await api.exec(r.id, c) });
    } catch (err) {
      setResult({ cmd: c, error: err instanceof Error ? err.message : String(err) });
    } finally {
      setBusy(false);
    }
  };
  const res = result?.res;
  return (
    <section class="card" aria-labelledby="cmd-title">
      <div class="card-head">
        <h2 id="cmd-title">Run a command</h2>
        <span class="muted small">buffered, via /bin/sh -c</span>
      </div>
      <form class="cmd-form" onSubmit={run}>
        <label for="cmd" class="sr-only">
          Command
        </label>
        <span class="prompt mono" aria-hidden="true">
          $
        </span>
        <input
          id="cmd"
          class="mono"
          placeholder="uname -a"
          value={cmd}
          spellcheck={false}
          autocomplete="off"
          onInput={(e) => setCmd((e.target as HTMLInputElement).value)}
        />
        <button type="submit" class="btn btn-primary" disabled={busy || !cmd.trim()}>
          {busy ? 'Running…' : 'Run'}
        </button>
      </form>
      {result && (
        <div class="cmd-out" aria-live="polite" data-testid="exec-result">
          {result.error ? (
            <p class="field-error">{result.error}</p>
          ) : (
            res && (
              <>
                <p class="small">
                  <span class={`exit ${res.exit_code === 0 ? 'exit-ok' : 'exit-bad'}`}>exit {res.exit_code}</span>
                  <span class="muted">
                    {' '}
                    · {res.duration_ms} ms{res.timed_out ? ' · timed out' : ''}
                    {res.stdout_truncated || res.stderr_truncated ? ' · output truncated' : ''}
                  </span>
                </p>
                {res.stdout && <pre class="out">{res.stdout}</pre>}
                {res.stderr && <pre class="out out-err">{res.stderr}</pre>}
                {!res.stdout && !res.stderr && <p class="muted small">(no output)</p>}
              </>
            )
          )}
        </div>
      )}
    </section>
  );
}

function Events({ r }: { r: Runtime }) {
  const ev = usePoll(() => api.events(r.id), 5000, [r.id, r.revision, r.status]);
  const items = [...(ev.data ?? [])].reverse();
  return (
    <section class="card" aria-labelledby="ev-title">
      <div class="card-head">
        <h2 id="ev-title">Events</h2>
      </div>
      {items.length === 0 ? (
        <p class="muted pad">{ev.loading ? 'Loading…' : 'No events yet.'}</p>
      ) : (
        <ol class="timeline">
          {items.map((e) => (
            <li key={e.id} class={`ev ev-${e.type}`}>
              <time dateTime={e.created_at} title={dateTime(e.created_at)}>
                {time(e.created_at)}
              </time>
              <span class="ev-type">{e.type.replace(/_/g, ' ')}</span>
              {e.message && <span class="ev-msg muted">{e.message}</span>}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
