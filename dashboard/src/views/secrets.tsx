// Secrets (docs/api.md, "Secrets"): a tenant's credentials, which the egress
// gateway adds to a runtime's requests for the hosts they are bound to. A value
// is entered once and shown never: it lives in this page's state only until the
// request that sends it (in the body, never a URL or browser storage), and the
// field is cleared whatever the answer. The runtime page lists its bindings.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, type Injection, type Runtime, type Secret, type SecretBinding } from '../api';
import { age, dateTime } from '../format';
import { usePoll } from '../hooks';
import { toast } from '../toast';
import { Spinner } from './common';

/** "name: … is not valid" → "… is not valid" (the field is shown already). */
function stripPath(message: string, path?: string) {
  return path && message.startsWith(`${path}: `) ? message.slice(path.length + 2) : message;
}

function asApiError(err: unknown): ApiError {
  return err instanceof ApiError ? err : new ApiError(0, 'internal', String(err));
}

type SecretField = 'name' | 'value' | 'cache_ttl_secs';

function secretField(e: ApiError): SecretField | null {
  const f = e.field ?? '';
  if (f === 'name' || e.code === 'already_exists') return 'name';
  if (f === 'value') return 'value';
  if (f.startsWith('cache_ttl')) return 'cache_ttl_secs';
  return null;
}

/** A TTL field: empty = the daemon's default; else whole seconds. */
function ttlOf(text: string): { ok: true; v?: number } | { ok: false } {
  const t = text.trim();
  if (t === '') return { ok: true };
  const n = Number(t);
  return Number.isInteger(n) && n >= 0 ? { ok: true, v: n } : { ok: false };
}

function ttlText(n: number): string {
  return n === 0 ? 'none (opened per request)' : `${n} s`;
}

export function SecretsPage() {
  const list = usePoll(() => api.secrets(), 5000, []);
  useEffect(() => {
    document.title = 'Secrets · Runta';
  }, []);
  const items = list.data ?? [];
  return (
    <section aria-labelledby="secrets-title">
      <div class="page-head">
        <div>
          <h1 id="secrets-title">Secrets</h1>
          <p class="muted">
            Credentials the egress gateway adds to a runtime's requests for the hosts they are bound to. A value is
            write-only: it is never shown again, here or by the API.
          </p>
        </div>
      </div>
      <CreateSecret onDone={list.refresh} />
      <section class="card" aria-labelledby="secrets-list-title" data-testid="secrets">
        <div class="card-head">
          <h2 id="secrets-list-title">Your secrets</h2>
          <span class="muted small">{list.data ? `${items.length} in total` : ''}</span>
        </div>
        {list.error && (
          <p class="alert" role="alert">
            Could not load the secrets: {list.error.message}
          </p>
        )}
        {!list.data ? (
          list.loading ? <Spinner /> : null
        ) : items.length === 0 ? (
          <p class="muted pad" data-testid="secrets-empty">
            No secrets yet.
          </p>
        ) : (
          <div class="audit-scroll">
            <table class="fleet">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Stub</th>
                  <th scope="col">Cache TTL</th>
                  <th scope="col">Created</th>
                  <th scope="col" class="r">
                    <span class="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {items.map((s) => (
                  <SecretRow key={s.id} s={s} onChange={list.refresh} />
                ))}
              </tbody>
            </table>
          </div>
        )}
        <p class="hint pad">
          The stub is a placeholder, not the secret: give it to code in a runtime where a key is expected. The gateway
          replaces it for bound hosts and blocks it everywhere else.
        </p>
      </section>
    </section>
  );
}

