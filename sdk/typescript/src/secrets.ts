/**
 * Secrets injected at egress: `runta.secrets` and `runtime.secrets`. See
 * docs/api.md, "Secrets".
 *
 * A value goes in (`create`, `set`) and never comes back: every answer is
 * metadata. A rule (0.1.1 "secret injection rule", 0.1.21 "secret stub")
 * binds a secret to a host and path of a runtime, or (a tenant default) of
 * every runtime; the daemon's egress gateway adds the header or query
 * parameter to those requests only. The runtime never holds the value.
 */

import { InvalidArgumentError } from "./errors.js";
import type { HttpClient } from "./http.js";

/** A stored secret: never its value. */
export interface SecretInfo {
  id: string;
  name: string;
  display_name: string;
  cache_ttl_secs: number;
  /** A placeholder (not secret) the runtime may hold where a key is expected. */
  stub: string;
  created_at: string;
  updated_at: string;
}

/** A rule, with the fields of both official spellings. */
export interface SecretRule {
  id: string;
  scope: "runtime" | "tenant_default";
  runtime_id?: string;
  runtime_display_name?: string;
  secret_id: string;
  credential_display_name: string;
  stub_value_display_name: string;
  host_pattern: string;
  path_pattern: string;
  injection: Record<string, string>;
  injection_config_json: string;
  stub_config_json: string;
  created_at: string;
}

/**
 * Where a rule puts the secret: a `header` or a query `param`, `value` the
 * template (`${credential}` is replaced; default `${credential}` alone).
 */
export interface Injection {
  /** The secret's name or id. */
  credential: string;
  header?: string;
  param?: string;
  value?: string;
}

export interface SecretOptions {
  cacheTtlSecs?: number;
}

const CREDENTIAL = "${credential}";

function bad(field: string, message: string): InvalidArgumentError {
  return new InvalidArgumentError({ code: "invalid_argument", message: `${field}: ${message}`, field });
}

/** `https://api.openai.com/v1` → `api.openai.com`; a bare host as given. */
export function hostFromUrl(url: string): string {
  if (typeof url !== "string") throw bad("host", `${JSON.stringify(url)} is not a string`);
  const v = url.trim();
  if (v.includes("://")) {
    try {
      const h = new URL(v).hostname;
      if (h) return h;
    } catch {
      // Sent as given: the daemon names what is wrong with it.
    }
  }
  return v;
}

/** The injection object the API takes. */
export function injectionConfig(i: Injection): Record<string, string> {
  if (i.header && i.param) throw bad("injection", "give header or param, not both");
  if (i.header) return { headerName: i.header, valueFormat: i.value ?? CREDENTIAL };
  if (i.param) return { paramName: i.param, paramFormat: i.value ?? CREDENTIAL };
  throw bad("injection", "needs header or param");
}

function ruleBody(url: string, path: string | undefined | null, injection: Injection | undefined): Record<string, unknown> {
  if (injection === undefined || injection === null) throw bad("injection", "is required");
  if (typeof injection.credential !== "string" || injection.credential === "") {
    throw bad("injection", "needs credential (the secret's name)");
  }
  return { host: hostFromUrl(url), path: path ?? null, secret: injection.credential, injection: injectionConfig(injection) };
}

function seg(field: string, v: string): string {
  if (typeof v !== "string" || v === "" || v === "." || v === ".." || v.includes("/")) {
    throw bad(field, `${JSON.stringify(v)} is not an id or name`);
  }
  return encodeURIComponent(v);
}

function ttl(body: Record<string, unknown>, opts: SecretOptions): Record<string, unknown> {
  if (opts.cacheTtlSecs !== undefined) body.cache_ttl_secs = opts.cacheTtlSecs;
  return body;
}

/** `runta.secrets`: the tenant's secrets and default rules. */
export class Secrets {
  /** @internal */
  constructor(private readonly http: HttpClient) {}

  /** Stores a new secret (409 `AlreadyExistsError` if the name is taken). */
  create(name: string, value: string, opts: SecretOptions = {}): Promise<SecretInfo> {
    return this.http.data<SecretInfo>("POST", "/v1/secrets", { json: ttl({ name, value }, opts) });
  }

  /** Stores or replaces a secret (0.1.21); rules use the new value at once. */
  set(name: string, value: string, opts: SecretOptions = {}): Promise<SecretInfo> {
    return this.http.data<SecretInfo>("PUT", `/v1/secrets/${seg("secret", name)}`, { json: ttl({ value }, opts) });
  }

