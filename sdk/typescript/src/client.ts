/** The entry point: `new Runta()`, `runta.runtimes` and `runta.checkpoints`. */

import { Checkpoints, checkpointRef, type Checkpoint } from "./checkpoint.js";
import { Audits, policyBody, type EgressPolicyInput } from "./egress.js";
import { InvalidArgumentError, RuntaError } from "./errors.js";
import { HttpClient, type ClientOptions } from "./http.js";
import { portSpec, resourcesBody, Runtime, type PublishSpec } from "./runtime.js";
import type { CreateRuntimeRequest, ListResponse, RuntimeInfo, RuntimeStatus, TokenCreated } from "./types.js";

export interface CreateRuntimeOptions {
  /** CPUs as a CFS quota (fractions allowed). */
  vcpus?: number;
  /** Memory request in MiB. */
  memoryMiB?: number;
  /** Hard memory limit in MiB (defaults to the request). */
  memoryLimitMiB?: number;
  diskGiB?: number;
  /** Image name (default `base`). */
  image?: string;
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** Ports to publish: `8080`, `"8080/https"`, `"3000/http"` or `{ port, protocol }`. */
  publish?: PublishSpec[];
  /** Suspend after this many seconds without inbound traffic or exec. */
  idleTimeoutSecs?: number;
  /** Start from a checkpoint's files: its UUID, its name or a `Checkpoint`. */
  checkpointId?: string | Checkpoint;
  /** The same as `checkpointId` (the wire's name). */
  checkpoint?: string | Checkpoint;
  /** Return once the runtime runs (default true); `false` returns the `creating` record at once. */
  wait?: boolean;
  /** Makes a retried create safe: the same key returns the same runtime. */
  idempotencyKey?: string;
  /** Client-side limit in ms (default 10 minutes: the first create may build the base image). */
  timeoutMs?: number;
  /** Outbound policy, either official shape (`{ mode, allowed_hosts, denied_hosts }` or `{ enabled, allowed_hosts }`); default open. */
  egressPolicy?: EgressPolicyInput;
  /** Shorthand: an allowlist of these hosts (names, `*.example.com`, addresses, CIDR blocks; URLs are cut to their host). */
  allowedHosts?: string[];
  /** Shorthand: a denylist of these hosts (with `allowedHosts`: both lists, allowlist mode). */
  deniedHosts?: string[];
}

export interface ListOptions {
  /** Only these statuses. */
  status?: RuntimeStatus | RuntimeStatus[];
  /** Only runtimes carrying all these labels. */
  labels?: Record<string, string>;
  /** Page size (1..100) used while fetching. */
  pageSize?: number;
  /** Stop after this many runtimes. */
  limit?: number;
}

export interface ListPageOptions {
  status?: RuntimeStatus | RuntimeStatus[];
  labels?: Record<string, string>;
  /** 1..100, default 50. */
  limit?: number;
  /** Cursor from a previous page's `nextCursor`. */
  after?: string;
}

export interface RuntimePage {
  data: Runtime[];
  nextCursor: string | null;
  hasMore: boolean;
}

function listQuery(o: { status?: RuntimeStatus | RuntimeStatus[]; labels?: Record<string, string> }) {
  return {
    status: o.status === undefined ? undefined : Array.isArray(o.status) ? o.status.join(",") : o.status,
    label: o.labels ? Object.entries(o.labels).map(([k, v]) => `${k}=${v}`) : undefined,
  };
}

/** `runta.runtimes`: create, list and look up runtimes. */
export class Runtimes {
  /** @internal */
  constructor(private readonly http: HttpClient) {}

  /**
   * Creates a runtime and, by default, waits until it runs.
   * `create("worker", { vcpus: 2, memoryMiB: 2048 })`.
   */
  async create(name: string, opts: CreateRuntimeOptions = {}): Promise<Runtime> {
    const body: CreateRuntimeRequest = { name };
    if (opts.image !== undefined) body.image = opts.image;
    const res = resourcesBody(opts);
    const requests = { ...(res?.requests ?? {}) } as NonNullable<NonNullable<CreateRuntimeRequest["resources"]>["requests"]>;
    if (opts.diskGiB !== undefined) requests.disk_gib = opts.diskGiB;
    if (Object.keys(requests).length > 0 || res?.limits) {
      body.resources = {};
      if (Object.keys(requests).length > 0) body.resources.requests = requests;
      if (res?.limits) body.resources.limits = res.limits;
    }
    if (opts.env !== undefined) body.env = { ...opts.env };
    if (opts.labels !== undefined) body.labels = { ...opts.labels };
    if (opts.publish !== undefined) body.publish = opts.publish.map((p, i) => portSpec(p, i));
    if (opts.idleTimeoutSecs !== undefined) body.idle_timeout_secs = opts.idleTimeoutSecs;
    const ck = opts.checkpointId ?? opts.checkpoint;
    if (ck !== undefined) {
      body.checkpoint = checkpointRef(ck);
      if (opts.checkpointId !== undefined && opts.checkpoint !== undefined && checkpointRef(opts.checkpoint) !== body.checkpoint) {
        throw new InvalidArgumentError({ code: "invalid_argument", message: "checkpoint: give checkpointId or checkpoint, not two different ones", field: "checkpoint" });
      }
    }
    if (opts.egressPolicy !== undefined && (opts.allowedHosts !== undefined || opts.deniedHosts !== undefined)) {
      throw new InvalidArgumentError({ code: "invalid_argument", message: "egress_policy: give egressPolicy or allowedHosts/deniedHosts, not both", field: "egress_policy" });
    }
    if (opts.egressPolicy !== undefined) body.egress_policy = policyBody(opts.egressPolicy);
    else if (opts.allowedHosts !== undefined || opts.deniedHosts !== undefined) {
      body.egress_policy = policyBody({
        mode: opts.allowedHosts !== undefined ? "allowlist" : "denylist",
        allowed_hosts: opts.allowedHosts ?? [],
        denied_hosts: opts.deniedHosts ?? [],
      });
    }
    const headers: Record<string, string> = {};
    if (opts.idempotencyKey !== undefined) headers["idempotency-key"] = opts.idempotencyKey;
    const info = await this.http.data<RuntimeInfo>("POST", "/v1/runtimes", {
      json: body,
      query: { wait: opts.wait === false ? "false" : "true" },
      headers,
      timeoutMs: opts.timeoutMs ?? 10 * 60_000,
    });
    return new Runtime(this.http, info);
  }

