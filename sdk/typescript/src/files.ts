/** Files in a runtime: read, write, list, and recursive upload/download. */

import { constants as fsc, createReadStream, promises as fsp } from "node:fs";
import * as path from "node:path";
import { Readable } from "node:stream";
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
  /**
   * Most bytes a download writes locally, in total (default 1 GiB,
   * {@link DEFAULT_MAX_DOWNLOAD_BYTES}); a larger one is refused before the
   * file (or, for a folder, anything) is written.
   */
  maxBytes?: number;
}

/** What {@link RuntimeFiles.download} writes at most unless `maxBytes` says otherwise. */
export const DEFAULT_MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024;

/**
 * Why a name from a runtime's listing cannot be one local path component, or
 * `undefined` when it can. Listings come from inside the runtime: hostile.
 */
export function unsafeEntryName(name: string): string | undefined {
  if (typeof name !== "string" || name === "") return "is empty";
  if (name === "." || name === "..") return "is a parent or self reference";
  if (name.includes("/") || name.includes("\\")) return "contains a path separator";
  if (name.includes("\0")) return "contains a NUL byte";
  if (Buffer.byteLength(name) > 255) return "is longer than 255 bytes";
  return undefined;
}

function refused(message: string): RuntaError {
  return new RuntaError({ code: "invalid_argument", message });
}

/** `local` as a folder, made if missing; a link or anything else there is refused. */
async function realDir(local: string): Promise<void> {
  try {
    await fsp.mkdir(local);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  const st = await fsp.lstat(local);
  if (!st.isDirectory()) {
    throw refused(`download: ${local} exists and is not a folder (a link or a file); refusing to write through it`);
  }
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

function tooMuch(what: string, size: number, max: number): RuntaError {
  return new RuntaError({
    code: "resource_exhausted",
    message: `download: ${what} is ${size} bytes, more than maxBytes (${max}); nothing more was written`,
  });
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

  /**
   * Reads one file's bytes; with `maxBytes`, at most its first `maxBytes` (the
   * daemon serves the prefix). Files past the daemon's download limit are a 413.
   */
  async read(remotePath: string, opts: { timeoutMs?: number; maxBytes?: number } = {}): Promise<Uint8Array> {
    const resp = await this.host.http.raw("GET", this.base, {
      query: { path: remotePath, max_bytes: opts.maxBytes === undefined ? undefined : String(opts.maxBytes) },
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
   * copy itself. Local parents are created; permissions (never setuid, setgid or
   * sticky) and symlinks are kept. Everything from the runtime is treated as
   * hostile: entry names must be one plain component, links already under
   * `localPath` are never written through, and at most `maxBytes` are written.
   */
  async download(remotePath: string, localPath: string, opts: TransferOptions = {}): Promise<TransferSummary> {
    const sum: TransferSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
    const max = opts.maxBytes ?? DEFAULT_MAX_DOWNLOAD_BYTES;
    const budget = { left: max, max };
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
      sum.bytes = await this.downloadFile(remotePath, localPath, mode, budget, opts);
      sum.files = 1;
      return sum;
    }
    // Plan first (every name checked, sizes summed), write after.
    const dirs: string[] = [];
    const files: { remote: string; local: string; mode: number; size: number }[] = [];
    const links: { remote: string; local: string }[] = [];
    let planned = 0;
    const walk = async (rdir: string, ldir: string, list: FileEntry[]): Promise<void> => {
      dirs.push(ldir);
      const seen = new Set<string>();
      for (const e of list) {
        const why = unsafeEntryName(e.name);
        if (why !== undefined) throw refused(`download: ${rdir} lists an entry whose name ${why}: ${JSON.stringify(e.name)}`);
        if (seen.has(e.name)) throw refused(`download: ${rdir} lists ${JSON.stringify(e.name)} twice`);
        seen.add(e.name);
        const r = rjoin(rdir, e.name);
        const l = path.join(ldir, e.name);
        if (e.type === "dir") await walk(r, l, await this.list(r));
        else if (e.type === "file") {
          planned += Math.max(0, Number(e.size) || 0);
          files.push({ remote: r, local: l, mode: e.mode, size: e.size });
        } else if (e.type === "symlink") links.push({ remote: r, local: l });
      }
    };
    await walk(remotePath, localPath, entries);
    if (planned > max) throw tooMuch(remotePath, planned, max);
    await fsp.mkdir(path.dirname(path.resolve(localPath)), { recursive: true });
    for (const d of dirs) await realDir(d);
    sum.directories = dirs.length;
    await pool(files, opts.concurrency ?? 4, async (f) => {
      const n = await this.downloadFile(f.remote, f.local, f.mode, budget, opts);
      sum.bytes += n;
    });
    for (const l of links) {
      const r = await this.host.exec(["readlink", "--", l.remote]);
      if (r.exit_code !== 0) continue;
      // Made beside the name and renamed over it: an existing link is
      // replaced, never followed; a folder there makes the rename fail.
      const tmp = `${l.local}.runta-link-${process.pid}-${Math.random().toString(36).slice(2)}`;
      await fsp.symlink(r.stdout.replace(/\n$/, ""), tmp);
      try {
        await fsp.rename(tmp, l.local);
      } catch (e) {
        await fsp.rm(tmp, { force: true });
        throw e;
      }
      sum.symlinks++;
    }
    sum.files = files.length;
    return sum;
  }

  /**
   * One file into `local` through a temporary file opened with O_EXCL and
   * O_NOFOLLOW, renamed into place when complete: a link at `local` is
   * replaced, not written through, and a refused download leaves `local` as it was.
   */
  private async downloadFile(
    remote: string,
    local: string,
    mode: number | undefined,
    budget: { left: number; max: number },
    opts: TransferOptions,
  ): Promise<number> {
    // Files download side by side: the budget is shared and charged per chunk.
    const room = Math.max(0, budget.left);
    const resp = await this.host.http.raw("GET", this.base, {
      query: { path: remote, max_bytes: String(room) },
      timeoutMs: opts.timeoutMs ?? FILE_TIMEOUT_MS,
    });
    let bytes = 0;
    let tmp: string | undefined;
    try {
      const announced = Number(resp.headers.get("x-runta-file-size") ?? resp.headers.get("content-length") ?? NaN);
      if (Number.isFinite(announced) && announced > budget.left) throw tooMuch(remote, budget.max - budget.left + announced, budget.max);
      tmp = `${local}.runta-part-${process.pid}-${Math.random().toString(36).slice(2)}`;
      const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
      try {
        if (resp.body) {
          const src = Readable.fromWeb(resp.body as unknown as NodeReadableStream<Uint8Array>);
          for await (const chunk of src as AsyncIterable<Buffer>) {
            bytes += chunk.length;
            budget.left -= chunk.length;
            if (budget.left < 0) throw tooMuch(remote, budget.max - budget.left, budget.max);
            await fh.write(chunk);
          }
        }
        if (Number.isFinite(announced) && announced !== bytes) {
          throw new RuntaError({ code: "internal", message: `download: ${remote}: announced ${announced} bytes, received ${bytes}` });
        }
        // The bits come from the runtime: a set-id file would be a privilege here.
        await fh.chmod((mode ?? (0o666 & ~process.umask())) & 0o777);
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, local);
      tmp = undefined;
    } finally {
      if (tmp !== undefined) await fsp.rm(tmp, { force: true });
      HttpClient.done(resp);
    }
    return bytes;
  }
}