  get(name: string): Promise<SecretInfo> {
    return this.http.data<SecretInfo>("GET", `/v1/secrets/${seg("secret", name)}`);
  }

  list(): Promise<SecretInfo[]> {
    return this.http.data<SecretInfo[]>("GET", "/v1/secrets");
  }

  /** Deletes the secret and every rule that injects it. */
  async delete(name: string): Promise<void> {
    await this.http.empty("DELETE", `/v1/secrets/${seg("secret", name)}`);
  }

  /** Every runtime's rules (0.1.1 `list_rules`, 0.1.21 `list_secret_stubs`). */
  listRules(): Promise<SecretRule[]> {
    return this.http.data<SecretRule[]>("GET", "/v1/secret-injection-rules");
  }

  listSecretStubs(): Promise<SecretRule[]> {
    return this.listRules();
  }

  async deleteRule(id: string): Promise<void> {
    await this.http.empty("DELETE", `/v1/secret-injection-rules/${seg("id", id)}`);
  }

  deleteSecretStub(id: string): Promise<void> {
    return this.deleteRule(id);
  }

  /** A tenant default (every runtime, now and later); replaces the one of the same host, path and target. */
  setDefaultSecretStub(url: string, path: string | undefined, config: Injection): Promise<SecretRule> {
    return this.http.data<SecretRule>("PUT", "/v1/default-secret-stubs", { json: ruleBody(url, path, config) });
  }

  createDefaultSecretStub(url: string, path: string | undefined, config: Injection): Promise<SecretRule> {
    return this.http.data<SecretRule>("POST", "/v1/default-secret-stubs", { json: ruleBody(url, path, config) });
  }

  listDefaultSecretStubs(): Promise<SecretRule[]> {
    return this.http.data<SecretRule[]>("GET", "/v1/default-secret-stubs");
  }

  async deleteDefaultSecretStub(id: string): Promise<void> {
    await this.http.empty("DELETE", `/v1/default-secret-stubs/${seg("id", id)}`);
  }
}

/** `runtime.secrets`: the runtime's own rules. */
export class RuntimeSecrets {
  /** @internal */
  constructor(
    private readonly http: HttpClient,
    private readonly runtimeId: string,
  ) {}

  private p(suffix: string): string {
    return `/v1/runtimes/${encodeURIComponent(this.runtimeId)}${suffix}`;
  }

  /** Injects `injection.credential` into requests to `url`'s host (and `path`: `/v1/*`, exact, or every path). */
  createRule(url: string, path: string | undefined, injection: Injection): Promise<SecretRule> {
    return this.http.data<SecretRule>("POST", this.p("/secret-injection-rules"), { json: ruleBody(url, path, injection) });
  }

  listRules(): Promise<SecretRule[]> {
    return this.http.data<SecretRule[]>("GET", this.p("/secret-injection-rules"));
  }

  listSecretStubs(): Promise<SecretRule[]> {
    return this.listRules();
  }

  getRule(id: string): Promise<SecretRule> {
    return this.http.data<SecretRule>("GET", this.p(`/secret-injection-rules/${seg("id", id)}`));
  }

  getSecretStub(id: string): Promise<SecretRule> {
    return this.getRule(id);
  }

  async deleteRule(id: string): Promise<void> {
    await this.http.empty("DELETE", this.p(`/secret-injection-rules/${seg("id", id)}`));
  }

  deleteSecretStub(id: string): Promise<void> {
    return this.deleteRule(id);
  }

  /** Stores or replaces (same host, path and target) a rule (0.1.21). */
  setSecretStub(url: string, path: string | undefined, config: Injection): Promise<SecretRule> {
    return this.http.data<SecretRule>("PUT", this.p("/secret-stubs"), { json: ruleBody(url, path, config) });
  }

  createSecretStub(url: string, path: string | undefined, config: Injection): Promise<SecretRule> {
    return this.http.data<SecretRule>("POST", this.p("/secret-stubs"), { json: ruleBody(url, path, config) });
  }

  /** In one transaction: removes `deleteIds` and adds `stubs`; all or nothing. */
  replaceSecretStubs(deleteIds: string[], stubs: Array<{ url: string; path?: string; config: Injection }>): Promise<SecretRule[]> {
    return this.http.data<SecretRule[]>("PUT", this.p("/secret-stubs/replace"), {
      json: { delete_ids: deleteIds, stubs: stubs.map((s) => ruleBody(s.url, s.path, s.config)) },
    });
  }
}
