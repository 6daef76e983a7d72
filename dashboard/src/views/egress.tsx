// A runtime's egress: its outbound policy (shown and edited, applied live with
// PATCH) and its recent audits, polled while the page is open (docs/api.md, "Egress").
import { useState } from 'preact/hooks';
import { api, ApiError, type Audit, type EgressMode, type Runtime } from '../api';
import { dateTime, time } from '../format';
import { usePoll } from '../hooks';
import { toast } from '../toast';

type Choice = 'open' | EgressMode;

function choiceOf(r: Runtime): Choice {
  const p = r.egress_policy;
  if (!p) return 'open';
  if (p.mode === 'denylist' && p.denied_hosts.length === 0 && p.allowed_hosts.length === 0) return 'open';
  return p.mode;
}

/** One host a line (commas and spaces also separate); blank lines dropped. */
function lines(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

const SUMMARY: Record<Choice, string> = {
  open: 'Open: nothing is filtered.',
  allowlist: 'Allowlist: only the allowed hosts are reachable.',
  denylist: 'Denylist: everything but the denied hosts is reachable.',
};

export function EgressPanel({ r, onChange }: { r: Runtime; onChange: () => void }) {
  const [mode, setMode] = useState<Choice>(choiceOf(r));
  const [allowed, setAllowed] = useState((r.egress_policy?.allowed_hosts ?? []).join('\n'));
  const [denied, setDenied] = useState((r.egress_policy?.denied_hosts ?? []).join('\n'));
  const [error, setError] = useState<{ field?: string; message: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const current = choiceOf(r);

  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const policy =
      mode === 'open'
        ? { mode: 'denylist' as const, allowed_hosts: [], denied_hosts: [] }
        : { mode, allowed_hosts: lines(allowed), denied_hosts: lines(denied) };
    try {
      const u = await api.setEgress(r.id, policy);
      const p = u.egress_policy;
      setAllowed((p?.allowed_hosts ?? []).join('\n'));
      setDenied((p?.denied_hosts ?? []).join('\n'));
      setMode(choiceOf(u));
      toast(`${r.name}: egress ${choiceOf(u)}`);
    } catch (err) {
      const x = err instanceof ApiError ? err : new ApiError(0, 'internal', String(err));
      setError({ field: x.field, message: x.message });
    } finally {
      setBusy(false);
      onChange();
    }
  };

  const errFor = (list: 'allowed_hosts' | 'denied_hosts') =>
    error && (error.field?.includes(list) || (!error.field && error.message.includes(list)));
  const disabled = r.status === 'deleting';
  return (
    <section class="card" aria-labelledby="eg-title" data-testid="egress">
      <div class="card-head">
        <h2 id="eg-title">Egress</h2>
        <span class="muted small" data-testid="egress-summary">
          {SUMMARY[current]}
        </span>
      </div>
      <form class="inline-form egress-form" onSubmit={save} noValidate>
        <fieldset class="egress-modes" disabled={disabled}>
          <legend>Outbound traffic</legend>
          {(['open', 'allowlist', 'denylist'] as Choice[]).map((c) => (
            <label key={c} class="radio">
              <input type="radio" name="egress-mode" value={c} checked={mode === c} onChange={() => setMode(c)} />
              {c === 'open' ? 'Open' : c === 'allowlist' ? 'Allowlist' : 'Denylist'}
            </label>
          ))}
        </fieldset>
        {mode !== 'open' && (
          <div class="egress-lists">
            <div>
              <label for="eg-allowed">Allowed hosts</label>
              <textarea
                id="eg-allowed"
                class="mono"
                rows={4}
                spellcheck={false}
                placeholder={'pypi.org\n*.pythonhosted.org\n10.1.0.0/16'}
                value={allowed}
                disabled={disabled}
                aria-invalid={errFor('allowed_hosts') ? 'true' : undefined}
                aria-describedby={errFor('allowed_hosts') ? 'eg-error' : 'eg-help'}
                onInput={(e) => setAllowed((e.target as HTMLTextAreaElement).value)}
              />
            </div>
            <div>
              <label for="eg-denied">Denied hosts</label>
              <textarea
                id="eg-denied"
                class="mono"
                rows={4}
                spellcheck={false}
                placeholder="tracker.example.com"
                value={denied}
                disabled={disabled}
                aria-invalid={errFor('denied_hosts') ? 'true' : undefined}
                aria-describedby={errFor('denied_hosts') ? 'eg-error' : 'eg-help'}
                onInput={(e) => setDenied((e.target as HTMLTextAreaElement).value)}
              />
            </div>
          </div>
        )}
        {error ? (
          <p id="eg-error" class="field-error" role="alert" data-error-for={error.field ?? 'egress_policy'}>
            {error.message}
          </p>
        ) : (
          <p id="eg-help" class="hint">
            One host a line: names, *.example.com (subdomains only), addresses or CIDR blocks. Applied
            live; open connections the new policy denies are cut. The host, other runtimes and metadata
            addresses are never reachable.
          </p>
        )}
        <div class="form-actions">
          <button type="submit" class="btn btn-primary" disabled={busy || disabled}>
            {busy ? 'Saving…' : 'Save policy'}
          </button>
        </div>
      </form>
      <AuditTable r={r} />
    </section>
  );
}

function detail(a: Audit): { host: string; dest: string; action: string; what: string; kind: string } {
  const e = a.payload.egress;
  const d = (e[e.kind] ?? {}) as Record<string, unknown>;
  const s = (k: string) => (typeof d[k] === 'string' ? (d[k] as string) : '');
  const action = s('action') || 'error';
  switch (e.kind) {
    case 'http_request':
      return { kind: `HTTP ${s('method')}`, host: s('host'), dest: s('path'), action, what: `${d.status ? `${d.status} ` : ''}${s('reason') || s('outcome')}` };
    case 'dns_query':
      return { kind: `DNS ${s('qtype')}`, host: s('name'), dest: ((d.answers as string[] | undefined) ?? []).join(', '), action, what: s('reason') || s('outcome') };
    case 'icmp_drop':
      return { kind: 'ICMP', host: '', dest: '', action, what: `${d.packets ?? 0} packets dropped` };
    default:
      // An error says what went wrong; a decision says why.
      return { kind: (s('transport') || 'tcp').toUpperCase(), host: s('host'), dest: s('dst_addr'), action, what: (action === 'error' && s('error')) || s('reason') || s('error') || s('outcome') };
  }
}

function AuditTable({ r }: { r: Runtime }) {
  const audits = usePoll(() => api.audits(r.id), 2000, [r.id]);
  const items = audits.data ?? [];
  return (
    <div class="audits">
      <h3 class="audits-title">
        Recent decisions <span class="muted small">live, newest first</span>
      </h3>
      {audits.error && (
        <p class="alert" role="alert">
          Could not load the audits: {audits.error.message}
        </p>
      )}
      {items.length === 0 ? (
        <p class="muted pad" data-testid="audits-empty">
          {audits.loading ? 'Loading…' : 'No outbound decisions yet.'}
        </p>
      ) : (
        <div class="audit-scroll">
          <table class="fleet audit-table" data-testid="audits">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Kind</th>
                <th scope="col">Action</th>
                <th scope="col">Host</th>
                <th scope="col">Destination</th>
                <th scope="col">Detail</th>
              </tr>
            </thead>
            <tbody>
              {items.map((a) => {
                const d = detail(a);
                const at = new Date(a.observed_unix_ms).toISOString();
                return (
                  <tr key={a.id} data-action={d.action} class={`audit-${d.action}`}>
                    <td>
                      <time dateTime={at} title={dateTime(at)}>
                        {time(at)}
                      </time>
                    </td>
                    <td class="small">{d.kind}</td>
                    <td>
                      <span class={`pill pill-${d.action}`}>{d.action}</span>
                    </td>
                    <td class="mono small">{d.host || '—'}</td>
                    <td class="mono small">{d.dest || '—'}</td>
                    <td class="small">{d.what.trim() || '—'}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
