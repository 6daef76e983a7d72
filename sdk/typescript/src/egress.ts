/**
 * Egress: a runtime's outbound policy (`runtime.egress`) and the gateway's
 * decisions (`runta.audits`). See docs/api.md, "Egress".
 *
 * Every change reads the runtime's `egress_policy`, changes it and PATCHes the
 * whole of it back, as the official client does: the daemon keeps one policy
 * per runtime and a PATCH replaces it.
 */

import { InvalidArgumentError } from "./errors.js";
import type { HttpClient } from "./http.js";
import type { ListResponse, RuntimeInfo } from "./types.js";

export type EgressMode = "allowlist" | "denylist";

/** The canonical policy: `allowlist` = only `allowed_hosts`; `denylist` = all but `denied_hosts`. */
export interface EgressPolicy {
  mode: EgressMode;
  allowed_hosts: string[];
  denied_hosts: string[];
}

/** What a runtime answers: the policy in both official spellings (`enabled` = an allowlist is in force). */
export interface EgressPolicyView extends EgressPolicy {
  enabled: boolean;
}

/** What may be sent: the 0.1.21 shape `{mode, allowed_hosts, denied_hosts}` or the 0.1.1 `{enabled, allowed_hosts}`. */
export interface EgressPolicyInput {
  mode?: EgressMode;
  enabled?: boolean;
  allowed_hosts?: string[];
  denied_hosts?: string[];
}

export type AuditKind = "tcp_connection" | "http_request" | "icmp_drop" | "dns_query";
export const AUDIT_KINDS: readonly AuditKind[] = ["tcp_connection", "http_request", "icmp_drop", "dns_query"];

/** One decision of the egress gateway, as `GET /v1/audits` sends it. */
export interface Audit {
  id: string;
  category: "egress";
  observed_unix_ms: number;
  runtime_id: string;
  payload: {
    egress: {
      kind: AuditKind;
      tcp_connection?: Record<string, unknown> & { host: string; dst_addr: string; action: AuditAction; reason: string };
      http_request?: Record<string, unknown> & { host: string; method: string; path: string; status: number; action: AuditAction; reason: string };
      icmp_drop?: Record<string, unknown> & { packets: number; action: AuditAction; reason: string };
      dns_query?: Record<string, unknown> & { name: string; qtype: string; answers: string[]; action: AuditAction; reason: string };
    };
  };
}

export type AuditAction = "allow" | "deny" | "error";

/** The kind's own object of an audit (`host`, `action`, `reason`, …). */
export function auditDetail(a: Audit): Record<string, unknown> & { action: AuditAction; reason: string } {
  const e = a.payload.egress;
  const d = e[e.kind] as (Record<string, unknown> & { action: AuditAction; reason: string }) | undefined;
  return d ?? { action: "error", reason: "" };
}

/** The host an audit is about (the DNS name for `dns_query`), or `""`. */
export function auditHost(a: Audit): string {
  const d = auditDetail(a);
  const h = d["host"] ?? d["name"];
  return typeof h === "string" ? h : "";
}

export type Hosts = string | string[];

/**
 * The host of an entry as the official clients send it: a URL's scheme, port
 * and path are cut (`https://pypi.org/simple` → `pypi.org`); anything else goes
 * to the daemon as given, which refuses a bad entry with a 400 naming it.
 */
export function hostOf(value: string): string {
  if (typeof value !== "string") {
    throw new InvalidArgumentError({ code: "invalid_argument", message: `egress host ${JSON.stringify(value)} is not a string`, field: "egress_policy" });
  }
  const v = value.trim();
  if (v.includes("://")) {
    try {
      const h = new URL(v).hostname.replace(/^\[|\]$/g, "");
      if (h) return h.replace(/\.$/, "").toLowerCase();
    } catch {
      // Not a URL after all: the daemon names what is wrong with it.
    }
  }
  return v;
}

/** One host or several, URLs cut to their host, order kept, duplicates dropped. */
export function hostsList(hosts: Hosts): string[] {
  const out: string[] = [];
  for (const h of typeof hosts === "string" ? [hosts] : [...hosts]) {
    const e = hostOf(h);
    if (!out.includes(e)) out.push(e);
  }
  return out;
}

