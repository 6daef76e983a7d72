/** The `Runtime` handle: one runtime, its lifecycle, exec, files and sessions. */

import { RuntimeCheckpoints } from "./checkpoint.js";
import { RuntimeEgress } from "./egress.js";
import { InvalidArgumentError, RuntaError, RuntaTimeoutError } from "./errors.js";
import type { Command, ExecOptions } from "./exec.js";
import { ExecResult, execRequest } from "./exec.js";
import { RuntimeFiles } from "./files.js";
import type { HttpClient } from "./http.js";
import { Session, type SessionOptions } from "./session.js";
import { ExecProcess, startFrame, type ExecStreamOptions } from "./stream.js";
import type {
  ExecResultData,
  ListResponse,
  PortSpec,
  RuntimeEvent,
  RuntimeInfo,
  RuntimeAction,
  RuntimeStatus,
  UpdateRuntimeRequest,
} from "./types.js";
import { MiniWebSocket } from "./websocket.js";

export interface ResizeOptions {
  memoryMiB?: number;
  vcpus?: number;
  /** Hard memory limit (defaults to the request on the daemon side). */
  memoryLimitMiB?: number;
}

export interface UpdateOptions extends ResizeOptions {
  labels?: Record<string, string>;
  /** Ports to publish (replaces the list): `8080`, `"8080/https"` or `{ port, protocol }`. */
  publish?: PublishSpec[];
  /** Seconds without traffic before the runtime is suspended; `0` turns the policy off. */
  idleTimeoutSecs?: number;
}

export type PublishSpec = number | string | PortSpec;

export interface WaitOptions {
  /** Give up after this many ms (default 120 000). */
  timeoutMs?: number;
  /** Poll interval in ms (default 250). */
  intervalMs?: number;
}

/** Normalises the publish shorthand (`8080`, `"8080/http"`, `{port, protocol}`). */
export function portSpec(p: PublishSpec, i = 0): PortSpec {
  if (typeof p === "number") return { port: p, protocol: "https" };
  if (typeof p === "string") {
    const m = /^(\d{1,5})(?:\/(https?))?$/.exec(p.trim());
    if (!m) {
      throw new InvalidArgumentError({ code: "invalid_argument", message: `publish[${i}]: ${JSON.stringify(p)} is not PORT or PORT/http or PORT/https`, field: `publish[${i}]` });
    }
    return { port: Number(m[1]), protocol: (m[2] as "http" | "https" | undefined) ?? "https" };
  }
  return { ...p };
}

function resourcesBody(o: ResizeOptions): UpdateRuntimeRequest["resources"] | undefined {
  const requests: { vcpus?: number; memory_mib?: number } = {};
  if (o.memoryMiB !== undefined) requests.memory_mib = o.memoryMiB;
  if (o.vcpus !== undefined) requests.vcpus = o.vcpus;
  const res: NonNullable<UpdateRuntimeRequest["resources"]> = {};
  if (Object.keys(requests).length > 0) res.requests = requests;
  if (o.memoryLimitMiB !== undefined) res.limits = { memory_mib: o.memoryLimitMiB };
  return Object.keys(res).length > 0 ? res : undefined;
}

export { resourcesBody };

/**
 * A runtime. `cachedInfo` is the record as last seen (from create, get, list or a
 * lifecycle call); {@link refresh} fetches it again.
 */
export class Runtime {
  /** The runtime's UUID. */
  readonly id: string;
  /** The runtime's name (unique per tenant). */
  readonly name: string;
  /** File operations inside the runtime. */
  readonly files: RuntimeFiles;
  /** Save this runtime's files as a checkpoint; the checkpoints taken of it. */
  readonly checkpoints: RuntimeCheckpoints;
  /** The outbound policy, changed live, and this runtime's egress audits. */
  readonly egress: RuntimeEgress;
  private info: RuntimeInfo;

  /** @internal */
  constructor(readonly http: HttpClient, info: RuntimeInfo) {
    this.id = info.id;
    this.name = info.name ?? info.display_name;
    this.info = info;
    this.files = new RuntimeFiles(this);
    this.checkpoints = new RuntimeCheckpoints(http, info.id);
    this.egress = new RuntimeEgress(http, info.id, (i) => {
      this.set(i);
    });
  }

  /** The record as last fetched (status, resources, env, labels, publish URLs, …). */
  get cachedInfo(): RuntimeInfo {
    return this.info;
  }

  /** Status as last fetched (see {@link refresh}). */
  get status(): RuntimeStatus {
    return this.info.status;
  }

  /**
   * Whether the daemon allows `action` now (from its state machine, as last
   * fetched); `undefined` when the daemon did not say.
   */
  can(action: RuntimeAction): boolean | undefined {
    return this.info.allowed_actions?.includes(action);
  }

  private get path(): string {
    return `/v1/runtimes/${encodeURIComponent(this.id)}`;
  }

  private set(info: RuntimeInfo | undefined): this {
    if (info) this.info = info;
    return this;
  }

  /** Fetches the record again and returns this handle. */
  async refresh(): Promise<this> {
    return this.set(await this.http.data<RuntimeInfo>("GET", this.path));
  }

  /** Boots a shut-down (or crashed) runtime; a no-op when it runs. */
  async start(): Promise<this> {
    return this.set(await this.http.data<RuntimeInfo>("POST", `${this.path}/start`, { timeoutMs: 10 * 60_000 }));
  }

  /** Shuts down (SIGTERM, grace period, SIGKILL); the filesystem is kept. */
  async stop(): Promise<this> {
    return this.set(await this.http.data<RuntimeInfo>("POST", `${this.path}/stop`, { timeoutMs: 10 * 60_000 }));
  }

