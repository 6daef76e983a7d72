import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  AlreadyExistsError,
  AuthenticationError,
  ConflictError,
  errorFromResponse,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  ResourceExhaustedError,
  Runta,
  RuntaConnectionError,
  RuntaError,
  RuntaTimeoutError,
  UnavailableError,
  Runtime,
} from "@runta/runta-sdk";

import { deleteAll, endpoint, newTenant, SMALL, uniqueName } from "./helpers.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe("errors against the daemon", () => {
  let a: Runta;
  let b: Runta;
  let rt: Runtime;

  before(async () => {
    a = (await newTenant("erra")).runta;
    b = (await newTenant("errb")).runta;
    rt = await a.runtimes.create(uniqueName("err"), SMALL);
  });
  after(async () => {
    await deleteAll(rt);
  });

  it("a wrong or malformed token is AuthenticationError (401) with a request id", async () => {
    for (const token of ["rt_" + "z".repeat(40), "not-a-token", ""]) {
      const bad = new Runta({ endpoint, token });
      await assert.rejects(bad.runtimes.list(), (e: unknown) => {
        assert.ok(e instanceof AuthenticationError, `token ${JSON.stringify(token)}: ${String(e)}`);
        assert.ok(e instanceof RuntaError);
        assert.equal(e.status, 401);
        assert.equal(e.code, "unauthenticated");
        assert.match(e.requestId ?? "", UUID);
        assert.ok(e.message.length > 0);
        return true;
      });
    }
  });

  it("another tenant's runtime is NotFoundError for every call, by id and by name", async () => {
    await assert.rejects(b.runtimes.get(rt.id), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.equal(e.status, 404);
      assert.equal(e.code, "not_found");
      return true;
    });
    await assert.rejects(b.runtimes.get(rt.name), NotFoundError);
    await assert.rejects(b.runtimes.delete(rt.id), NotFoundError);
    assert.ok(!(await b.runtimes.list()).some((r) => r.id === rt.id));
    // A handle built by tenant A but used with tenant B's token.
    const foreign = await a.runtimes.get(rt.id);
    const viaB = new Runtime(b.http, foreign.cachedInfo);
    await assert.rejects(viaB.exec("echo hi"), NotFoundError);
    await assert.rejects(viaB.pause(), NotFoundError);
    await assert.rejects(viaB.files.read("/etc/hostname"), NotFoundError);
    await assert.rejects(viaB.execStream("true"), NotFoundError);
    // And A's runtime is untouched.
    assert.equal((await rt.refresh()).status, "running");
  });

  it("a duplicate name is AlreadyExistsError, a ConflictError (409)", async () => {
    await assert.rejects(a.runtimes.create(rt.name, SMALL), (e: unknown) => {
      assert.ok(e instanceof AlreadyExistsError);
      assert.ok(e instanceof ConflictError);
      assert.equal(e.status, 409);
      assert.equal(e.code, "already_exists");
      assert.match(e.message, new RegExp(rt.name));
      return true;
    });
    // The same name in another tenant is fine.
    const same = await b.runtimes.create(rt.name, SMALL);
    await same.delete();
  });

  it("invalid input is InvalidArgumentError naming the field", async () => {
    const cases: [() => Promise<unknown>, string][] = [
      [() => a.runtimes.create("Bad_Name", SMALL), "name"],
      [() => a.runtimes.create(uniqueName("mem"), { memoryMiB: 1 }), "resources.requests.memory_mib"],
      [() => a.runtimes.create(uniqueName("cpu"), { vcpus: -1 }), "resources.requests.vcpus"],
      [() => a.runtimes.create(uniqueName("env"), { env: { "1BAD": "x" } }), "env.1BAD"],
      [() => a.runtimes.create(uniqueName("img"), { image: "../etc" }), "image"],
      [() => rt.exec("true", { timeoutSecs: 0 }), "timeout_secs"],
      [() => rt.exec("true", { cwd: "relative/dir" }), "cwd"],
      [() => rt.resizeMemory(1), "resources.requests.memory_mib"],
    ];
    for (const [p, field] of cases) {
      await assert.rejects(p(), (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, `${field}: ${String(e)}`);
        assert.equal(e.field, field);
        assert.ok([400, 422].includes(e.status), `status ${e.status}`);
        assert.equal(e.code, "invalid_argument");
        return true;
      });
    }
    await assert.rejects(a.runtimes.create(uniqueName("pub"), { publish: ["http:80"] }), (e: unknown) => e instanceof RuntaError && e.field === "publish[0]");
  });

  it("exec on a paused runtime is ConflictError naming the status; on a shut-down one too", async () => {
    await rt.pause();
    try {
      await assert.rejects(rt.exec("echo hi"), (e: unknown) => {
        assert.ok(e instanceof ConflictError);
        assert.ok(e instanceof FailedPreconditionError);
        assert.equal(e.status, 409);
        assert.match(e.message, /paused/);
        return true;
      });
    } finally {
      await rt.resume();
    }
    await rt.stop();
    try {
      await assert.rejects(rt.exec("echo hi"), (e: unknown) => e instanceof ConflictError && /shutdown/.test(e.message));
      await assert.rejects(rt.resume(), ConflictError);
    } finally {
      await rt.start();
    }
    assert.equal((await rt.exec("echo back")).stdoutText, "back\n");
  });

  it("a tenant token on an admin route is PermissionDeniedError (403)", async () => {
    await assert.rejects(a.admin.createToken("someone"), (e: unknown) => {
      assert.ok(e instanceof PermissionDeniedError);
      assert.equal(e.status, 403);
      assert.equal(e.code, "permission_denied");
      return true;
    });
  });

  it("more memory than the machine has is ResourceExhaustedError (503)", async () => {
    await assert.rejects(a.runtimes.create(uniqueName("huge"), { memoryMiB: 4 * 1024 * 1024 }), (e: unknown) => {
      assert.ok(e instanceof ResourceExhaustedError, String(e));
      assert.equal(e.status, 503);
      assert.equal(e.code, "resource_exhausted");
      return true;
    });
    assert.ok(!(await a.runtimes.list()).some((r) => r.name.startsWith("huge-")));
  });

  it("an unreachable daemon is RuntaConnectionError; a slow answer RuntaTimeoutError", async () => {
    await assert.rejects(new Runta({ endpoint: "http://127.0.0.1:1", token: "rt_x" }).runtimes.list(), (e: unknown) => {
      assert.ok(e instanceof RuntaConnectionError);
      assert.equal(e.code, "connection_error");
      assert.equal(e.status, 0);
      return true;
    });
    await assert.rejects(rt.exec("sleep 5", { requestTimeoutMs: 300 }), RuntaTimeoutError);
    assert.throws(() => new Runta({ endpoint: "ftp://x" }), RuntaError);
  });
});

