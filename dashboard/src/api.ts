// A small typed client for the Runta REST API (same origin as the dashboard).

export type Status =
  | 'creating' | 'running' | 'paused' | 'shutdown' | 'suspended' | 'deleting' | 'error' | 'crashed';

export const STATUSES: Status[] = [
  'creating', 'running', 'paused', 'suspended', 'shutdown', 'error', 'crashed', 'deleting',
];

/** What a caller can do with a runtime; the daemon lists them per runtime. */
export type Action = 'start' | 'stop' | 'pause' | 'resume' | 'delete' | 'update' | 'exec' | 'checkpoint';

export interface Runtime {
  id: string;
  name: string;
  tenant: string;
  status: Status;
  desired_status: Status;
  image: string;
  resources: {
    requests: { vcpus: number; memory_mib: number; disk_gib: number | null };
    limits: { memory_mib: number };
    current: { memory_mib: number; memory_mib_used: number | null; cpu_seconds: number | null };
  };
  env: Record<string, string>;
  labels: Record<string, string>;
  publish: { port: number; protocol: 'http' | 'https'; url: string }[];
  idle_timeout_secs: number | null;
  ip: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  revision: number;
  error: string | null;
  /** From the daemon's state machine (absent from daemons older than this field). */
  allowed_actions?: Action[];
  /** false: a runtime suspended for idleness wakes only on start/resume. */
  idle_wakeup?: boolean;
  /** The official spellings (docs/api.md): the same record. */
  display_name?: string;
  idle_policy?: { mode: 'disabled' | 'suspend_and_wakeup' | 'suspend_only'; suspend_after_secs?: number };
  /** The outbound policy in both official spellings (docs/api.md, "Egress"). */
  egress_policy?: EgressPolicy & { enabled: boolean };
}

export type EgressMode = 'allowlist' | 'denylist';

export interface EgressPolicy {
  mode: EgressMode;
  allowed_hosts: string[];
  denied_hosts: string[];
}

export type AuditKind = 'tcp_connection' | 'http_request' | 'icmp_drop' | 'dns_query';

/** One decision of the egress gateway (`GET /v1/audits`). */
export interface Audit {
  id: string;
  category: 'egress';
  observed_unix_ms: number;
  runtime_id: string;
  payload: { egress: { kind: AuditKind } & Partial<Record<AuditKind, Record<string, unknown>>> };
}

export interface RuntimeEvent {
  id: number;
  runtime_id: string;
  type: string;
  message: string | null;
  created_at: string;
}

export interface ExecResult {
  exit_code: number;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  duration_ms: number;
  timed_out: boolean;
}

export interface CreateRequest {
  name: string;
  image?: string;
  resources: { requests: { vcpus?: number; memory_mib?: number } };
  env: Record<string, string>;
  publish: { port: number; protocol: 'http' | 'https' }[];
  idle_timeout_secs?: number;
}

/** A tenant's secret (`GET /v1/secrets`): never its value (docs/api.md, "Secrets"). */
export interface Secret {
  id: string;
  name: string;
  cache_ttl_secs: number;
  /** A placeholder for code in the runtime, not secret. */
  stub: string;
  created_at: string;
  updated_at: string;
}

/** Where a binding puts the value: a header, or a query parameter. */
export type Injection =
  | { headerName: string; valueFormat?: string }
  | { paramName: string; paramFormat?: string };

/** One secret bound to a host and path of a runtime (`secret-injection-rules`). */
export interface SecretBinding {
  id: string;
  scope: 'runtime' | 'tenant_default';
  runtime_id?: string;
  secret_id: string;
  credential_display_name: string;
  host_pattern: string;
  path_pattern: string;
  injection: Injection;
  created_at: string;
}

export interface NewBinding {
  secret: string;
  host: string;
  path?: string;
  injection: Injection;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly requestId?: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = 'runta.token';

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function setToken(t: string) {
  sessionStorage.setItem(TOKEN_KEY, t);
}
export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Called when the daemon says the token is no longer valid. */
let onUnauthenticated: () => void = () => {};
export function setUnauthenticatedHandler(f: () => void) {
  onUnauthenticated = f;
}

export async function request<T>(method: string, path: string, body?: unknown, token = getToken()): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'unavailable', 'Cannot reach the Runta daemon.');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let json: any = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const e = json?.error;
    const err = new ApiError(
      res.status,
      e?.code ?? 'internal',
      e?.message ?? `HTTP ${res.status}`,
      e?.field ?? undefined,
      json?.request_id,
    );
    if (res.status === 401 && token === getToken()) onUnauthenticated();
    throw err;
  }
  return json as T;
}

const enc = encodeURIComponent;

