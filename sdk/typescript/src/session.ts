/**
 * Sessions: client-side handles that keep a working directory and environment
 * variables between commands (SPEC §3). Every command still goes through buffered
 * exec; no state lives on the server.
 *
 * A string command runs in a small `/bin/sh` wrapper that `eval`s it in the current
 * shell (so `cd` and `export` take effect) and, on exit, prints a trailer after a
 * random marker with the final directory and the exported environment. The trailer
 * is removed from `stdout` before the result is returned.
 */

import { randomBytes } from "node:crypto";

import type { Command, ExecOptions } from "./exec.js";
import { ExecResult } from "./exec.js";

export interface SessionOptions {
  /** Starting directory (default `/root`, the exec default). */
  cwd?: string;
  /** Variables set for every command of the session. */
  env?: Record<string, string>;
}

/** Variables the shell maintains itself: never carried over. */
const VOLATILE = new Set(["PWD", "OLDPWD", "SHLVL", "_", "__RUNTA_CMD", "__RUNTA_MARK", "__RUNTA_STATE"]);

/** @internal What a session needs from its runtime. */
export interface SessionHost {
  exec(cmd: Command, opts?: ExecOptions): Promise<ExecResult>;
  readonly files: { readText(path: string): Promise<string> };
}

const WRAPPER = [
  'env -0 > "$__RUNTA_STATE.env0" 2>/dev/null',
  "__runta_done() {",
  "  __runta_rc=$?",
  '  { printf \'%s\\n\' "$(pwd)"; cat "$__RUNTA_STATE.env0"; printf \'\\0%s\\0\' "$__RUNTA_MARK"; env -0; } > "$__RUNTA_STATE" 2>/dev/null',
  '  rm -f "$__RUNTA_STATE.env0"',
  '  printf \'\\n%s\\n\' "$__RUNTA_MARK"',
  '  cat "$__RUNTA_STATE"',
  "  exit $__runta_rc",
  "}",
  "trap __runta_done EXIT",
  'eval "$__RUNTA_CMD"',
].join("\n");

export class Session {
  private _cwd: string;
  private _env: Record<string, string>;
  private readonly mark: string;
  private readonly stateFile: string;

  /** @internal */
  constructor(private readonly host: SessionHost, opts: SessionOptions = {}) {
    this._cwd = opts.cwd ?? "/root";
    this._env = { ...(opts.env ?? {}) };
    const id = randomBytes(8).toString("hex");
    this.mark = `__RUNTA_SESSION_${id}__`;
    this.stateFile = `/tmp/.runta-session-${id}`;
  }

  /** The directory the next command starts in. */
  get cwd(): string {
    return this._cwd;
  }

  /** The variables the next command gets (those set on the session and those its commands exported). */
  get env(): Record<string, string> {
    return { ...this._env };
  }

  /** Changes directory for the next commands (not checked until one runs). */
  cd(dir: string): this {
    this._cwd = dir.startsWith("/") ? dir : `${this._cwd.replace(/\/+$/, "")}/${dir}`;
    return this;
  }

  /** Sets (or with `undefined`, forgets) a variable for the next commands. */
  setEnv(name: string, value: string | undefined): this {
    if (value === undefined) delete this._env[name];
    else this._env[name] = value;
    return this;
  }

  /**
   * Runs a command in the session's directory and environment. A string runs through
   * the shell and its `cd`/`export` are remembered; an argv array runs as is (and
   * changes nothing).
   */
  async exec(cmd: Command, opts: ExecOptions = {}): Promise<ExecResult> {
    const env = { ...this._env, ...(opts.env ?? {}) };
    const cwd = opts.cwd ?? this._cwd;
    if (typeof cmd !== "string") {
      return this.host.exec(cmd, { ...opts, cwd, env });
    }
    const result = await this.host.exec(["/bin/sh", "-c", WRAPPER], {
      ...opts,
      cwd,
      env: { ...env, __RUNTA_CMD: cmd, __RUNTA_MARK: this.mark, __RUNTA_STATE: this.stateFile },
    });
    const idx = result.stdout.lastIndexOf(`\n${this.mark}\n`);
    let stdout = result.stdout;
    let state: string | undefined;
    if (idx >= 0) {
      stdout = result.stdout.slice(0, idx);
      state = result.stdout.slice(idx + this.mark.length + 2);
    } else if (result.stdout_truncated && !result.timed_out) {
      // The trailer fell beyond the output cap: the wrapper also left it in a file.
      try {
        state = await this.host.files.readText(this.stateFile);
      } catch {
        state = undefined;
      }
    }
    if (state !== undefined) this.absorb(state);
    return new ExecResult({ ...result.toJSON(), stdout });
  }

  /** Alias of {@link exec}. */
  run(cmd: Command, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(cmd, opts);
  }

  private absorb(state: string): void {
    const nl = state.indexOf("\n");
    if (nl < 0) return;
    const cwd = state.slice(0, nl);
    const sep = state.indexOf(`\0${this.mark}\0`, nl);
    if (sep < 0) return;
    if (cwd.startsWith("/")) this._cwd = cwd;
    const before = parseEnv(state.slice(nl + 1, sep));
    const after = parseEnv(state.slice(sep + this.mark.length + 2));
    // Track what the command set or changed, keep tracking what the session already
    // had (unless the command unset it); leave the runtime's own variables alone.
    const next: Record<string, string> = {};
    for (const [k, v] of Object.entries(after)) {
      if (before[k] !== v || k in this._env) next[k] = v;
    }
    this._env = next;
  }

  /** Forgets the session's scratch file in the runtime. */
  async close(): Promise<void> {
    await this.host.exec(["rm", "-f", "--", this.stateFile, `${this.stateFile}.env0`]).catch(() => undefined);
  }
}

function parseEnv(block: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of block.split("\0")) {
    const eq = item.indexOf("=");
    if (eq <= 0) continue;
    const k = item.slice(0, eq);
    if (VOLATILE.has(k) || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) continue;
    out[k] = item.slice(eq + 1);
  }
  return out;
}
