/**
 * Wire types: the JSON the REST API v1 sends and accepts, field for field
 * (crates/runta-api). snake_case here is the wire's; the SDK's own options are camelCase.
 */

import type { EgressPolicyInput, EgressPolicyView } from "./egress.js";

export type RuntimeStatus =
  | "creating"
  | "running"
  | "paused"
  | "shutdown"
  | "suspended"
  | "deleting"
  | "error"
  | "crashed";

export type Protocol = "http" | "https";

export interface PortSpec {
  port: number;
  protocol?: Protocol;
}

export interface PublishedPort {
  port: number;
  protocol: Protocol;
  /** Public URL through the daemon's ingress, e.g. `https://<uuid>.runta.localhost:8443`. */
  url: string;
}

export interface ResourceRequests {
  vcpus: number;
  memory_mib: number;
  disk_gib: number | null;
}

export interface ResourceLimits {
  memory_mib: number;
}

/** The memory allocated now (0 while not up) and live usage (null while not up). */
export interface ResourceUsage {
  memory_mib: number;
  memory_mib_used: number | null;
  cpu_seconds: number | null;
}

export interface Resources {
  requests: ResourceRequests;
  limits: ResourceLimits;
  current: ResourceUsage;
}

/** The runtime object (SPEC §1), as last fetched from the daemon. */
export interface RuntimeInfo {
  id: string;
  name: string;
  tenant: string;
  status: RuntimeStatus;
  desired_status: RuntimeStatus;
  image: string;
  resources: Resources;
  env: Record<string, string>;
  labels: Record<string, string>;
  publish: PublishedPort[];
  idle_timeout_secs: number | null;
  ip: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  revision: number;
  /** Set exactly while the runtime is `error` or `crashed`. */
  error: string | null;
  /** What the daemon lets a caller do now, from its state machine (absent from older daemons). */
  allowed_actions?: RuntimeAction[];
  /** `false`: suspended for idleness, only start/resume wake it (`idle_policy.mode = suspend_only`). */
  idle_wakeup?: boolean;
  // The official API's spellings of the same record (docs/api.md, "Compatibility
  // with the official client"); optional for daemons older than them.
  /** = `name`. */
  display_name?: string;
  /** = `publish` without URLs. */
  ingress_specs?: { protocol: Protocol; runtime_port: number }[];
  /** = `env`. */
  environment_variables?: Record<string, string>;
  /** = `idle_timeout_secs` and `idle_wakeup`. */
  idle_policy?: IdlePolicy;
  ssh_enabled?: boolean;
  /** The outbound policy in both official spellings (see `runtime.egress`). */
  egress_policy?: EgressPolicyView;
}

/** The official idle policy: off, or suspend after `suspend_after_secs` and wake on a request or only on start/resume. */
export type IdlePolicy =
  | { mode: "disabled" }
  | { mode: "suspend_and_wakeup" | "suspend_only"; suspend_after_secs: number };

/** A verb a runtime may allow (`allowed_actions`). */
export type RuntimeAction = "start" | "stop" | "pause" | "resume" | "delete" | "update" | "exec" | "checkpoint";

/** `POST /v1/runtimes` body. */
export interface CreateRuntimeRequest {
  name: string;
  image?: string;
  resources?: {
    requests?: { vcpus?: number; memory_mib?: number; disk_gib?: number };
    limits?: { memory_mib?: number };
  };
  env?: Record<string, string>;
  labels?: Record<string, string>;
  publish?: PortSpec[];
  idle_timeout_secs?: number;
  /** A checkpoint's UUID or name: start from its files. */
  checkpoint?: string;
  /** Outbound policy (either official shape); absent = open. */
  egress_policy?: EgressPolicyInput;
}

/** `POST /v1/runtimes/{id}/checkpoints` body. */
export interface CreateCheckpointRequest {
  /** Same rules as runtime names; unique per tenant. */
  name: string;
}

/** A checkpoint: a runtime's files saved under a name (`GET /v1/checkpoints/{id}`). */
export interface CheckpointInfo {
  id: string;
  name: string;
  tenant: string;
  /** The runtime it was taken from (which may since have been deleted). */
  source_runtime_id: string;
  source_runtime_name: string;
  image: string;
  /** Bytes of its own layer (forks share it; they do not copy it). */
  size_bytes: number;
  created_at: string;
}

/** `PATCH /v1/runtimes/{id}` body. */
export interface UpdateRuntimeRequest {
  resources?: {
    requests?: { vcpus?: number; memory_mib?: number; disk_gib?: number };
    limits?: { memory_mib?: number };
  };
  labels?: Record<string, string>;
  publish?: PortSpec[];
  idle_timeout_secs?: number;
  /** Replaces the outbound policy; new connections follow it at once. */
  egress_policy?: EgressPolicyInput;
}

/** `POST /v1/runtimes/{id}/exec` body. */
export interface ExecRequest {
  command: string;
  args?: string[];
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string;
  timeout_secs?: number;
  max_output_bytes?: number;
}

/** `POST /v1/runtimes/{id}/exec` response `data`. */
export interface ExecResultData {
  exit_code: number;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  duration_ms: number;
  timed_out: boolean;
}

/** One entry of `GET /v1/runtimes/{id}/events`. */
export interface RuntimeEvent {
  id: number;
  runtime_id: string;
  /** `created`, `started`, `paused`, `resumed`, `stopped`, `resized`, `oom_killed`, … */
  type: string;
  message: string | null;
  created_at: string;
}

/** One entry of `GET /v1/runtimes/{id}/files/list`. */
export interface FileEntry {
  name: string;
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  /** Permission bits (and possibly type bits) as a number; `mode & 0o7777` for permissions. */
  mode: number;
}

export interface Pagination {
  next_cursor: string | null;
  has_more: boolean;
}

export interface ListResponse<T> {
  data: T[];
  pagination: Pagination;
}

/** Exec WebSocket: frames the client sends. */
export type ClientFrame =
  | {
      type: "start";
      command: string;
      args?: string[];
      env?: Record<string, string>;
      cwd?: string;
      tty?: boolean;
      rows?: number;
      cols?: number;
    }
  | { type: "stdin"; data_base64: string }
  | { type: "resize"; rows: number; cols: number }
  | { type: "signal"; signal: string | number }
  | { type: "close_stdin" };

/** Exec WebSocket: frames the server sends. */
export type ServerFrame =
  | { type: "stdout"; data_base64: string }
  | { type: "stderr"; data_base64: string }
  | { type: "exit"; exit_code: number }
  | { type: "error"; code: string; message: string };

/** `POST /v1/tokens` response `data` (admin only). */
export interface TokenCreated {
  id: string;
  tenant: string;
  token: string;
  created_at: string;
}
