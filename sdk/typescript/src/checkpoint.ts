/** Checkpoints: a runtime's files saved under a name, and the handles to list, get and delete them. */

import { InvalidArgumentError } from "./errors.js";
import type { HttpClient } from "./http.js";
import type { CheckpointInfo, CreateCheckpointRequest, ListResponse } from "./types.js";

/** Saving copies the runtime's files: allow for big ones. */
const CHECKPOINT_TIMEOUT_MS = 10 * 60_000;

/** Anything with an `id` (a `Runtime`, a `Checkpoint`) or a plain UUID / name. */
export type Ref = string | { readonly id: string };

function refOf(what: string, r: Ref): string {
  const id = typeof r === "string" ? r : r?.id;
  if (typeof id !== "string" || id === "" || id === "." || id === ".." || id.includes("/")) {
    throw new InvalidArgumentError({ code: "invalid_argument", message: `${what}: ${JSON.stringify(r)} is not a ${what} UUID or name`, field: what });
  }
  return id;
}

/** Path of a checkpoint by UUID or name. */
function checkpointPath(r: Ref): string {
  return `/v1/checkpoints/${encodeURIComponent(refOf("checkpoint", r))}`;
}

/** The id to send as `checkpoint` in a create: a UUID, a name or a `Checkpoint`. */
export function checkpointRef(r: Ref): string {
  return refOf("checkpoint", r);
}

async function create(http: HttpClient, runtime: Ref, name: string): Promise<Checkpoint> {
  const body: CreateCheckpointRequest = { name };
  const info = await http.data<CheckpointInfo>("POST", `/v1/runtimes/${encodeURIComponent(refOf("runtime", runtime))}/checkpoints`, {
    json: body,
    timeoutMs: CHECKPOINT_TIMEOUT_MS,
  });
  return new Checkpoint(http, info);
}

async function listAll(http: HttpClient): Promise<Checkpoint[]> {
  const out: Checkpoint[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await http.json<ListResponse<CheckpointInfo>>("GET", "/v1/checkpoints", { query: { limit: 100, after } });
    out.push(...page.data.map((c) => new Checkpoint(http, c)));
    if (!page.pagination.has_more || page.pagination.next_cursor === null) return out;
    after = page.pagination.next_cursor;
  }
}

/**
 * A checkpoint: a runtime's files (not its processes) saved under a name. Start
 * runtimes from it with `runta.runtimes.create(name, { checkpointId: checkpoint })`;
 * they share it without copying and never see each other's changes.
 */
export class Checkpoint {
  /** The checkpoint's UUID. */
  readonly id: string;
  /** Its name (unique per tenant). */
  readonly name: string;
  private data: CheckpointInfo;

  /** @internal */
  constructor(private readonly http: HttpClient, info: CheckpointInfo) {
    this.id = info.id;
    this.name = info.name;
    this.data = info;
  }

  /** The record as the daemon sent it (snake_case wire fields). */
  get info(): CheckpointInfo {
    return this.data;
  }

  get tenant(): string {
    return this.data.tenant;
  }

  /** The runtime it was taken from (which may since have been deleted). */
  get sourceRuntimeId(): string {
    return this.data.source_runtime_id;
  }

  get sourceRuntimeName(): string {
    return this.data.source_runtime_name;
  }

  get image(): string {
    return this.data.image;
  }

  /** Bytes of its own layer (forks share it; they do not copy it). */
  get sizeBytes(): number {
    return this.data.size_bytes;
  }

  get createdAt(): Date {
    return new Date(this.data.created_at);
  }

  /** Fetches the record again (NotFoundError once deleted). */
  async refresh(): Promise<this> {
    this.data = await this.http.data<CheckpointInfo>("GET", checkpointPath(this.id));
    return this;
  }

  /**
   * Deletes the checkpoint and frees its space. A FailedPreconditionError (409)
   * naming them while runtimes started from it, or checkpoints of those, exist.
   */
  async delete(): Promise<void> {
    await this.http.empty("DELETE", checkpointPath(this.id), { timeoutMs: CHECKPOINT_TIMEOUT_MS });
  }

  toJSON(): CheckpointInfo {
    return this.data;
  }
}

/** `runta.checkpoints`: the tenant's checkpoints. */
export class Checkpoints {
  /** @internal */
  constructor(private readonly http: HttpClient) {}

  /**
   * Saves the files of `runtime` (a UUID, a name or a `Runtime`; running, paused
   * or suspended) as checkpoint `name`. The runtime is frozen while its files are
   * copied, then thawed (a paused one stays paused).
   */
  async create(runtime: Ref, name: string): Promise<Checkpoint> {
    return create(this.http, runtime, name);
  }

  /** Every checkpoint of the tenant. */
  async list(): Promise<Checkpoint[]> {
    return listAll(this.http);
  }

  /** A checkpoint by UUID or name; NotFoundError when there is none (or it is another tenant's). */
  async get(idOrName: string): Promise<Checkpoint> {
    return new Checkpoint(this.http, await this.http.data<CheckpointInfo>("GET", checkpointPath(idOrName)));
  }

  /** Deletes a checkpoint by UUID, name or handle (see {@link Checkpoint.delete}). */
  async delete(checkpoint: Ref): Promise<void> {
    await this.http.empty("DELETE", checkpointPath(checkpoint), { timeoutMs: CHECKPOINT_TIMEOUT_MS });
  }
}

/** `runtime.checkpoints`: save this runtime's files; the checkpoints taken of it. */
export class RuntimeCheckpoints {
  /** @internal */
  constructor(private readonly http: HttpClient, private readonly runtimeId: string) {}

  /**
   * Saves this runtime's files (it must be running, paused or suspended) as
   * checkpoint `name`; it is frozen while they are copied (a paused one stays paused).
   */
  async create(name: string): Promise<Checkpoint> {
    return create(this.http, this.runtimeId, name);
  }

  /** The checkpoints taken of this runtime. */
  async list(): Promise<Checkpoint[]> {
    return (await listAll(this.http)).filter((c) => c.sourceRuntimeId === this.runtimeId);
  }
}