  /** Freezes every process. */
  async pause(): Promise<this> {
    return this.set(await this.http.data<RuntimeInfo>("POST", `${this.path}/pause`));
  }

  /** Thaws a paused (or suspended) runtime. */
  async resume(): Promise<this> {
    return this.set(await this.http.data<RuntimeInfo>("POST", `${this.path}/resume`));
  }

  /** Deletes the runtime: processes killed, files and record removed. */
  async delete(): Promise<void> {
    await this.http.empty("DELETE", this.path, { timeoutMs: 10 * 60_000 });
    this.info = { ...this.info, status: "deleting" };
  }

  /** Changes the memory request (MiB) live, without a restart. */
  async resizeMemory(memoryMiB: number): Promise<this> {
    return this.resize({ memoryMiB });
  }

  /** Changes CPUs and/or memory live. */
  async resize(opts: ResizeOptions): Promise<this> {
    return this.update(opts);
  }

  /** `PATCH`: resources, labels, published ports, idle timeout. */
  async update(opts: UpdateOptions): Promise<this> {
    const body: UpdateRuntimeRequest = {};
    const res = resourcesBody(opts);
    if (res) body.resources = res;
    if (opts.labels !== undefined) body.labels = { ...opts.labels };
    if (opts.publish !== undefined) body.publish = opts.publish.map((p, i) => portSpec(p, i));
    if (opts.idleTimeoutSecs !== undefined) body.idle_timeout_secs = opts.idleTimeoutSecs;
    return this.set(await this.http.data<RuntimeInfo>("PATCH", this.path, { json: body }));
  }

  /** Polls until the runtime reaches one of `statuses` (default `running`). */
  async waitFor(statuses: RuntimeStatus | RuntimeStatus[] = "running", opts: WaitOptions = {}): Promise<this> {
    const want = Array.isArray(statuses) ? statuses : [statuses];
    const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
    for (;;) {
      await this.refresh();
      if (want.includes(this.info.status)) return this;
      // The daemon sets `error` exactly while the runtime is error or crashed.
      if (this.info.error !== null && !want.includes(this.info.status)) {
        throw new RuntaError({
          code: "failed_precondition",
          message: `runtime ${this.name} is ${this.info.status}${this.info.error ? ": " + this.info.error : ""}`,
        });
      }
      if (Date.now() >= deadline) {
        throw new RuntaTimeoutError({ code: "timeout", message: `runtime ${this.name} is still ${this.info.status}, not ${want.join("/")}` });
      }
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 250));
    }
  }

  /** Lifecycle events (created, started, paused, oom_killed, …), oldest first. */
  async events(opts: { after?: number; limit?: number } = {}): Promise<RuntimeEvent[]> {
    const out: RuntimeEvent[] = [];
    let after = opts.after;
    for (;;) {
      const page = await this.http.json<ListResponse<RuntimeEvent>>("GET", `${this.path}/events`, {
        query: { after, limit: opts.limit !== undefined ? Math.min(opts.limit - out.length, 100) : undefined },
      });
      out.push(...page.data);
      if (!page.pagination.has_more || page.pagination.next_cursor === null) break;
      if (opts.limit !== undefined && out.length >= opts.limit) break;
      after = Number(page.pagination.next_cursor);
    }
    return out;
  }

  /**
   * Runs a command to completion and returns its output. A string runs through
   * `/bin/sh -c`; an array is an argv. A non-zero exit is not an error: check
   * `exitCode`. Exec on a paused or shut-down runtime throws a ConflictError.
   */
  async exec(cmd: Command, opts: ExecOptions = {}): Promise<ExecResult> {
    const body = execRequest(cmd, opts);
    const requestTimeoutMs = opts.requestTimeoutMs ?? ((opts.timeoutSecs ?? 60) + 30) * 1000;
    const data = await this.http.data<ExecResultData>("POST", `${this.path}/exec`, {
      json: body,
      timeoutMs: requestTimeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return new ExecResult(data);
  }

  /**
   * Starts a command over the exec WebSocket and returns at once: output is streamed
   * to `onStdout`/`onStderr`, stdin can be written, a PTY requested (`tty: true`),
   * resized and signalled. `await proc.wait()` gives the exit code and output.
   */
  async execStream(cmd: Command, opts: ExecStreamOptions = {}): Promise<ExecProcess> {
    const start = startFrame(cmd, opts);
    const url = this.http.url(`${this.path}/exec/ws`);
    const ws = await MiniWebSocket.connect(url, this.http.baseHeaders(), {
      protocols: ["runta-v1"],
      timeoutMs: opts.connectTimeoutMs ?? 30_000,
    });
    const proc = new ExecProcess(ws, opts);
    proc.begin(start);
    return proc;
  }

  /** Like {@link execStream} with stdin closed at once: a background command to `wait()` for. */
  async execDetached(cmd: Command, opts: Omit<ExecStreamOptions, "tty" | "keepStdinOpen"> = {}): Promise<ExecProcess> {
    return this.execStream(cmd, { ...opts, stdin: opts.stdin ?? "", keepStdinOpen: false });
  }

  /** A client-side session that keeps `cwd` and exported variables between commands. */
  session(opts: SessionOptions = {}): Session {
    return new Session(this, opts);
  }

  /** The public URL of a published port (or the first one). */
  url(port?: number): string | undefined {
    const p = port === undefined ? this.info.publish[0] : this.info.publish.find((x) => x.port === port);
    return p?.url;
  }

  toJSON(): RuntimeInfo {
    return this.info;
  }
}
