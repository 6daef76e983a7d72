/**
 * Streaming / interactive exec over `GET /v1/runtimes/{id}/exec/ws`: output arrives
 * as it is produced, stdin can be written, a PTY can be asked for and resized, and
 * signals sent.
 */

import { errorFromCode, InvalidArgumentError, RuntaConnectionError, RuntaError } from "./errors.js";
import type { Command } from "./exec.js";
import type { ClientFrame, ServerFrame } from "./types.js";
import type { MiniWebSocket, WsMessage } from "./websocket.js";

export interface ExecStreamOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Allocate a pseudo-terminal (stdout and stderr then arrive merged on stdout). */
  tty?: boolean;
  rows?: number;
  cols?: number;
  /** Called with every chunk of standard output as it arrives. */
  onStdout?: (chunk: Uint8Array) => void;
  /** Called with every chunk of standard error as it arrives. */
  onStderr?: (chunk: Uint8Array) => void;
  /** Written to stdin right after the start, then stdin is closed (unless `keepStdinOpen`). */
  stdin?: string | Uint8Array;
  /** With `stdin` given: leave stdin open for more writes. */
  keepStdinOpen?: boolean;
  /** Keep the output in memory for {@link ExecProcess.wait}'s result (default true). */
  collectOutput?: boolean;
  /** Limit for establishing the connection, in ms (default 30 000). */
  connectTimeoutMs?: number;
}

/** What a streamed command ended with. */
export class StreamResult {
  constructor(
    readonly exit_code: number,
    readonly stdoutBytes: Uint8Array,
    readonly stderrBytes: Uint8Array,
  ) {}
  get exitCode(): number {
    return this.exit_code;
  }
  get stdout(): string {
    return Buffer.from(this.stdoutBytes).toString("utf8");
  }
  get stderr(): string {
    return Buffer.from(this.stderrBytes).toString("utf8");
  }
  get stdoutText(): string {
    return this.stdout;
  }
  get stderrText(): string {
    return this.stderr;
  }
}

/** Builds the `start` frame. */
export function startFrame(cmd: Command, opts: ExecStreamOptions): ClientFrame {
  let command: string;
  let args: string[] | undefined;
  if (typeof cmd === "string") {
    if (cmd.trim() === "") throw new InvalidArgumentError({ code: "invalid_argument", message: "command: must not be empty", field: "command" });
    command = cmd;
  } else {
    if (cmd.length === 0 || !cmd[0]) throw new InvalidArgumentError({ code: "invalid_argument", message: "command: the argv must name an executable", field: "command" });
    command = cmd[0];
    args = cmd.slice(1);
  }
  const f: ClientFrame = { type: "start", command };
  if (args) f.args = args;
  if (opts.env) f.env = { ...opts.env };
  if (opts.cwd !== undefined) f.cwd = opts.cwd;
  if (opts.tty) f.tty = true;
  if (opts.rows !== undefined) f.rows = opts.rows;
  if (opts.cols !== undefined) f.cols = opts.cols;
  return f;
}

/** A command running in a runtime, connected over a WebSocket. */
export class ExecProcess {
  private readonly out: Buffer[] = [];
  private readonly err: Buffer[] = [];
  private readonly done: Promise<StreamResult>;
  private exitCode: number | undefined;
  private settled = false;

  /** @internal */
  constructor(private readonly ws: MiniWebSocket, private readonly opts: ExecStreamOptions) {
    const collect = opts.collectOutput !== false;
    this.done = new Promise<StreamResult>((resolve, reject) => {
      const fail = (e: RuntaError) => {
        if (this.settled) return;
        this.settled = true;
        reject(e);
        ws.close();
      };
      ws.on("message", (m: WsMessage) => {
        if (!m.text) {
          // The server sends JSON text frames only; treat stray binary as stdout.
          if (collect) this.out.push(m.data);
          opts.onStdout?.(m.data);
          return;
        }
        let f: ServerFrame;
        try {
          f = JSON.parse(m.data.toString("utf8")) as ServerFrame;
        } catch {
          return;
        }
        switch (f.type) {
          case "stdout": {
            const b = Buffer.from(f.data_base64, "base64");
            if (collect) this.out.push(b);
            opts.onStdout?.(b);
            break;
          }
          case "stderr": {
            const b = Buffer.from(f.data_base64, "base64");
            if (collect) this.err.push(b);
            opts.onStderr?.(b);
            break;
          }
          case "exit":
            this.exitCode = f.exit_code;
            if (!this.settled) {
              this.settled = true;
              resolve(new StreamResult(f.exit_code, Buffer.concat(this.out), Buffer.concat(this.err)));
            }
            ws.close();
            break;
          case "error":
            fail(errorFromCode(f.code, f.message));
            break;
        }
      });
      ws.on("close", (code: number, reason: string) => {
        fail(
          new RuntaConnectionError({
            code: "connection_error",
            message: `exec stream closed before the command exited (WebSocket close ${code}${reason ? ": " + reason : ""})`,
          }),
        );
      });
      ws.on("error", (e: Error) => fail(new RuntaConnectionError({ code: "connection_error", message: `exec stream: ${e.message}`, cause: e })));
    });
    // Avoid unhandled rejections when the caller never awaits wait().
    this.done.catch(() => undefined);
  }

  /** @internal */
  begin(start: ClientFrame): void {
    this.send(start);
    if (this.opts.stdin !== undefined) {
      this.write(this.opts.stdin);
      if (!this.opts.keepStdinOpen) this.closeStdin();
    }
  }

  private send(f: ClientFrame): void {
    this.ws.sendText(JSON.stringify(f));
  }

  /** Writes to the command's standard input. */
  write(data: string | Uint8Array): void {
    const b = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    this.send({ type: "stdin", data_base64: b.toString("base64") });
  }

  /** Closes standard input (the command sees end of file). */
  closeStdin(): void {
    this.send({ type: "close_stdin" });
  }

  /** Changes the PTY size. */
  resize(rows: number, cols: number): void {
    this.send({ type: "resize", rows, cols });
  }

  /** Sends a signal: a number or a name (`"INT"`, `"SIGTERM"`, …). */
  signal(signal: string | number): void {
    this.send({ type: "signal", signal });
  }

  /** Sends SIGKILL. */
  kill(): void {
    this.signal("KILL");
  }

  /** The exit code once known. */
  get exit_code(): number | undefined {
    return this.exitCode;
  }

  /** Resolves when the command exits; rejects with a typed error if the daemon refused or the connection broke. */
  wait(): Promise<StreamResult> {
    return this.done;
  }

  /** Hangs up: the daemon kills the command if it still runs. */
  close(): void {
    this.ws.close();
  }
}