function CreateSecret({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState('');
  const [value, setValue] = useState('');
  const [ttl, setTtl] = useState('');
  const [errors, setErrors] = useState<Partial<Record<SecretField, string>>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const form = useRef<HTMLFormElement>(null);
  const focus = (f: SecretField) =>
    requestAnimationFrame(() => form.current?.querySelector<HTMLElement>(`[data-field="${f}"]`)?.focus());

  const submit = async (e: Event) => {
    e.preventDefault();
    const t = ttlOf(ttl);
    const errs: Partial<Record<SecretField, string>> = {};
    if (!t.ok) errs.cache_ttl_secs = 'Enter whole seconds (0 to 31536000), or leave empty.';
    if (value === '') errs.value = 'Enter the value.';
    setFormError(null);
    setErrors(errs);
    const bad = (['name', 'value', 'cache_ttl_secs'] as SecretField[]).find((f) => errs[f]);
    if (bad) return focus(bad);
    const body = { name: name.trim(), value, cache_ttl_secs: t.ok ? t.v : undefined };
    // Entered once: the field forgets it now, whatever the daemon answers.
    setValue('');
    setBusy(true);
    try {
      const s = await api.createSecret(body);
      toast(`Created secret ${s.name}`);
      setName('');
      setTtl('');
      setErrors({});
      onDone();
    } catch (err) {
      const x = asApiError(err);
      const f = secretField(x);
      if (f) {
        setErrors({ [f]: stripPath(x.message, x.field) });
        focus(f);
      } else setFormError(x.message);
    } finally {
      setBusy(false);
    }
  };

  const err = (f: SecretField) =>
    errors[f] ? (
      <p id={`sec-err-${f}`} class="field-error" role="alert" data-error-for={f}>
        {errors[f]}
      </p>
    ) : null;
  const aria = (f: SecretField, help?: string) => ({
    'data-field': f,
    'aria-invalid': errors[f] ? ('true' as const) : undefined,
    'aria-describedby': errors[f] ? `sec-err-${f}` : help,
  });
  return (
    <form ref={form} class="card form" onSubmit={submit} noValidate aria-labelledby="new-secret-title">
      <h2 id="new-secret-title">New secret</h2>
      {formError && (
        <p class="alert" role="alert">
          {formError}
        </p>
      )}
      <div class="grid2">
        <div class="field">
          <label for="sec-name">Name</label>
          <input
            id="sec-name"
            value={name}
            autocomplete="off"
            spellcheck={false}
            placeholder="openai-key"
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
            {...aria('name', 'sec-help-name')}
          />
          {err('name') ?? (
            <p id="sec-help-name" class="hint">
              Letters, digits, “_”, “.” and “-”; unique among your secrets.
            </p>
          )}
        </div>
        <div class="field">
          <label for="sec-ttl">Cache TTL (seconds)</label>
          <input
            id="sec-ttl"
            inputMode="numeric"
            value={ttl}
            placeholder="default"
            onInput={(e) => setTtl((e.target as HTMLInputElement).value)}
            {...aria('cache_ttl_secs', 'sec-help-ttl')}
          />
          {err('cache_ttl_secs') ?? (
            <p id="sec-help-ttl" class="hint">
              How long the daemon may keep the value in clear after opening it; 0 opens it for each request.
            </p>
          )}
        </div>
      </div>
      <div class="field">
        <label for="sec-value">Value</label>
        <input
          id="sec-value"
          type="password"
          autocomplete="new-password"
          spellcheck={false}
          value={value}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)}
          {...aria('value', 'sec-help-value')}
        />
        {err('value') ?? (
          <p id="sec-help-value" class="hint">
            Entered once, shown never. Up to 8192 bytes, no control characters.
          </p>
        )}
      </div>
      <div class="form-actions">
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? 'Creating…' : 'Create secret'}
        </button>
      </div>
    </form>
  );
}