export const api = {
  async listAll(): Promise<Runtime[]> {
    const out: Runtime[] = [];
    let after: string | null = null;
    for (let page = 0; page < 20; page++) {
      const q: string = after ? `&after=${enc(after)}` : '';
      const r = await request<{ data: Runtime[]; pagination: { next_cursor: string | null; has_more: boolean } }>(
        'GET', `/v1/runtimes?limit=100${q}`,
      );
      out.push(...r.data);
      if (!r.pagination?.has_more || !r.pagination.next_cursor) break;
      after = r.pagination.next_cursor;
    }
    return out;
  },
  get: (id: string) => request<{ data: Runtime }>('GET', `/v1/runtimes/${enc(id)}`).then((r) => r.data),
  create: (body: CreateRequest) =>
    request<{ data: Runtime }>('POST', '/v1/runtimes?wait=false', body).then((r) => r.data),
  action: (id: string, verb: 'start' | 'stop' | 'pause' | 'resume') =>
    request<{ data: Runtime }>('POST', `/v1/runtimes/${enc(id)}/${verb}`).then((r) => r.data),
  remove: (id: string) => request<void>('DELETE', `/v1/runtimes/${enc(id)}`),
  resizeMemory: (id: string, memory_mib: number) =>
    request<{ data: Runtime }>('PATCH', `/v1/runtimes/${enc(id)}`, { resources: { requests: { memory_mib } } }).then(
      (r) => r.data,
    ),
  exec: (id: string, command: string) =>
    request<{ data: ExecResult }>('POST', `/v1/runtimes/${enc(id)}/exec`, { command, timeout_secs: 60 }).then(
      (r) => r.data,
    ),
  events: (id: string) =>
    request<{ data: RuntimeEvent[] }>('GET', `/v1/runtimes/${enc(id)}/events?limit=100`).then((r) => r.data),
  /** Replaces the runtime's outbound policy (in force for new connections at once). */
  setEgress: (id: string, egress_policy: EgressPolicy) =>
    request<{ data: Runtime }>('PATCH', `/v1/runtimes/${enc(id)}`, { egress_policy }).then((r) => r.data),
  /** The newest egress decisions of one runtime, newest first. */
  audits: (id: string, limit = 50) =>
    request<{ data: Audit[] }>('GET', `/v1/audits?category=egress&runtime=${enc(id)}&limit=${limit}`).then(
      (r) => r.data,
    ),
  /** The tenant's secrets, oldest first (names and metadata only). */
  secrets: () => request<{ data: Secret[] }>('GET', '/v1/secrets').then((r) => r.data),
  /** The value goes in the request body only, never in a URL. */
  createSecret: (body: { name: string; value: string; cache_ttl_secs?: number }) =>
    request<{ data: Secret }>('POST', '/v1/secrets', body).then((r) => r.data),
  replaceSecret: (id: string, body: { value: string; cache_ttl_secs?: number }) =>
    request<{ data: Secret }>('PUT', `/v1/secrets/${enc(id)}`, body).then((r) => r.data),
  deleteSecret: (id: string) => request<unknown>('DELETE', `/v1/secrets/${enc(id)}`),
  /** The runtime's own bindings (not the tenant defaults). */
  bindings: (runtimeId: string) =>
    request<{ data: SecretBinding[] }>('GET', `/v1/runtimes/${enc(runtimeId)}/secret-injection-rules`).then(
      (r) => r.data,
    ),
  addBinding: (runtimeId: string, body: NewBinding) =>
    request<{ data: SecretBinding }>('POST', `/v1/runtimes/${enc(runtimeId)}/secret-injection-rules`, body).then(
      (r) => r.data,
    ),
  deleteBinding: (runtimeId: string, id: string) =>
    request<unknown>('DELETE', `/v1/runtimes/${enc(runtimeId)}/secret-injection-rules/${enc(id)}`),
  /** Checks a token without storing it. */
  verify: (token: string) => request<unknown>('GET', '/v1/runtimes?limit=1', undefined, token),
};

/** Statuses whose runtimes hold reserved capacity on the host (docs/operations.md). */
export function holdsCapacity(s: Status): boolean {
  return s === 'creating' || s === 'running' || s === 'paused' || s === 'suspended';
}

/** Which lifecycle buttons a runtime offers: the daemon's `allowed_actions`. */
export function allowedActions(r: Pick<Runtime, 'status' | 'allowed_actions'>): {
  boot: boolean; pause: boolean; resume: boolean; stop: boolean; del: boolean;
} {
  const has = (a: Action) => (r.allowed_actions ?? legacyActions(r.status)).includes(a);
  return { boot: has('start'), pause: has('pause'), resume: has('resume'), stop: has('stop'), del: has('delete') };
}

/** Only for a daemon that does not send `allowed_actions` yet. */
function legacyActions(s: Status): Action[] {
  const out: Action[] = [];
  if (s === 'shutdown' || s === 'error' || s === 'crashed') out.push('start');
  if (s === 'running' || s === 'paused' || s === 'suspended' || s === 'error' || s === 'crashed') out.push('stop');
  if (s === 'running' || s === 'suspended') out.push('pause');
  if (s === 'paused' || s === 'suspended') out.push('resume');
  if (s !== 'deleting') out.push('delete');
  return out;
}
