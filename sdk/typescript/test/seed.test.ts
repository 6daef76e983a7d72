/** The seed example, unchanged (examples/quickstart.ts), runs against the daemon. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, it } from "node:test";

import { NotFoundError } from "@runta/runta-sdk";

import { endpoint, newTenant } from "./helpers.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const example = path.resolve(here, "..", "examples", "quickstart.js");

describe("seed example", () => {
  it("examples/quickstart.ts runs unchanged with RUNTA_TOKEN / RUNTA_ENDPOINT", async () => {
    const { runta, token } = await newTenant("seed");
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [example], {
      env: { ...process.env, RUNTA_TOKEN: token, RUNTA_ENDPOINT: endpoint },
      timeout: 120_000,
    });
    const lines = stdout.split("\n");
    assert.match(lines[0] ?? "", /^[0-9a-f-]{36} worker running$/, stdout + stderr);
    assert.equal(lines[1], "0");
    assert.equal(lines[2], "/root");
    assert.match(lines[3] ?? "", /^Python 3\.\d+\.\d+$/);
    // The example deletes what it created.
    await assert.rejects(runta.runtimes.get("worker"), NotFoundError);
  });
});
