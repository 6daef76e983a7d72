import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, type CreateRequest } from '../api';
import { navigate } from '../hooks';
import { toast } from '../toast';

type Field = 'name' | 'image' | 'vcpus' | 'memory' | 'env' | 'publish' | 'idle';

/** Maps the API's dotted error path onto a form field. */
export function fieldFor(path: string | undefined): Field | null {
  if (!path) return null;
  if (path === 'name') return 'name';
  if (path.startsWith('image')) return 'image';
  if (path.includes('vcpus')) return 'vcpus';
  if (path.includes('memory_mib')) return 'memory';
  if (path.startsWith('env')) return 'env';
  if (path.startsWith('publish')) return 'publish';
  if (path.startsWith('idle_timeout')) return 'idle';
  return null;
}

/** "name: … is not valid" → "… is not valid" (the field is shown already). */
function stripPath(message: string, path?: string) {
  return path && message.startsWith(`${path}: `) ? message.slice(path.length + 2) : message;
}

interface EnvRow { key: string; value: string }
interface PortRow { port: string; protocol: 'http' | 'https' }

export function CreateRuntime() {
  const [name, setName] = useState('');
  const [image, setImage] = useState('base');
  const [vcpus, setVcpus] = useState('1');
  const [memory, setMemory] = useState('512');
  const [idle, setIdle] = useState('');
  const [env, setEnv] = useState<EnvRow[]>([]);
  const [ports, setPorts] = useState<PortRow[]>([]);
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const form = useRef<HTMLFormElement>(null);
  useEffect(() => {
    document.title = 'New runtime · Runta';
    form.current?.querySelector<HTMLInputElement>('#f-name')?.focus();
  }, []);

  const focusField = (f: Field) =>
    requestAnimationFrame(() => form.current?.querySelector<HTMLElement>(`[data-field="${f}"]`)?.focus());

  const submit = async (e: Event) => {
    e.preventDefault();
    const errs: Partial<Record<Field, string>> = {};
    const num = (s: string) => (s.trim() === '' ? undefined : Number(s));
    const v = num(vcpus);
    const m = num(memory);
    const t = num(idle);
    if (v !== undefined && !Number.isFinite(v)) errs.vcpus = 'Enter a number, e.g. 0.5 or 2.';
    if (m !== undefined && !Number.isInteger(m)) errs.memory = 'Enter a whole number of MiB.';
    if (t !== undefined && !(Number.isInteger(t) && t >= 0)) errs.idle = 'Enter whole seconds, or leave empty.';
    const publish: CreateRequest['publish'] = [];
    for (const p of ports) {
      if (p.port.trim() === '') continue;
      const n = Number(p.port);
      if (!Number.isInteger(n) || n < 1 || n > 65535) errs.publish = 'Ports are whole numbers from 1 to 65535.';
      else publish.push({ port: n, protocol: p.protocol });
    }
    const envObj: Record<string, string> = {};
    for (const r of env) if (r.key !== '' || r.value !== '') envObj[r.key] = r.value;
    setErrors(errs);
    setFormError(null);
    const firstBad = (['name', 'image', 'vcpus', 'memory', 'env', 'publish', 'idle'] as Field[]).find((f) => errs[f]);
    if (firstBad) return focusField(firstBad);

    const body: CreateRequest = {
      name: name.trim(),
      resources: { requests: { vcpus: v, memory_mib: m } },
      env: envObj,
      publish,
    };
    if (image.trim()) body.image = image.trim();
    if (t !== undefined && t > 0) body.idle_timeout_secs = t;
    setBusy(true);
    try {
      const r = await api.create(body);
      toast(`Created ${r.name}`);
      navigate(`/runtimes/${encodeURIComponent(r.name)}`);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(0, 'internal', String(err));
      const f = fieldFor(e.field) ?? (e.code === 'already_exists' ? 'name' : null);
      if (f) {
        setErrors({ [f]: stripPath(e.message, e.field) });
        focusField(f);
      } else {
        setFormError(e.message);
      }
    } finally {
      setBusy(false);
    }
  };

  const err = (f: Field) =>
    errors[f] ? (
      <p id={`err-${f}`} class="field-error" role="alert" data-error-for={f}>
        {errors[f]}
      </p>
    ) : null;
  const aria = (f: Field, help?: string) => ({
    'data-field': f,
    'aria-invalid': errors[f] ? ('true' as const) : undefined,
    'aria-describedby': errors[f] ? `err-${f}` : help,
  });

  return (
    <section aria-labelledby="create-title" class="narrow">
      <div class="page-head">
        <div>
          <p class="crumbs">
            <a href="#/">Runtimes</a> <span aria-hidden="true">/</span> New
          </p>
          <h1 id="create-title">New runtime</h1>
        </div>
      </div>
      <form ref={form} class="card form" onSubmit={submit} noValidate>
        {formError && (
          <p class="alert" role="alert">
            {formError}
          </p>
        )}
        <div class="field">
          <label for="f-name">Name</label>
          <input
            id="f-name"
            name="name"
            value={name}
            autocomplete="off"
            spellcheck={false}
            placeholder="my-agent"
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
            {...aria('name', 'help-name')}
          />
          {err('name') ?? (
            <p id="help-name" class="hint">
              Lowercase letters, digits and “-”; unique among your runtimes.
            </p>
          )}
        </div>
        <div class="field">
          <label for="f-image">Image</label>
          <input
            id="f-image"
            name="image"
            value={image}
            spellcheck={false}
            onInput={(e) => setImage((e.target as HTMLInputElement).value)}
            {...aria('image')}
          />
          {err('image')}
        </div>
        <div class="grid2">
          <div class="field">
            <label for="f-vcpus">vCPUs</label>
            <input
              id="f-vcpus"
              name="vcpus"
              inputMode="decimal"
              value={vcpus}
              onInput={(e) => setVcpus((e.target as HTMLInputElement).value)}
              {...aria('vcpus', 'help-vcpus')}
            />
            {err('vcpus') ?? (
              <p id="help-vcpus" class="hint">
                Fractions allowed (0.5 = half a core).
              </p>
            )}
          </div>
          <div class="field">
            <label for="f-memory">Memory (MiB)</label>
            <input
              id="f-memory"
              name="memory"
              inputMode="numeric"
              value={memory}
              onInput={(e) => setMemory((e.target as HTMLInputElement).value)}
              {...aria('memory', 'help-memory')}
            />
            {err('memory') ?? (
              <p id="help-memory" class="hint">
                Also the hard limit.
              </p>
            )}
          </div>
        </div>

        <fieldset class="field">
          <legend>Environment variables</legend>
          {env.map((row, i) => (
            <div class="row" key={i}>
              <label class="sr-only" for={`env-k-${i}`}>
                Name of variable {i + 1}
              </label>
              <input
                id={`env-k-${i}`}
                class="mono"
                placeholder="NAME"
                value={row.key}
                spellcheck={false}
                onInput={(e) => setEnv(env.map((r, j) => (j === i ? { ...r, key: (e.target as HTMLInputElement).value } : r)))}
                {...(i === 0 ? aria('env') : {})}
              />
              <span aria-hidden="true">=</span>
              <label class="sr-only" for={`env-v-${i}`}>
                Value of variable {i + 1}
              </label>
              <input
                id={`env-v-${i}`}
                class="mono"
                placeholder="value"
                value={row.value}
                spellcheck={false}
                onInput={(e) =>
                  setEnv(env.map((r, j) => (j === i ? { ...r, value: (e.target as HTMLInputElement).value } : r)))
                }
              />
              <button
                type="button"
                class="btn btn-ghost btn-icon"
                aria-label={`Remove variable ${i + 1}`}
                onClick={() => setEnv(env.filter((_, j) => j !== i))}
              >
                ×
              </button>
            </div>
          ))}
          {err('env')}
          <button type="button" class="btn btn-secondary btn-sm" onClick={() => setEnv([...env, { key: '', value: '' }])}>
            + Add variable
          </button>
        </fieldset>

        <fieldset class="field">
          <legend>Published ports</legend>
          {ports.map((row, i) => (
            <div class="row" key={i}>
              <label class="sr-only" for={`port-${i}`}>
                Port {i + 1}
              </label>
              <input
                id={`port-${i}`}
                inputMode="numeric"
                placeholder="8080"
                value={row.port}
                onInput={(e) =>
                  setPorts(ports.map((r, j) => (j === i ? { ...r, port: (e.target as HTMLInputElement).value } : r)))
                }
                {...(i === 0 ? aria('publish') : {})}
              />
              <label class="sr-only" for={`proto-${i}`}>
                Protocol of port {i + 1}
              </label>
              <select
                id={`proto-${i}`}
                value={row.protocol}
                onChange={(e) =>
                  setPorts(
                    ports.map((r, j) =>
                      j === i ? { ...r, protocol: (e.target as HTMLSelectElement).value as 'http' | 'https' } : r,
                    ),
                  )
                }
              >
                <option value="https">https</option>
                <option value="http">http</option>
              </select>
              <button
                type="button"
                class="btn btn-ghost btn-icon"
                aria-label={`Remove port ${i + 1}`}
                onClick={() => setPorts(ports.filter((_, j) => j !== i))}
              >
                ×
              </button>
            </div>
          ))}
          {err('publish')}
          <button
            type="button"
            class="btn btn-secondary btn-sm"
            onClick={() => setPorts([...ports, { port: '', protocol: 'https' }])}
          >
            + Add port
          </button>
          <p class="hint">Reachable through the daemon's ingress at a hostname built from the runtime id.</p>
        </fieldset>

        <div class="field">
          <label for="f-idle">Idle timeout (seconds)</label>
          <input
            id="f-idle"
            name="idle_timeout_secs"
            inputMode="numeric"
            placeholder="never"
            value={idle}
            onInput={(e) => setIdle((e.target as HTMLInputElement).value)}
            {...aria('idle', 'help-idle')}
          />
          {err('idle') ?? (
            <p id="help-idle" class="hint">
              Suspend after this long without ingress traffic or exec; empty = never.
            </p>
          )}
        </div>

        <div class="form-actions">
          <a href="#/" class="btn btn-ghost">
            Cancel
          </a>
          <button type="submit" class="btn btn-primary" disabled={busy}>
            {busy ? 'Creating…' : 'Create runtime'}
          </button>
        </div>
      </form>
    </section>
  );
}