function checkMode(mode: unknown): EgressMode {
  if (mode !== "allowlist" && mode !== "denylist") {
    throw new InvalidArgumentError({
      code: "invalid_argument",
      message: `egress_policy.mode: ${JSON.stringify(mode)} is not "allowlist" or "denylist"`,
      field: "egress_policy.mode",
    });
  }
  return mode;
}

/** The `egress_policy` body for a create or PATCH; a mode left out is `allowlist` when only hosts to allow are given. */
export function policyBody(p: EgressPolicyInput): EgressPolicyInput {
  if (p === null || typeof p !== "object" || Array.isArray(p)) {
    throw new InvalidArgumentError({ code: "invalid_argument", message: "egress_policy: must be an object", field: "egress_policy" });
  }
  const out: EgressPolicyInput = {};
  if (p.mode !== undefined) out.mode = checkMode(p.mode);
  if (p.enabled !== undefined) out.enabled = p.enabled;
  if (p.allowed_hosts !== undefined) out.allowed_hosts = hostsList(p.allowed_hosts);
  if (p.denied_hosts !== undefined) out.denied_hosts = hostsList(p.denied_hosts);
  if (out.mode === undefined && out.enabled === undefined) {
    out.mode = out.allowed_hosts?.length ? "allowlist" : "denylist";
  }
  return out;
}

/** The policy a runtime record carries (open when the daemon sent none). */
export function policyOf(info: RuntimeInfo): EgressPolicyView {
  const p = info.egress_policy;
  const mode: EgressMode = p?.mode ?? (p?.enabled ? "allowlist" : "denylist");
  return {
    enabled: mode === "allowlist",
    mode,
    allowed_hosts: [...(p?.allowed_hosts ?? [])],
    denied_hosts: [...(p?.denied_hosts ?? [])],
  };
}

/**
 * `runtime.egress`: the runtime's outbound policy, changed live. New connections
 * follow a change at once; open ones it denies are cut. Every change returns the
 * policy now in force and refreshes the runtime's `cachedInfo`.
 */
export class RuntimeEgress {
  /** @internal */
  constructor(
    private readonly http: HttpClient,
    private readonly runtimeId: string,
    private readonly update: (info: RuntimeInfo) => void,
  ) {}

  private get path(): string {
    return `/v1/runtimes/${encodeURIComponent(this.runtimeId)}`;
  }

  private async send(policy: EgressPolicyInput): Promise<EgressPolicyView> {
    const info = await this.http.data<RuntimeInfo>("PATCH", this.path, { json: { egress_policy: policy } });
    this.update(info);
    return policyOf(info);
  }

  private async modify(change: (p: EgressPolicy) => EgressPolicy): Promise<EgressPolicyView> {
    const now = await this.get();
    return this.send(change({ mode: now.mode, allowed_hosts: now.allowed_hosts, denied_hosts: now.denied_hosts }));
  }

  /** The policy in force now (fetched). */
  async get(): Promise<EgressPolicyView> {
    const info = await this.http.data<RuntimeInfo>("GET", this.path);
    this.update(info);
    return policyOf(info);
  }

  /** Replaces the whole policy (either official shape). */
  async setPolicy(policy: EgressPolicyInput): Promise<EgressPolicyView> {
    return this.send(policyBody(policy));
  }

  /** Short and official (0.1.1) names of {@link setPolicy}. */
  async set(policy: EgressPolicyInput): Promise<EgressPolicyView> {
    return this.setPolicy(policy);
  }
  async updatePolicy(policy: EgressPolicyInput): Promise<EgressPolicyView> {
    return this.setPolicy(policy);
  }

  /**
   * Adds hosts to the allowed list (taking them off the denied one); the mode is
   * kept: in `denylist` mode allowed entries only open private addresses, and
   * {@link enable} makes the list the only way out.
   */
  async allow(hosts: Hosts): Promise<EgressPolicyView> {
    const add = hostsList(hosts);
    return this.modify((p) => ({
      mode: p.mode,
      allowed_hosts: [...p.allowed_hosts, ...add.filter((h) => !p.allowed_hosts.includes(h))],
      denied_hosts: p.denied_hosts.filter((h) => !add.includes(h)),
    }));
  }

