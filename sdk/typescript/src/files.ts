/** Files in a runtime: read, write, list, and recursive upload/download. */

import { createReadStream, createWriteStream, promises as fsp } from "node:fs";
import * as path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";

import { InvalidArgumentError, RuntaError } from "./errors.js";
import type { ExecOptions, ExecResult } from "./exec.js";
import { HttpClient, type BodyInit } from "./http.js";
import type { FileEntry } from "./types.js";

/** Data accepted by {@link RuntimeFiles.write}. */
export type FileData = string | Uint8Array | ArrayBuffer | Blob;

export interface WriteOptions {
  /** Permissions, as a number (`0o755`) or an octal string (`"0755"`); default 0644. */
  mode?: number | string;
  /** Client-side limit in ms (default 10 minutes). */
  timeoutMs?: number;
}

export interface TransferOptions {
  /** Client-side limit per file in ms (default 10 minutes). */
  timeoutMs?: number;
  /** Files moved at once during a directory transfer (default 4). */
  concurrency?: number;
}

export interface TransferSummary {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
}

/** @internal What the file helpers need from a runtime. */
export interface FileHost {
  readonly id: string;
  readonly http: HttpClient;
  exec(cmd: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
}

const FILE_TIMEOUT_MS = 10 * 60_000;

function modeString(mode: number | string | undefined): string | undefined {
  if (mode === undefined) return undefined;
  if (typeof mode === "number") {
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new InvalidArgumentError({ code: "invalid_argument", message: "mode: must be permissions between 0 and 0o7777", field: "mode" });
    }
    return "0" + mode.toString(8).padStart(3, "0");
  }
  if (!/^(0o)?[0-7]{1,4}$/.test(mode)) {
    throw new InvalidArgumentError({ code: "invalid_argument", message: `mode: ${JSON.stringify(mode)} is not octal permissions such as 0644`, field: "mode" });
  }
  return mode;
}

function toBody(data: FileData): BodyInit {
  if (typeof data === "string") return Buffer.from(data, "utf8");
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data as BodyInit;
}

/** Joins a remote (POSIX) path. */
function rjoin(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(n, items.length)) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i] as T);
    }
  });
  await Promise.all(workers);
}

/** `runtime.files`: the file routes of one runtime. Paths are absolute paths inside the runtime. */
export class RuntimeFiles {
  /** @internal */
  constructor(private readonly host: FileHost) {}

  private get base(): string {
    return `/v1/runtimes/${encodeURIComponent(this.host.id)}/files`;
  }

  /** Writes one file (parents are created; the write is atomic). */
  async write(remotePath: string, data: FileData, opts: WriteOptions = {}): Promise<void> {
    const mode = modeString(opts.mode);
    await this.host.http.empty("PUT", this.base, {
      query: { path: remotePath, mode },
      body: toBody(data),
      timeoutMs: opts.timeoutMs ?? FILE_TIMEOUT_MS,
    });
  }

  /** Reads one file's bytes. */
  async read(remotePath: string, opts: { timeoutMs?: number } = {}): Promise<Uint8Array> {
    const resp = await this.host.http.raw("GET", this.base, {
      query: { path: remotePath },
      timeoutMs: opts.timeoutMs ?? FILE_TIMEOUT_MS,
    });
    try {
      return new Uint8Array(await resp.arrayBuffer());
    } finally {
      HttpClient.done(resp);
    }
  }

  /** Reads one file as text (UTF-8 by default). */
  async readText(remotePath: string, opts: { encoding?: BufferEncoding; timeoutMs?: number } = {}): Promise<string> {
    const bytes = await this.read(remotePath, opts);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(opts.encoding ?? "utf8");
  }

  /** Lists a folder: entries with `name`, `type` (`file`/`dir`/`symlink`/`other`), `size`, `mode`. */
  async list(remoteDir: string): Promise<FileEntry[]> {
    return this.host.http.data<FileEntry[]>("GET", `${this.base}/list`, { query: { path: remoteDir } });
  }