function SecretRow({ s, onChange }: { s: Secret; onChange: () => void }) {
  const replace = useRef<HTMLDialogElement>(null);
  const del = useRef<HTMLDialogElement>(null);
  const [value, setValue] = useState('');
  const [ttl, setTtl] = useState(String(s.cache_ttl_secs));
  const [error, setError] = useState<{ field: SecretField | null; message: string } | null>(null);
  const [busy, setBusy] = useState(false);

  const close = () => {
    setValue('');
    setError(null);
    replace.current?.close();
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    const t = ttlOf(ttl);
    if (!t.ok) return setError({ field: 'cache_ttl_secs', message: 'Enter whole seconds, or leave empty.' });
    if (value === '') return setError({ field: 'value', message: 'Enter the new value.' });
    const body = { value, cache_ttl_secs: t.v };
    setValue('');
    setBusy(true);
    try {
      await api.replaceSecret(s.id, body);
      toast(`Replaced the value of ${s.name}`);
      close();
    } catch (err) {
      const x = asApiError(err);
      setError({ field: secretField(x), message: stripPath(x.message, x.field) });
    } finally {
      setBusy(false);
      onChange();
    }
  };
  const remove = async () => {
    del.current?.close();
    setBusy(true);
    try {
      await api.deleteSecret(s.id);
      toast(`Deleted secret ${s.name}`);
    } catch (err) {
      toast(`${s.name}: ${asApiError(err).message}`, 'error');
    } finally {
      setBusy(false);
      onChange();
    }
  };
  const rid = `sec-${s.id}`;
  return (
    <tr data-secret={s.name}>
      <td>
        <strong class="mono">{s.name}</strong>
        <div class="muted mono small">{s.id}</div>
      </td>
      <td class="mono small">{s.stub}</td>
      <td class="small">{ttlText(s.cache_ttl_secs)}</td>
      <td class="small" title={dateTime(s.created_at)}>
        <time dateTime={s.created_at}>{age(s.created_at)} ago</time>
        {s.updated_at !== s.created_at && <div class="muted">value replaced {age(s.updated_at)} ago</div>}
      </td>
      <td class="r">
        <div class="actions" role="group" aria-label={`Actions for ${s.name}`}>
          <button type="button" class="btn btn-secondary btn-sm" disabled={busy} onClick={() => {
              setTtl(String(s.cache_ttl_secs));
              setError(null);
              replace.current?.showModal();
            }}>
            Replace value
          </button>
          <button type="button" class="btn btn-danger btn-sm" disabled={busy} onClick={() => del.current?.showModal()}>
            Delete
          </button>
        </div>
        <dialog ref={replace} class="dialog" aria-labelledby={`${rid}-rt`} onClose={() => setValue('')}>
          <form onSubmit={submit} noValidate>
            <h2 id={`${rid}-rt`}>Replace the value of {s.name}</h2>
            <p>Bindings use the new value from the next request. The old one is not shown.</p>
            <div class="field">
              <label for={`${rid}-value`}>New value</label>
              <input
                id={`${rid}-value`}
                type="password"
                autocomplete="new-password"
                spellcheck={false}
                value={value}
                aria-invalid={error?.field === 'value' ? 'true' : undefined}
                onInput={(e) => setValue((e.target as HTMLInputElement).value)}
              />
            </div>
            <div class="field">
              <label for={`${rid}-ttl`}>Cache TTL (seconds)</label>
              <input
                id={`${rid}-ttl`}
                inputMode="numeric"
                value={ttl}
                aria-invalid={error?.field === 'cache_ttl_secs' ? 'true' : undefined}
                onInput={(e) => setTtl((e.target as HTMLInputElement).value)}
              />
            </div>
            {error && (
              <p class="field-error" role="alert" data-error-for={error.field ?? 'secret'}>
                {error.message}
              </p>
            )}
            <div class="form-actions">
              <button type="button" class="btn btn-secondary" onClick={close}>
                Cancel
              </button>
              <button type="submit" class="btn btn-primary" disabled={busy}>
                {busy ? 'Replacing…' : 'Replace value'}
              </button>
            </div>
          </form>
        </dialog>
        <dialog ref={del} class="dialog" aria-labelledby={`${rid}-dt`} aria-describedby={`${rid}-dd`}>
          <form method="dialog">
            <h2 id={`${rid}-dt`}>Delete secret {s.name}?</h2>
            <p id={`${rid}-dd`}>
              Every binding of it goes too: no request is injected with it once this answers. This cannot be undone.
            </p>
            <div class="form-actions">
              <button type="submit" class="btn btn-secondary" autofocus>
                Cancel
              </button>
              <button type="button" class="btn btn-danger" onClick={remove}>
                Delete secret
              </button>
            </div>
          </form>
        </dialog>
      </td>
    </tr>
  );
}

// ---------------------------------------------------------------- bindings

type BindField = 'secret' | 'host' | 'path' | 'injection';

