/** The HTTP transport: one place that talks to the daemon, maps errors, and times out. */

import {
  errorFromResponse,
  RuntaConnectionError,
  RuntaError,
  RuntaTimeoutError,
} from "./errors.js";

export const DEFAULT_ENDPOINT = "http://127.0.0.1:8080";
export const SDK_VERSION = "0.1.0";

/** A `fetch` compatible with the global one (e.g. undici's with a custom dispatcher). */
/** What `fetch` accepts as a request body. */
export type BodyInit = NonNullable<RequestInit["body"]>;

export type FetchLike = (input: string | URL, init?: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** Tenant token (`rt_…`); default `$RUNTA_TOKEN`. */
  token?: string;
  /** Daemon address; default `$RUNTA_ENDPOINT`, else `http://127.0.0.1:8080`. */
  endpoint?: string;
  /** Client-side timeout of ordinary calls in ms (default 120 000). Exec and file transfers pick their own. */
  timeoutMs?: number;
  /** Extra headers sent on every request. */
  headers?: Record<string, string>;
  /** Replaces the global `fetch` (Node ≥ 18). */
  fetch?: FetchLike;
}

export type Query = Record<string, string | number | boolean | string[] | undefined | null>;

export interface RequestOptions {
  query?: Query;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as is (`application/octet-stream` unless a content-type header is given). */
  body?: BodyInit;
  headers?: Record<string, string>;
  /** Overrides the client's timeout; `0` or `Infinity` disables it. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

interface Resolved {
  endpoint: string;
  token: string | undefined;
  timeoutMs: number;
  headers: Record<string, string>;
  fetch: FetchLike;
}

function env(name: string): string | undefined {
  const v = typeof process !== "undefined" ? process.env[name] : undefined;
  return v !== undefined && v.trim() !== "" ? v.trim() : undefined;
}

export class HttpClient {
  readonly endpoint: string;
  private readonly cfg: Resolved;

  constructor(opts: ClientOptions = {}) {
    const endpoint = (opts.endpoint ?? env("RUNTA_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
    let parsed: URL;
    try {
      parsed = new URL(endpoint);
    } catch (e) {
      throw new RuntaError({ code: "invalid_argument", message: `endpoint: ${JSON.stringify(endpoint)} is not a URL`, field: "endpoint", cause: e });
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new RuntaError({ code: "invalid_argument", message: `endpoint: must be http:// or https://, got ${JSON.stringify(endpoint)}`, field: "endpoint" });
    }
    const f = opts.fetch ?? (typeof fetch === "function" ? fetch : undefined);
    if (!f) {
      throw new RuntaError({ code: "unimplemented", message: "no global fetch: use Node >= 18 or pass the fetch option" });
    }
    this.endpoint = endpoint;
    this.cfg = {
      endpoint,
      token: opts.token ?? env("RUNTA_TOKEN"),
      timeoutMs: opts.timeoutMs ?? 120_000,
      headers: { ...(opts.headers ?? {}) },
      fetch: f,
    };
  }

  /** The token in use (undefined when none was configured). */
  get token(): string | undefined {
    return this.cfg.token;
  }

  /** Headers for a request: auth, user agent, the configured extras. */
  baseHeaders(): Record<string, string> {
    const h: Record<string, string> = {
      "user-agent": `runta-sdk-typescript/${SDK_VERSION}`,
      ...this.cfg.headers,
    };
    if (this.cfg.token) h["authorization"] = `Bearer ${this.cfg.token}`;
    return h;
  }

  url(path: string, query?: Query): string {
    let u = this.cfg.endpoint + path;
    if (query) {
      const sp = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v === undefined || v === null) continue;
        if (Array.isArray(v)) for (const x of v) sp.append(k, x);
        else sp.append(k, String(v));
      }
      const s = sp.toString();
      if (s) u += "?" + s;
    }
    return u;
  }

  /** Sends a request and returns the raw response once it is known to be a success. */
  async raw(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...this.baseHeaders(), ...(opts.headers ?? {}) };
    let body: BodyInit | undefined;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {
      if (!Object.keys(headers).some((k) => k.toLowerCase() === "content-type")) {
        headers["content-type"] = "application/octet-stream";
      }
      body = opts.body;
    }
    const timeoutMs = opts.timeoutMs ?? this.cfg.timeoutMs;
    const ctl = new AbortController();
    let timedOut = false;
    const timer =
      timeoutMs > 0 && Number.isFinite(timeoutMs)
        ? setTimeout(() => {
            timedOut = true;
            ctl.abort();
          }, timeoutMs)
        : undefined;
    const onAbort = () => ctl.abort(opts.signal?.reason);
    if (opts.signal) {
      if (opts.signal.aborted) ctl.abort(opts.signal.reason);
      else opts.signal.addEventListener("abort", onAbort, { once: true });
    }
    const init: RequestInit & { duplex?: "half" } = { method, headers, signal: ctl.signal };
    if (body !== undefined) {
      init.body = body;
      // Streams as request bodies need half duplex in Node's fetch.
      if (typeof (body as { getReader?: unknown }).getReader === "function") init.duplex = "half";
    }
    let resp: Response;
    try {
      resp = await this.cfg.fetch(this.url(path, opts.query), init);
    } catch (e) {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (timedOut) {
        throw new RuntaTimeoutError({ code: "timeout", message: `${method} ${path}: no answer within ${timeoutMs} ms`, cause: e });
      }
      if (opts.signal?.aborted) throw e;
      const cause = (e as { cause?: { message?: string; code?: string } }).cause;
      const detail = cause?.code ?? cause?.message ?? (e as Error).message;
      throw new RuntaConnectionError({
        code: "connection_error",
        message: `${method} ${this.cfg.endpoint}${path}: cannot reach the Runta daemon (${detail})`,
        cause: e,
      });
    }
    // The timer keeps running while the body is read; clear it once it is consumed
    // (for small bodies) — callers that stream get the signal through the body.
    const clear = () => {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    };
    if (!resp.ok) {
      let text = "";
      try {
        text = await resp.text();
      } catch {
        /* keep the status */
      }
      clear();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      throw errorFromResponse(resp.status, parsed, resp.headers.get("x-request-id"));
    }
    (resp as Response & { __runtaClear?: () => void }).__runtaClear = clear;
    return resp;
  }

  /** Releases the timers of a response returned by {@link raw} (after its body is read). */
  static done(resp: Response): void {
    (resp as Response & { __runtaClear?: () => void }).__runtaClear?.();
  }

  /** A JSON call; returns the parsed body (the whole envelope). */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const resp = await this.raw(method, path, opts);
    try {
      if (resp.status === 204) return undefined as T;
      const text = await resp.text();
      if (text === "") return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch (e) {
        throw new RuntaError({
          code: "internal",
          message: `${method} ${path}: the daemon answered ${resp.status} with a body that is not JSON`,
          status: resp.status,
          requestId: resp.headers.get("x-request-id") ?? undefined,
          cause: e,
        });
      }
    } finally {
      HttpClient.done(resp);
    }
  }

  /** A JSON call whose answer is `{"data": T}`; returns `T`. */
  async data<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const body = await this.json<{ data: T } | undefined>(method, path, opts);
    return body === undefined ? (undefined as T) : body.data;
  }

  /** A call with no interesting body (204). */
  async empty(method: string, path: string, opts: RequestOptions = {}): Promise<void> {
    const resp = await this.raw(method, path, opts);
    try {
      await resp.arrayBuffer();
    } finally {
      HttpClient.done(resp);
    }
  }
}