  /** Adds hosts to the denied list (taking them off the allowed one). */
  async deny(hosts: Hosts): Promise<EgressPolicyView> {
    const add = hostsList(hosts);
    return this.modify((p) => ({
      mode: p.mode,
      allowed_hosts: p.allowed_hosts.filter((h) => !add.includes(h)),
      denied_hosts: [...p.denied_hosts, ...add.filter((h) => !p.denied_hosts.includes(h))],
    }));
  }

  /** Takes hosts off both lists. */
  async remove(hosts: Hosts): Promise<EgressPolicyView> {
    const drop = hostsList(hosts);
    return this.modify((p) => ({
      mode: p.mode,
      allowed_hosts: p.allowed_hosts.filter((h) => !drop.includes(h)),
      denied_hosts: p.denied_hosts.filter((h) => !drop.includes(h)),
    }));
  }

  /** `allowlist` mode: only the allowed hosts are reachable. */
  async enable(): Promise<EgressPolicyView> {
    return this.modify((p) => ({ ...p, mode: "allowlist" }));
  }

  /** `denylist` mode: everything but the denied hosts is reachable. */
  async disable(): Promise<EgressPolicyView> {
    return this.modify((p) => ({ ...p, mode: "denylist" }));
  }

  /** Open: nothing filtered. */
  async clear(): Promise<EgressPolicyView> {
    return this.send({ mode: "denylist", allowed_hosts: [], denied_hosts: [] });
  }

  /** The allowed hosts (the 0.1.1 client's `egress.list()`). */
  async list(): Promise<string[]> {
    return (await this.get()).allowed_hosts;
  }

  /** This runtime's newest decisions, newest first (the official `egress.audit`). */
  async audit(opts: { limit?: number; kind?: AuditKind } = {}): Promise<Audit[]> {
    return new Audits(this.http).list({ runtime: this.runtimeId, ...opts });
  }
}

export interface AuditListOptions {
  /** A runtime's UUID or name; all the tenant's runtimes when absent. */
  runtime?: string | { id: string };
  /** Only `egress` exists. */
  category?: "egress";
  /** Only this kind; DNS decisions are listed only when asked for. */
  kind?: AuditKind;
  /** 1..1000 (default 100). */
  limit?: number;
  /** The `nextCursor` of a page: the next (older) page. */
  after?: string;
}

export interface AuditPage {
  items: Audit[];
  nextCursor: string | null;
}

/** `runta.audits`: the egress gateway's decisions for the tenant's runtimes. */
export class Audits {
  /** @internal */
  constructor(private readonly http: HttpClient) {}

  /** One page, newest first. */
  async listPage(opts: AuditListOptions = {}): Promise<AuditPage> {
    if (opts.kind !== undefined && !AUDIT_KINDS.includes(opts.kind)) {
      throw new InvalidArgumentError({ code: "invalid_argument", message: `kind: ${JSON.stringify(opts.kind)} is not one of ${AUDIT_KINDS.join(", ")}`, field: "kind" });
    }
    const runtime = typeof opts.runtime === "object" && opts.runtime !== null ? opts.runtime.id : opts.runtime;
    const page = await this.http.json<ListResponse<Audit>>("GET", "/v1/audits", {
      query: {
        category: opts.category ?? "egress",
        runtime: runtime === "" ? undefined : runtime,
        kind: opts.kind,
        limit: opts.limit,
        after: opts.after,
      },
    });
    return { items: page.data, nextCursor: page.pagination.has_more ? page.pagination.next_cursor : null };
  }

  /** The newest `limit` (default 100) decisions, newest first. */
  async list(opts: Omit<AuditListOptions, "after"> = {}): Promise<Audit[]> {
    if (opts.limit !== undefined && opts.limit <= 0) return [];
    return (await this.listPage(opts)).items;
  }
}