function bindField(e: ApiError): BindField | null {
  const f = e.field ?? '';
  if (f.startsWith('secret') || f.startsWith('stub_value')) return 'secret';
  if (f.startsWith('host')) return 'host';
  if (f.startsWith('path')) return 'path';
  if (f.startsWith('injection') || f.startsWith('config')) return 'injection';
  return null;
}

function target(i: Injection): { kind: string; name: string; template: string } {
  return 'headerName' in i
    ? { kind: 'header', name: i.headerName, template: i.valueFormat ?? '${credential}' }
    : { kind: 'query parameter', name: i.paramName, template: i.paramFormat ?? '${credential}' };
}

/** A runtime's own secret bindings: listed, added and deleted, live. */
export function BindingsPanel({ r }: { r: Runtime }) {
  const list = usePoll(() => api.bindings(r.id), 5000, [r.id]);
  const secrets = usePoll(() => api.secrets(), 10000, []);
  const items = list.data ?? [];
  return (
    <section class="card" aria-labelledby="bind-title" data-testid="bindings">
      <div class="card-head">
        <h2 id="bind-title">Secret bindings</h2>
        <span class="muted small">
          TLS to a bound host is intercepted and the value set there; the runtime only ever holds the stub.
        </span>
      </div>
      {list.error && (
        <p class="alert" role="alert">
          Could not load the bindings: {list.error.message}
        </p>
      )}
      {items.length === 0 ? (
        <p class="muted pad" data-testid="bindings-empty">
          {list.loading ? 'Loading…' : 'No bindings: no request of this runtime gets a secret.'}
        </p>
      ) : (
        <div class="audit-scroll">
          <table class="fleet audit-table">
            <thead>
              <tr>
                <th scope="col">Secret</th>
                <th scope="col">Host</th>
                <th scope="col">Path</th>
                <th scope="col">Sets</th>
                <th scope="col">Template</th>
                <th scope="col" class="r">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((b) => (
                <BindingRow key={b.id} r={r} b={b} onChange={list.refresh} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <AddBinding r={r} secrets={secrets.data ?? []} onDone={list.refresh} />
    </section>
  );
}

function BindingRow({ r, b, onChange }: { r: Runtime; b: SecretBinding; onChange: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [busy, setBusy] = useState(false);
  const t = target(b.injection);
  const remove = async () => {
    dialog.current?.close();
    setBusy(true);
    try {
      await api.deleteBinding(r.id, b.id);
      toast(`Binding of ${b.credential_display_name} to ${b.host_pattern} deleted`);
    } catch (err) {
      toast(asApiError(err).message, 'error');
    } finally {
      setBusy(false);
      onChange();
    }
  };
  return (
    <tr data-binding={b.id}>
      <td class="mono small">{b.credential_display_name}</td>
      <td class="mono small">{b.host_pattern}</td>
      <td class="mono small">{b.path_pattern}</td>
      <td class="small">
        {t.kind} <span class="mono">{t.name}</span>
      </td>
      <td class="mono small tpl">{t.template}</td>
      <td class="r">
        <button type="button" class="btn btn-danger btn-sm" disabled={busy} onClick={() => dialog.current?.showModal()}>
          Delete
        </button>
        <dialog ref={dialog} class="dialog" aria-labelledby={`bd-${b.id}`}>
          <form method="dialog">
            <h2 id={`bd-${b.id}`}>Delete this binding?</h2>
            <p>
              Requests to {b.host_pattern} no longer get {b.credential_display_name} once this answers.
            </p>
            <div class="form-actions">
              <button type="submit" class="btn btn-secondary" autofocus>
                Cancel
              </button>
              <button type="button" class="btn btn-danger" onClick={remove}>
                Delete binding
              </button>
            </div>
          </form>
        </dialog>
      </td>
    </tr>
  );
}

function AddBinding({ r, secrets, onDone }: { r: Runtime; secrets: Secret[]; onDone: () => void }) {
  const [secret, setSecret] = useState('');
  const [host, setHost] = useState('');
  const [path, setPath] = useState('/*');
  const [kind, setKind] = useState<'header' | 'param'>('header');
  const [name, setName] = useState('Authorization');
  const [template, setTemplate] = useState('Bearer ${credential}');
  const [error, setError] = useState<{ field: BindField | null; message: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const chosen = secret || secrets[0]?.name || '';

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!chosen) return setError({ field: 'secret', message: 'Create a secret first (Secrets page).' });
    const injection: Injection =
      kind === 'header' ? { headerName: name.trim(), valueFormat: template } : { paramName: name.trim(), paramFormat: template };
    setBusy(true);
    setError(null);
    try {
      const b = await api.addBinding(r.id, { secret: chosen, host: host.trim(), path: path.trim() || undefined, injection });
      toast(`${b.credential_display_name} bound to ${b.host_pattern}`);
      setHost('');
    } catch (err) {
      const x = asApiError(err);
      setError({ field: bindField(x), message: x.message });
    } finally {
      setBusy(false);
      onDone();
    }
  };
  const aria = (f: BindField) => ({
    'aria-invalid': error?.field === f ? ('true' as const) : undefined,
    'aria-describedby': error?.field === f ? 'bind-error' : undefined,
  });
  const disabled = r.status === 'deleting';
  return (
    <form class="inline-form bind-form" onSubmit={submit} noValidate aria-label="Add a binding">
      <h3 class="audits-title">Add a binding</h3>
      <div class="grid2">
        <div class="field">
          <label for="bind-secret">Secret</label>
          <select
            id="bind-secret"
            value={chosen}
            disabled={disabled || secrets.length === 0}
            onChange={(e) => setSecret((e.target as HTMLSelectElement).value)}
            {...aria('secret')}
          >
            {secrets.length === 0 && <option value="">no secrets yet</option>}
            {secrets.map((s) => (
              <option key={s.id} value={s.name}>
                {s.name}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="bind-host">Host</label>
          <input
            id="bind-host"
            class="mono"
            value={host}
            spellcheck={false}
            autocomplete="off"
            placeholder="api.openai.com or *.example.com"
            disabled={disabled}
            onInput={(e) => setHost((e.target as HTMLInputElement).value)}
            {...aria('host')}
          />
        </div>
        <div class="field">
          <label for="bind-path">Path</label>
          <input
            id="bind-path"
            class="mono"
            value={path}
            spellcheck={false}
            autocomplete="off"
            placeholder="/* or /v1/*"
            disabled={disabled}
            onInput={(e) => setPath((e.target as HTMLInputElement).value)}
            {...aria('path')}
          />
        </div>
        <fieldset class="field egress-modes" disabled={disabled}>
          <legend>Put the value in</legend>
          <label class="radio">
            <input type="radio" name="bind-kind" checked={kind === 'header'} onChange={() => setKind('header')} />
            a header
          </label>
          <label class="radio">
            <input type="radio" name="bind-kind" checked={kind === 'param'} onChange={() => setKind('param')} />
            a query parameter
          </label>
        </fieldset>
        <div class="field">
          <label for="bind-name">{kind === 'header' ? 'Header name' : 'Parameter name'}</label>
          <input
            id="bind-name"
            class="mono"
            value={name}
            spellcheck={false}
            autocomplete="off"
            disabled={disabled}
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
            {...aria('injection')}
          />
        </div>
        <div class="field">
          <label for="bind-template">Template</label>
          <input
            id="bind-template"
            class="mono"
            value={template}
            spellcheck={false}
            autocomplete="off"
            disabled={disabled}
            onInput={(e) => setTemplate((e.target as HTMLInputElement).value)}
            {...aria('injection')}
          />
        </div>
      </div>
      {error ? (
        <p id="bind-error" class="field-error" role="alert" data-error-for={error.field ?? 'binding'}>
          {error.message}
        </p>
      ) : (
        <p class="hint">
          The template must hold <code>{'${credential}'}</code>, where the value goes, e.g.{' '}
          <code>{'Bearer ${credential}'}</code>.
        </p>
      )}
      <div class="form-actions">
        <button type="submit" class="btn btn-primary" disabled={busy || disabled}>
          {busy ? 'Adding…' : 'Add binding'}
        </button>
      </div>
    </form>
  );
}