describe("error mapping (no daemon)", () => {
  it("maps codes to classes, keeps status, request id and field", () => {
    const e = errorFromResponse(422, { error: { code: "invalid_argument", message: "m", field: "f" }, request_id: "rid" });
    assert.ok(e instanceof InvalidArgumentError);
    assert.equal(e.field, "f");
    assert.equal(e.requestId, "rid");
    assert.equal(e.name, "InvalidArgumentError");
    assert.ok(errorFromResponse(503, { error: { code: "unavailable", message: "m" } }) instanceof UnavailableError);
    assert.ok(errorFromResponse(429, { error: { code: "rate_limited", message: "m" } }) instanceof RateLimitError);
    // Without an envelope the status decides.
    assert.ok(errorFromResponse(404, "nope") instanceof NotFoundError);
    assert.ok(errorFromResponse(503, undefined) instanceof UnavailableError);
    assert.ok(errorFromResponse(500, "boom") instanceof InternalError);
    assert.ok(errorFromResponse(409, {}) instanceof ConflictError);
    assert.equal(errorFromResponse(502, {}, "hdr").requestId, "hdr");
  });

  it("uses an injected fetch", async () => {
    const seen: string[] = [];
    const fake = async (input: string | URL, init?: RequestInit): Promise<Response> => {
      seen.push(`${init?.method} ${String(input)} ${(init?.headers as Record<string, string>)["authorization"]}`);
      return new Response(JSON.stringify({ error: { code: "unavailable", message: "later" }, request_id: "r1" }), { status: 503 });
    };
    const c = new Runta({ endpoint: "http://example.invalid:9", token: "rt_t", fetch: fake });
    await assert.rejects(c.runtimes.get("x"), UnavailableError);
    assert.deepEqual(seen, ["GET http://example.invalid:9/v1/runtimes/x Bearer rt_t"]);
  });
});
