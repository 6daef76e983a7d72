import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Runta, Runtime, NotFoundError, ConflictError, FailedPreconditionError } from "@runta/runta-sdk";

import { deleteAll, endpoint, newTenant, SMALL, uniqueName } from "./helpers.js";

describe("runtimes: create, get, list, lifecycle, resize, delete", () => {
  let runta: Runta;
  let token: string;
  let tenant: string;
  const made: Runtime[] = [];

  before(async () => {
    ({ runta, token, tenant } = await newTenant("rt"));
  });
  after(async () => {
    await deleteAll(...made);
  });

  it("reads RUNTA_TOKEN and RUNTA_ENDPOINT from the environment", async () => {
    const saved = { t: process.env["RUNTA_TOKEN"], e: process.env["RUNTA_ENDPOINT"] };
    process.env["RUNTA_TOKEN"] = token;
    process.env["RUNTA_ENDPOINT"] = endpoint + "/";
    try {
      const fromEnv = new Runta();
      assert.equal(fromEnv.endpoint, endpoint);
      assert.deepEqual(await fromEnv.runtimes.list(), []);
      delete process.env["RUNTA_ENDPOINT"];
      assert.equal(new Runta({ token }).endpoint, "http://127.0.0.1:8080");
    } finally {
      process.env["RUNTA_TOKEN"] = saved.t ?? "";
      process.env["RUNTA_ENDPOINT"] = saved.e ?? "";
    }
  });

  it("creates a runtime, waiting until it runs, with resources, env, labels, publish and idle timeout", async () => {
    const name = uniqueName("create");
    const rt = await runta.runtimes.create(name, {
      ...SMALL,
      env: { GREETING: "hello" },
      labels: { team: "sdk", tier: "test" },
      publish: [8080, "3000/http"],
      idleTimeoutSecs: 600,
    });
    made.push(rt);
    assert.match(rt.id, /^[0-9a-f-]{36}$/);
    assert.equal(rt.name, name);
    assert.equal(rt.status, "running");
    assert.equal(rt.cachedInfo.status, "running");
    assert.equal(rt.cachedInfo.tenant, tenant);
    assert.equal(rt.cachedInfo.image, "base");
    assert.equal(rt.cachedInfo.resources.requests.vcpus, 0.5);
    assert.equal(rt.cachedInfo.resources.requests.memory_mib, 256);
    assert.deepEqual(rt.cachedInfo.env, { GREETING: "hello" });
    assert.deepEqual(rt.cachedInfo.labels, { team: "sdk", tier: "test" });
    assert.equal(rt.cachedInfo.idle_timeout_secs, 600);
    const ports = rt.cachedInfo.publish.map((p) => `${p.port}/${p.protocol}`).sort();
    assert.deepEqual(ports, ["3000/http", "8080/https"]);
    assert.ok(rt.url(8080)?.includes(rt.id), `url ${rt.url(8080)} should name the runtime UUID`);
    const env = await rt.exec("echo $GREETING");
    assert.equal(env.stdoutText, "hello\n");
  });

  it("create with wait: false returns at once; waitFor reaches running", async () => {
    const rt = await runta.runtimes.create(uniqueName("nowait"), { ...SMALL, wait: false });
    made.push(rt);
    assert.ok(["creating", "running"].includes(rt.status), `status ${rt.status}`);
    await rt.waitFor("running", { timeoutMs: 60_000 });
    assert.equal(rt.status, "running");
    assert.equal((await rt.exec("true")).exitCode, 0);
  });

  it("the same Idempotency-Key returns the same runtime", async () => {
    const name = uniqueName("idem");
    const key = uniqueName("key");
    const a = await runta.runtimes.create(name, { ...SMALL, idempotencyKey: key });
    made.push(a);
    const b = await runta.runtimes.create(name, { ...SMALL, idempotencyKey: key });
    assert.equal(b.id, a.id);
  });

  it("get accepts the UUID or the name; list shows items with cachedInfo", async () => {
    const rt = await runta.runtimes.create(uniqueName("get"), SMALL);
    made.push(rt);
    const byName = await runta.runtimes.get(rt.name);
    const byId = await runta.runtimes.get(rt.id);
    assert.equal(byName.id, rt.id);
    assert.equal(byId.name, rt.name);
    assert.equal(byId.cachedInfo.status, "running");
    const all = await runta.runtimes.list();
    const item = all.find((r) => r.id === rt.id);
    assert.ok(item, "the new runtime is listed");
    assert.ok(item instanceof Runtime);
    assert.equal(item.name, rt.name);
    assert.equal(item.cachedInfo.status, "running");
    // Items are live handles.
    assert.equal((await item.exec(["echo", "from-list"])).stdoutText, "from-list\n");
  });

  it("list follows pagination and filters by status and label", async () => {
    const label = uniqueName("grp");
    const rts: Runtime[] = [];
    for (let i = 0; i < 3; i++) {
      const rt = await runta.runtimes.create(uniqueName(`page${i}`), { ...SMALL, labels: { grp: label } });
      made.push(rt);
      rts.push(rt);
    }
    const page1 = await runta.runtimes.listPage({ labels: { grp: label }, limit: 2 });
    assert.equal(page1.data.length, 2);
    assert.equal(page1.hasMore, true);
    assert.ok(page1.nextCursor);
    const page2 = await runta.runtimes.listPage({ labels: { grp: label }, limit: 2, after: page1.nextCursor! });
    assert.equal(page2.data.length, 1);
    assert.equal(page2.hasMore, false);
    const ids = [...page1.data, ...page2.data].map((r) => r.id).sort();
    assert.deepEqual(ids, rts.map((r) => r.id).sort());

    const viaIter = (await runta.runtimes.list({ labels: { grp: label }, pageSize: 1 })).map((r) => r.id).sort();
    assert.deepEqual(viaIter, ids);
    assert.equal((await runta.runtimes.list({ labels: { grp: label }, limit: 2 })).length, 2);

    await rts[0]!.pause();
    const paused = await runta.runtimes.list({ labels: { grp: label }, status: "paused" });
    assert.deepEqual(paused.map((r) => r.id), [rts[0]!.id]);
    const either = await runta.runtimes.list({ labels: { grp: label }, status: ["paused", "running"] });
    assert.equal(either.length, 3);
    await rts[0]!.resume();
  });

  it("pause, resume, stop, start are idempotent and visible in status and events", async () => {
    const rt = await runta.runtimes.create(uniqueName("life"), SMALL);
    made.push(rt);
    await rt.exec("echo kept > /root/kept.txt");

    await rt.pause();
    assert.equal(rt.status, "paused");
    await rt.pause(); // no-op
    assert.equal((await rt.refresh()).status, "paused");
    await rt.resume();
    assert.equal(rt.status, "running");
    await rt.resume(); // no-op
    assert.equal(rt.status, "running");

    await rt.stop();
    assert.equal(rt.status, "shutdown");
    await rt.stop(); // no-op
    assert.equal(rt.status, "shutdown");
    // Impossible transition: 409 failed_precondition naming the status.
    await assert.rejects(rt.pause(), (e: unknown) => {
      assert.ok(e instanceof ConflictError);
      assert.ok(e instanceof FailedPreconditionError);
      assert.equal(e.status, 409);
      assert.equal(e.code, "failed_precondition");
      assert.match(e.message, /shutdown/);
      return true;
    });
    await rt.start();
    assert.equal(rt.status, "running");
    await rt.start(); // no-op
    // The writable layer survives stop/start.
    assert.equal((await rt.exec("cat /root/kept.txt")).stdoutText, "kept\n");

    const kinds = (await rt.events()).map((e) => e.type);
    for (const k of ["created", "started", "paused", "resumed", "stopped"]) {
      assert.ok(kinds.includes(k), `events ${JSON.stringify(kinds)} should include ${k}`);
    }
    const limited = await rt.events({ limit: 2 });
    assert.equal(limited.length, 2);
    const later = await rt.events({ after: limited[1]!.id });
    assert.ok(later.every((e) => e.id > limited[1]!.id));
  });

  it("resizeMemory and resize change the resources live", async () => {
    const rt = await runta.runtimes.create(uniqueName("resize"), { vcpus: 1, memoryMiB: 256 });
    made.push(rt);
    const startedAt = rt.cachedInfo.started_at;
    await rt.exec("echo alive > /tmp/alive");
    await rt.resizeMemory(512);
    assert.equal(rt.cachedInfo.resources.requests.memory_mib, 512);
    assert.equal(rt.cachedInfo.resources.limits.memory_mib, 512);
    await rt.resize({ vcpus: 2 });
    assert.equal(rt.cachedInfo.resources.requests.vcpus, 2);
    await rt.refresh();
    assert.equal(rt.cachedInfo.resources.requests.memory_mib, 512);
    assert.equal(rt.status, "running");
    assert.equal(Date.parse(rt.cachedInfo.started_at ?? ""), Date.parse(startedAt ?? ""), "no restart");
    // Still the same processes and files: no restart.
    assert.equal((await rt.exec("cat /tmp/alive")).stdoutText, "alive\n");
    await rt.update({ labels: { resized: "yes" } });
    assert.deepEqual(rt.cachedInfo.labels, { resized: "yes" });
  });

  it("refresh picks up changes made through another handle", async () => {
    const rt = await runta.runtimes.create(uniqueName("refresh"), SMALL);
    made.push(rt);
    const other = await runta.runtimes.get(rt.name);
    await other.pause();
    assert.equal(rt.status, "running", "cached until refreshed");
    await rt.refresh();
    assert.equal(rt.status, "paused");
    assert.ok(rt.cachedInfo.revision >= other.cachedInfo.revision);
    await rt.resume();
  });

  it("delete removes the runtime; later calls are NotFoundError", async () => {
    const rt = await runta.runtimes.create(uniqueName("del"), SMALL);
    await rt.delete();
    await assert.rejects(runta.runtimes.get(rt.id), NotFoundError);
    await assert.rejects(rt.refresh(), NotFoundError);
    await assert.rejects(rt.delete(), NotFoundError);
    const rt2 = await runta.runtimes.create(uniqueName("del2"), SMALL);
    await runta.runtimes.delete(rt2.name);
    await assert.rejects(runta.runtimes.get(rt2.name), NotFoundError);
    assert.ok(!(await runta.runtimes.list()).some((r) => r.id === rt.id || r.id === rt2.id));
  });

  it("the name of a deleted runtime can be used again", async () => {
    const name = uniqueName("reuse");
    const a = await runta.runtimes.create(name, SMALL);
    await a.delete();
    const b = await runta.runtimes.create(name, SMALL);
    made.push(b);
    assert.notEqual(b.id, a.id);
  });

  it("health needs no token", async () => {
    const h = await new Runta({ endpoint, token: "" }).health();
    assert.equal(h.status, "ok");
  });
});
