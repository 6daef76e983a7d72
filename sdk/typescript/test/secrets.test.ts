/**
 * Secrets through the SDK: values in and never out, rules in both official
 * spellings on one model, tenant defaults, and another tenant seeing nothing.
 */

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { AlreadyExistsError, InvalidArgumentError, NotFoundError, type Runta, type Runtime } from "@runta/runta-sdk";

import { deleteAll, newTenant, SMALL, uniqueName } from "./helpers.js";

const value = () => `sk-ts-${randomBytes(12).toString("hex")}`;

describe("secrets", () => {
  let runta: Runta;
  let rt: Runtime;

  before(async () => {
    runta = (await newTenant("tssec")).runta;
    rt = await runta.runtimes.create(uniqueName("sec"), SMALL);
  });
  after(async () => deleteAll(rt));

  it("stores values it never shows", async () => {
    const name = uniqueName("s");
    const v = value();
    const info = await runta.secrets.create(name, v, { cacheTtlSecs: 7 });
    assert.equal(info.name, name);
    assert.equal(info.display_name, name);
    assert.equal(info.cache_ttl_secs, 7);
    assert.ok(info.stub.startsWith("runta-stub-"));
    assert.ok(!JSON.stringify(info).includes(v));
    await assert.rejects(runta.secrets.create(name, v), AlreadyExistsError);
    const again = await runta.secrets.set(name, value());
    assert.equal(again.id, info.id);
    assert.equal((await runta.secrets.get(info.id)).name, name);
    assert.ok((await runta.secrets.list()).some((s) => s.id === info.id));
    await assert.rejects(runta.secrets.create(uniqueName("s"), "a\r\nX-Evil: 1"), (e: unknown) => e instanceof InvalidArgumentError && e.field === "value");
    await runta.secrets.delete(name);
    await assert.rejects(runta.secrets.get(name), NotFoundError);
  });

  it("binds in both spellings over one model", async () => {
    const secret = uniqueName("k");
    await runta.secrets.create(secret, value());
    try {
      const rule = await rt.secrets.createRule("https://api.openai.com/v1", "/v1/*", {
        credential: secret,
        header: "Authorization",
        value: "Bearer ${credential}",
      });
      assert.equal(rule.host_pattern, "api.openai.com");
      assert.equal(rule.credential_display_name, secret);
      assert.equal(rule.stub_value_display_name, secret);
      assert.equal(rule.runtime_display_name, rt.name);
      assert.deepEqual(JSON.parse(rule.injection_config_json), { headerName: "Authorization", valueFormat: "Bearer ${credential}" });
      const stub = await rt.secrets.setSecretStub("maps.example.com", undefined, { credential: secret, param: "key" });
      assert.deepEqual(stub.injection, { paramName: "key", paramFormat: "${credential}" });
      assert.deepEqual((await rt.secrets.listSecretStubs()).map((r) => r.id).sort(), [rule.id, stub.id].sort());
      assert.equal((await rt.secrets.getRule(rule.id)).id, rule.id);
      await assert.rejects(
        rt.secrets.createRule("a.example.com", undefined, { credential: secret, header: "X", value: "no placeholder" }),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "injection",
      );
      await assert.rejects(rt.secrets.createRule("a.example.com", undefined, { credential: "nope", header: "X" }), NotFoundError);
      await assert.rejects(
        rt.secrets.replaceSecretStubs([rule.id], [
          { url: "ok.example.com", config: { credential: secret, header: "X" } },
          { url: "bad host", config: { credential: secret, header: "X" } },
        ]),
        InvalidArgumentError,
      );
      const after = await rt.secrets.replaceSecretStubs([rule.id], [{ url: "ok.example.com", config: { credential: secret, header: "X" } }]);
      assert.deepEqual(after.map((r) => r.host_pattern).sort(), ["maps.example.com", "ok.example.com"]);
      const d = await runta.secrets.setDefaultSecretStub("api.github.com", undefined, { credential: secret, header: "Authorization" });
      assert.equal(d.scope, "tenant_default");
      assert.deepEqual((await runta.secrets.listDefaultSecretStubs()).map((x) => x.id), [d.id]);
      await runta.secrets.deleteDefaultSecretStub(d.id);
      await rt.secrets.deleteRule(stub.id);
      await assert.rejects(rt.secrets.getRule(stub.id), NotFoundError);
    } finally {
      await runta.secrets.delete(secret);
    }
    assert.deepEqual(await rt.secrets.listRules(), []);
  });

  it("another tenant sees nothing", async () => {
    const name = uniqueName("own");
    const info = await runta.secrets.create(name, value());
    try {
      const other = (await newTenant("tssec2")).runta;
      assert.ok(!(await other.secrets.list()).some((s) => s.id === info.id));
      await assert.rejects(other.secrets.get(info.id), NotFoundError);
      await assert.rejects(other.secrets.delete(info.id), NotFoundError);
    } finally {
      await runta.secrets.delete(name);
    }
  });
});