  /** True when something exists at the path (a symlink counts, even a dangling one). */
  async exists(remotePath: string): Promise<boolean> {
    const r = await this.host.exec(["test", "-e", remotePath, "-o", "-L", remotePath]);
    return r.exit_code === 0;
  }

  /** Creates a folder and its parents (like `mkdir -p`). */
  async mkdir(remoteDir: string): Promise<void> {
    await this.mkdirs([remoteDir]);
  }

  /** Removes a file or a folder with everything in it (like `rm -rf`). */
  async remove(remotePath: string): Promise<void> {
    const r = await this.host.exec(["rm", "-rf", "--", remotePath]);
    if (r.exit_code !== 0) throw new RuntaError({ code: "internal", message: `remove ${remotePath}: ${r.stderr.trim() || "rm failed"}` });
  }

  private async mkdirs(dirs: string[]): Promise<void> {
    // Batches keep the argv well below ARG_MAX.
    for (let i = 0; i < dirs.length; i += 200) {
      const batch = dirs.slice(i, i + 200);
      const r = await this.host.exec(["mkdir", "-p", "--", ...batch]);
      if (r.exit_code !== 0) {
        throw new RuntaError({ code: "internal", message: `mkdir ${batch[0]}: ${r.stderr.trim() || "mkdir failed"}` });
      }
    }
  }

