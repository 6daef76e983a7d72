/**
 * @runta/runta-sdk — TypeScript SDK for Runta, isolated runtimes for AI agents.
 *
 * ```ts
 * import { Runta } from "@runta/runta-sdk";
 * const runta = new Runta();
 * const rt = await runta.runtimes.create("worker", { vcpus: 2, memoryMiB: 2048 });
 * const r = await rt.exec("python3 --version");
 * console.log(r.exitCode, r.stdoutText);
 * const cp = await rt.checkpoints.create("ready");  // save its files
 * const fork = await runta.runtimes.create("worker-2", { checkpointId: cp });
 * await rt.delete();
 * ```
 */

export { Runta, Runtimes, Admin } from "./client.js";
export type { CreateRuntimeOptions, ListOptions, ListPageOptions, RuntimePage, Health } from "./client.js";
export { Runtime, portSpec } from "./runtime.js";
export { Checkpoint, Checkpoints, RuntimeCheckpoints } from "./checkpoint.js";
export type { Ref } from "./checkpoint.js";
export type { ResizeOptions, UpdateOptions, PublishSpec, WaitOptions } from "./runtime.js";
export { ExecResult } from "./exec.js";
export type { Command, ExecOptions } from "./exec.js";
export { ExecProcess, StreamResult } from "./stream.js";
export type { ExecStreamOptions } from "./stream.js";
export { DEFAULT_MAX_DOWNLOAD_BYTES, RuntimeFiles, unsafeEntryName } from "./files.js";
export type { FileData, WriteOptions, TransferOptions, TransferSummary } from "./files.js";
export { Audits, RuntimeEgress, AUDIT_KINDS, auditDetail, auditHost, hostOf } from "./egress.js";
export type {
  Audit,
  AuditAction,
  AuditKind,
  AuditListOptions,
  AuditPage,
  EgressMode,
  EgressPolicy,
  EgressPolicyInput,
  EgressPolicyView,
  Hosts,
} from "./egress.js";
export { Session } from "./session.js";
export type { SessionOptions } from "./session.js";
export { DEFAULT_ENDPOINT, SDK_VERSION } from "./http.js";
export type { ClientOptions, FetchLike } from "./http.js";
export {
  RuntaError,
  InvalidArgumentError,
  AuthenticationError,
  PermissionDeniedError,
  NotFoundError,
  ConflictError,
  AlreadyExistsError,
  FailedPreconditionError,
  RateLimitError,
  ResourceExhaustedError,
  UnavailableError,
  DeadlineExceededError,
  UnimplementedError,
  InternalError,
  RuntaConnectionError,
  RuntaTimeoutError,
  errorFromResponse,
} from "./errors.js";
export type { ErrorCode, RuntaErrorInit } from "./errors.js";
export type * from "./types.js";