  /** Looks a runtime up by UUID or name; NotFoundError when there is none (or it is another tenant's). */
  async get(idOrName: string): Promise<Runtime> {
    if (typeof idOrName !== "string" || idOrName === "") {
      throw new RuntaError({ code: "invalid_argument", message: "id: must be a runtime UUID or name", field: "id" });
    }
    const info = await this.http.data<RuntimeInfo>("GET", `/v1/runtimes/${encodeURIComponent(idOrName)}`);
    return new Runtime(this.http, info);
  }

  /** One page of runtimes, oldest first. */
  async listPage(opts: ListPageOptions = {}): Promise<RuntimePage> {
    const page = await this.http.json<ListResponse<RuntimeInfo>>("GET", "/v1/runtimes", {
      query: { ...listQuery(opts), limit: opts.limit, after: opts.after },
    });
    return {
      data: page.data.map((r) => new Runtime(this.http, r)),
      nextCursor: page.pagination.next_cursor,
      hasMore: page.pagination.has_more,
    };
  }

  /** Every runtime of the tenant (all pages), optionally filtered. */
  async list(opts: ListOptions = {}): Promise<Runtime[]> {
    const out: Runtime[] = [];
    for await (const r of this.iter(opts)) out.push(r);
    return out;
  }

  /** Iterates over runtimes page by page (`for await (const r of runta.runtimes.iter())`). */
  async *iter(opts: ListOptions = {}): AsyncGenerator<Runtime> {
    let after: string | undefined;
    let n = 0;
    for (;;) {
      const page = await this.listPage({
        ...(opts.status !== undefined ? { status: opts.status } : {}),
        ...(opts.labels !== undefined ? { labels: opts.labels } : {}),
        limit: opts.pageSize ?? 100,
        ...(after !== undefined ? { after } : {}),
      });
      for (const r of page.data) {
        if (opts.limit !== undefined && n >= opts.limit) return;
        n++;
        yield r;
      }
      if (!page.hasMore || page.nextCursor === null) return;
      after = page.nextCursor;
    }
  }

  /** Deletes a runtime by UUID or name. */
  async delete(idOrName: string): Promise<void> {
    await this.http.empty("DELETE", `/v1/runtimes/${encodeURIComponent(idOrName)}`, { timeoutMs: 10 * 60_000 });
  }
}

/** Admin-only calls (need the admin token). */
export class Admin {
  /** @internal */
  constructor(private readonly http: HttpClient) {}

  /** Mints a token for `tenant` (the tenant is created if needed). */
  async createToken(tenant: string): Promise<TokenCreated> {
    return this.http.data<TokenCreated>("POST", "/v1/tokens", { json: { tenant } });
  }
}

export interface Health {
  status: string;
  version: string;
  backend: string;
  uptime_secs: number;
}

/**
 * The Runta client. Reads `RUNTA_TOKEN` and `RUNTA_ENDPOINT` (default
 * `http://127.0.0.1:8080`) unless given in the options.
 */
export class Runta {
  readonly runtimes: Runtimes;
  /** The tenant's checkpoints (saved runtime files): list, get, delete. */
  readonly checkpoints: Checkpoints;
  readonly admin: Admin;
  /** The egress gateway's decisions for the tenant's runtimes. */
  readonly audits: Audits;
  /** @internal */
  readonly http: HttpClient;

  constructor(opts: ClientOptions = {}) {
    this.http = new HttpClient(opts);
    this.runtimes = new Runtimes(this.http);
    this.checkpoints = new Checkpoints(this.http);
    this.admin = new Admin(this.http);
    this.audits = new Audits(this.http);
  }

  /** The daemon address in use. */
  get endpoint(): string {
    return this.http.endpoint;
  }

  /** `GET /healthz` (no token needed). */
  async health(): Promise<Health> {
    return this.http.json<Health>("GET", "/healthz");
  }
}
