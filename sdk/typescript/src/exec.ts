/** Buffered exec: options, command normalisation and the result object. */

import { InvalidArgumentError } from "./errors.js";
import type { ExecRequest, ExecResultData } from "./types.js";

/**
 * A command: a string runs through `/bin/sh -c` (pipes, `&&`, globbing work); an
 * array is an argv (`["python3", "-c", "print(1)"]`) run without a shell.
 */
export type Command = string | readonly string[];

export interface ExecOptions {
  /** Working directory (absolute); default `/root`. */
  cwd?: string;
  /** Extra environment, merged over the runtime's. */
  env?: Record<string, string>;
  /** Text fed to the command's standard input. */
  stdin?: string;
  /** Server-side limit (default 60 s): on expiry the process group is killed, `timedOut` is true and the exit code 124. */
  timeoutSecs?: number;
  /** Per-stream output cap in bytes (default 1 MiB); bytes beyond it are dropped and the `*Truncated` flag set. */
  maxOutputBytes?: number;
  /** Client-side limit for the HTTP call in ms; default `timeoutSecs` + 30 s. */
  requestTimeoutMs?: number;
  /** Cancels the call on the client side. */
  signal?: AbortSignal;
}

/** Builds the wire body of an exec. */
export function execRequest(cmd: Command, opts: ExecOptions = {}): ExecRequest {
  let req: ExecRequest;
  if (typeof cmd === "string") {
    if (cmd.trim() === "") throw new InvalidArgumentError({ code: "invalid_argument", message: "command: must not be empty", field: "command" });
    req = { command: cmd };
  } else if (Array.isArray(cmd)) {
    if (cmd.length === 0 || typeof cmd[0] !== "string" || cmd[0] === "") {
      throw new InvalidArgumentError({ code: "invalid_argument", message: "command: the argv must name an executable", field: "command" });
    }
    for (const [i, a] of cmd.entries()) {
      if (typeof a !== "string") {
        throw new InvalidArgumentError({ code: "invalid_argument", message: `args[${i}]: must be a string`, field: `args[${i}]` });
      }
    }
    req = { command: cmd[0] as string, args: cmd.slice(1) as string[] };
  } else {
    throw new InvalidArgumentError({ code: "invalid_argument", message: "command: must be a string or an array of strings", field: "command" });
  }
  if (opts.cwd !== undefined) req.cwd = opts.cwd;
  if (opts.env !== undefined) req.env = { ...opts.env };
  if (opts.stdin !== undefined) req.stdin = opts.stdin;
  if (opts.timeoutSecs !== undefined) req.timeout_secs = opts.timeoutSecs;
  if (opts.maxOutputBytes !== undefined) req.max_output_bytes = opts.maxOutputBytes;
  return req;
}

/**
 * The outcome of a finished command. The wire's snake_case fields are kept as they
 * come (`exit_code`, `stdout`, …) and mirrored in camelCase (`exitCode`, `stdoutText`, …).
 */
export class ExecResult implements ExecResultData {
  readonly exit_code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly stdout_truncated: boolean;
  readonly stderr_truncated: boolean;
  readonly duration_ms: number;
  readonly timed_out: boolean;

  constructor(data: ExecResultData) {
    this.exit_code = data.exit_code;
    this.stdout = data.stdout;
    this.stderr = data.stderr;
    this.stdout_truncated = data.stdout_truncated;
    this.stderr_truncated = data.stderr_truncated;
    this.duration_ms = data.duration_ms;
    this.timed_out = data.timed_out;
  }

  get exitCode(): number {
    return this.exit_code;
  }
  /** Standard output as text (UTF-8, decoded lossily by the daemon). */
  get stdoutText(): string {
    return this.stdout;
  }
  /** Standard error as text. */
  get stderrText(): string {
    return this.stderr;
  }
  get stdoutTruncated(): boolean {
    return this.stdout_truncated;
  }
  get stderrTruncated(): boolean {
    return this.stderr_truncated;
  }
  get durationMs(): number {
    return this.duration_ms;
  }
  get timedOut(): boolean {
    return this.timed_out;
  }
  /** True when the command exited 0 and did not time out. */
  get ok(): boolean {
    return this.exit_code === 0 && !this.timed_out;
  }

  /** The wire form (what `JSON.stringify` prints). */
  toJSON(): ExecResultData & { exitCode: number } {
    return {
      exit_code: this.exit_code,
      exitCode: this.exit_code,
      stdout: this.stdout,
      stderr: this.stderr,
      stdout_truncated: this.stdout_truncated,
      stderr_truncated: this.stderr_truncated,
      duration_ms: this.duration_ms,
      timed_out: this.timed_out,
    };
  }
}