  /**
   * Copies a local file or folder (recursively) to `remotePath`, which becomes the
   * copy itself: `upload("./src", "/app")` makes `/app/<what src holds>`. Permissions
   * are kept; symlinks are recreated as symlinks.
   */
  async upload(localPath: string, remotePath: string, opts: TransferOptions = {}): Promise<TransferSummary> {
    const st = await fsp.lstat(localPath);
    const sum: TransferSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
    if (st.isFile()) {
      await this.uploadFile(localPath, remotePath, st.mode & 0o7777, st.size, opts);
      sum.files = 1;
      sum.bytes = st.size;
      return sum;
    }
    if (st.isSymbolicLink()) {
      await this.symlink(await fsp.readlink(localPath), remotePath);
      sum.symlinks = 1;
      return sum;
    }
    if (!st.isDirectory()) {
      throw new InvalidArgumentError({ code: "invalid_argument", message: `${localPath}: not a file or folder`, field: "localPath" });
    }
    const dirs: string[] = [remotePath];
    const files: { local: string; remote: string; mode: number; size: number }[] = [];
    const links: { target: string; remote: string }[] = [];
    const walk = async (ldir: string, rdir: string): Promise<void> => {
      const entries = await fsp.readdir(ldir, { withFileTypes: true });
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of entries) {
        const l = path.join(ldir, e.name);
        const r = rjoin(rdir, e.name);
        if (e.isDirectory()) {
          dirs.push(r);
          await walk(l, r);
        } else if (e.isSymbolicLink()) {
          links.push({ target: await fsp.readlink(l), remote: r });
        } else if (e.isFile()) {
          const s = await fsp.stat(l);
          files.push({ local: l, remote: r, mode: s.mode & 0o7777, size: s.size });
        }
      }
    };
    await walk(localPath, remotePath);
    await this.mkdirs(dirs);
    await pool(files, opts.concurrency ?? 4, async (f) => {
      await this.uploadFile(f.local, f.remote, f.mode, f.size, opts);
      sum.bytes += f.size;
    });
    for (const l of links) await this.symlink(l.target, l.remote);
    sum.files = files.length;
    sum.directories = dirs.length;
    sum.symlinks = links.length;
    return sum;
  }

  private async uploadFile(local: string, remote: string, mode: number, size: number, opts: TransferOptions): Promise<void> {
    const body =
      size <= 8 * 1024 * 1024
        ? await fsp.readFile(local)
        : (Readable.toWeb(createReadStream(local)) as unknown as BodyInit);
    await this.host.http.empty("PUT", this.base, {
      query: { path: remote, mode: modeString(mode) },
      body,
      headers: size > 8 * 1024 * 1024 ? { "content-length": String(size) } : {},
      timeoutMs: opts.timeoutMs ?? FILE_TIMEOUT_MS,
    });
  }

  private async symlink(target: string, remote: string): Promise<void> {
    const parent = path.posix.dirname(remote);
    const r = await this.host.exec(["sh", "-c", 'mkdir -p -- "$1" && ln -sfn -- "$2" "$3"', "sh", parent, target, remote]);
    if (r.exit_code !== 0) throw new RuntaError({ code: "internal", message: `symlink ${remote}: ${r.stderr.trim() || "ln failed"}` });
  }

  /**
   * Copies a remote file or folder (recursively) to `localPath`, which becomes the
   * copy itself. Local parents are created; permissions and symlinks are kept.
   */
  async download(remotePath: string, localPath: string, opts: TransferOptions = {}): Promise<TransferSummary> {
    const sum: TransferSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
    let entries: FileEntry[] | undefined;
    try {
      entries = await this.list(remotePath);
    } catch (e) {
      // Listing a regular file is refused as "not a directory": then it is a file.
      if (!(e instanceof InvalidArgumentError)) throw e;
    }
    if (entries === undefined) {
      await fsp.mkdir(path.dirname(path.resolve(localPath)), { recursive: true });
      // The parent's listing carries the file's permissions.
      let mode: number | undefined;
      try {
        const base = path.posix.basename(remotePath);
        mode = (await this.list(path.posix.dirname(remotePath))).find((e) => e.name === base)?.mode;
      } catch {
        mode = undefined;
      }
      sum.bytes = await this.downloadFile(remotePath, localPath, mode === undefined ? undefined : mode & 0o7777, opts);
      sum.files = 1;
      return sum;
    }
    const files: { remote: string; local: string; mode: number }[] = [];
    const links: { remote: string; local: string }[] = [];
    const walk = async (rdir: string, ldir: string, list: FileEntry[]): Promise<void> => {
      await fsp.mkdir(ldir, { recursive: true });
      sum.directories++;
      for (const e of list) {
        if (e.name === "." || e.name === ".." || e.name.includes("/") || e.name.includes("\\")) continue;
        const r = rjoin(rdir, e.name);
        const l = path.join(ldir, e.name);
        if (e.type === "dir") await walk(r, l, await this.list(r));
        else if (e.type === "file") files.push({ remote: r, local: l, mode: e.mode & 0o7777 });
        else if (e.type === "symlink") links.push({ remote: r, local: l });
      }
    };
    await walk(remotePath, localPath, entries);
    await pool(files, opts.concurrency ?? 4, async (f) => {
      sum.bytes += await this.downloadFile(f.remote, f.local, f.mode, opts);
    });
    for (const l of links) {
      const r = await this.host.exec(["readlink", "--", l.remote]);
      if (r.exit_code !== 0) continue;
      await fsp.rm(l.local, { force: true });
      await fsp.symlink(r.stdout.replace(/\n$/, ""), l.local);
      sum.symlinks++;
    }
    sum.files = files.length;
    return sum;
  }

  private async downloadFile(remote: string, local: string, mode: number | undefined, opts: TransferOptions): Promise<number> {
    const resp = await this.host.http.raw("GET", this.base, {
      query: { path: remote },
      timeoutMs: opts.timeoutMs ?? FILE_TIMEOUT_MS,
    });
    let bytes = 0;
    try {
      if (resp.body) {
        const src = Readable.fromWeb(resp.body as unknown as NodeReadableStream<Uint8Array>);
        src.on("data", (c: Buffer) => {
          bytes += c.length;
        });
        await pipeline(src, createWriteStream(local));
      } else {
        await fsp.writeFile(local, new Uint8Array(0));
      }
    } finally {
      HttpClient.done(resp);
    }
    if (mode !== undefined) await fsp.chmod(local, mode);
    return bytes;
  }
}
