import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  AlreadyExistsError,
  Checkpoint,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  Runta,
  Runtime,
} from "@runta/runta-sdk";

import { deleteAll, newTenant, SMALL, uniqueName } from "./helpers.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function deleteCheckpoints(...cps: (Checkpoint | undefined)[]): Promise<void> {
  for (const cp of cps) {
    if (!cp) continue;
    try {
      await cp.delete();
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }
}

describe("checkpoints: save, fork, list, delete", () => {
  let runta: Runta;
  let other: Runta;
  const made: Runtime[] = [];
  const saved: Checkpoint[] = [];

  before(async () => {
    runta = (await newTenant("ck")).runta;
    other = (await newTenant("ck-other")).runta;
  });
  after(async () => {
    await deleteAll(...made.reverse());
    await deleteCheckpoints(...saved.reverse());
  });

  it("forks see the checkpoint's files, not later changes, and not each other", async () => {
    const src = await runta.runtimes.create(uniqueName("src"), SMALL);
    made.push(src);
    await src.files.write("/root/a.txt", "v1\n");
    const name = uniqueName("ck");
    const cp = await src.checkpoints.create(name);
    saved.push(cp);
    assert.ok(cp instanceof Checkpoint);
    assert.match(cp.id, UUID);
    assert.equal(cp.name, name);
    assert.equal(cp.sourceRuntimeId, src.id);
    assert.equal(cp.sourceRuntimeName, src.name);
    assert.equal(cp.image, "base");
    assert.ok(cp.sizeBytes > 0, `size ${cp.sizeBytes}`);
    assert.ok(cp.createdAt instanceof Date && !Number.isNaN(cp.createdAt.getTime()));
    assert.equal(cp.info.source_runtime_name, src.name);
    assert.deepEqual(JSON.parse(JSON.stringify(cp)), cp.info);
    assert.equal((await src.refresh()).status, "running", "thawed after the copy");
    await src.files.write("/root/a.txt", "v2\n");

    // Two forks: from the handle and from the name.
    const f1 = await runta.runtimes.create(uniqueName("f1"), { ...SMALL, checkpointId: cp, publish: [8080] });
    made.push(f1);
    const f2 = await runta.runtimes.create(uniqueName("f2"), { ...SMALL, checkpointId: name });
    made.push(f2);
    for (const f of [f1, f2]) {
      assert.equal(f.status, "running");
      assert.equal(await f.files.readText("/root/a.txt"), "v1\n");
    }
    assert.ok(f1.url(8080)?.includes(f1.id));
    await f1.files.write("/root/a.txt", "f1\n");
    assert.equal((await f1.exec("echo mine > /root/only-f1")).exitCode, 0);
    assert.equal(await f1.files.readText("/root/a.txt"), "f1\n");
    assert.equal(await f2.files.readText("/root/a.txt"), "v1\n");
    assert.equal(await src.files.readText("/root/a.txt"), "v2\n");
    for (const r of [f2, src]) {
      assert.equal((await r.exec("test -e /root/only-f1")).exitCode, 1, `${r.name} sees f1's file`);
    }

    // get / list, top-level and per runtime.
    assert.equal((await runta.checkpoints.get(name)).id, cp.id);
    assert.equal((await runta.checkpoints.get(cp.id)).name, name);
    assert.equal((await cp.refresh()).name, name);
    assert.ok((await runta.checkpoints.list()).some((c) => c.id === cp.id));
    assert.deepEqual((await src.checkpoints.list()).map((c) => c.id), [cp.id]);
    assert.deepEqual(await f1.checkpoints.list(), []);

    // In use: refused, naming the forks.
    await assert.rejects(cp.delete(), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError, String(e));
      assert.equal(e.status, 409);
      assert.ok(e.message.includes(f1.name) && e.message.includes(f2.name), e.message);
      return true;
    });
    assert.equal((await runta.checkpoints.get(name)).id, cp.id);
    // Checkpoints outlive their source.
    await src.delete();
    assert.equal((await runta.checkpoints.get(name)).sourceRuntimeName, src.name);
    await f1.delete();
    await f2.delete();
    await runta.checkpoints.delete(cp);
    await assert.rejects(runta.checkpoints.get(name), NotFoundError);
    await assert.rejects(cp.delete(), NotFoundError);
  });

  it("checkpoints a paused runtime, which stays paused; chains and shut-down runtimes", async () => {
    const src = await runta.runtimes.create(uniqueName("psrc"), SMALL);
    made.push(src);
    await src.exec("echo paused-state > /root/p.txt");
    await src.pause();
    const cp = await runta.checkpoints.create(src, uniqueName("pck"));
    saved.push(cp);
    assert.equal((await src.refresh()).status, "paused");
    const fork = await runta.runtimes.create(uniqueName("pf"), { ...SMALL, checkpointId: cp.id });
    made.push(fork);
    assert.equal(await fork.files.readText("/root/p.txt"), "paused-state\n");
    // A checkpoint of a fork stacks on the one below it.
    const cp2 = await fork.checkpoints.create(uniqueName("pck2"));
    saved.push(cp2);
    await fork.delete();
    await assert.rejects(runta.checkpoints.delete(cp.name), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.ok(e.message.includes(cp2.name), e.message);
      return true;
    });
    await cp2.delete();
    await cp.delete();
    await src.resume();
    await src.stop();
    await assert.rejects(src.checkpoints.create(uniqueName("off")), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.match(e.message, /shutdown/);
      return true;
    });
  });

  it("errors: duplicate and bad names, unknown checkpoints, other tenants", async () => {
    const rt = await runta.runtimes.create(uniqueName("ert"), SMALL);
    made.push(rt);
    const name = uniqueName("eck");
    const cp = await rt.checkpoints.create(name);
    saved.push(cp);
    await assert.rejects(rt.checkpoints.create(name), (e: unknown) => {
      assert.ok(e instanceof AlreadyExistsError);
      assert.equal(e.status, 409);
      return true;
    });
    await assert.rejects(rt.checkpoints.create("Bad Name"), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.field, "name");
      assert.equal(e.status, 422);
      return true;
    });
    const missing = uniqueName("nope");
    await assert.rejects(runta.checkpoints.get(missing), NotFoundError);
    await assert.rejects(runta.checkpoints.delete(missing), NotFoundError);
    await assert.rejects(runta.checkpoints.create(uniqueName("no-rt"), uniqueName("x")), NotFoundError);
    await assert.rejects(runta.runtimes.create(uniqueName("nf"), { ...SMALL, checkpointId: missing }), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.field, "checkpoint");
      return true;
    });
    for (const bad of ["", "a/b", ".."]) {
      await assert.rejects(runta.checkpoints.get(bad), InvalidArgumentError);
    }
    await assert.rejects(
      runta.runtimes.create(uniqueName("two"), { checkpointId: cp, checkpoint: "something-else" }),
      InvalidArgumentError,
    );

    // Another tenant: nothing to see, use or delete.
    assert.ok(!(await other.checkpoints.list()).some((c) => c.id === cp.id));
    for (const ref of [cp.id, name]) {
      await assert.rejects(other.checkpoints.get(ref), NotFoundError);
      await assert.rejects(other.checkpoints.delete(ref), NotFoundError);
      await assert.rejects(other.runtimes.create(uniqueName("steal"), { ...SMALL, checkpointId: ref }), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError);
        assert.equal(e.field, "checkpoint");
        return true;
      });
    }
    await assert.rejects(other.checkpoints.create(rt.id, uniqueName("steal")), NotFoundError);
    assert.deepEqual(await other.runtimes.list(), []);
    assert.equal((await runta.checkpoints.get(cp.id)).name, name);
    await cp.delete();
  });
});
