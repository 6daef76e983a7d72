/** Shared test helpers: the daemon the harness started, tenants, unique names. */

import { appendFileSync } from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";

import { Runta, type Runtime } from "@runta/runta-sdk";

function need(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the tests through build-test/test/harness.js (npm test / run-tests.sh)`);
  return v;
}

export const endpoint = need("RUNTA_TEST_ENDPOINT");
export const adminToken = need("RUNTA_TEST_ADMIN_TOKEN");
const stateDir = need("RUNTA_TEST_STATE_DIR");

export const admin = new Runta({ endpoint, token: adminToken });

/** A name no other test (or run) uses: `<prefix>-<random>`. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`.toLowerCase().slice(0, 63);
}

/** Mints a token for a fresh tenant and records it so the harness can clean up after it. */
export async function newTenant(prefix = "ts"): Promise<{ runta: Runta; token: string; tenant: string }> {
  const tenant = uniqueName(prefix);
  const created = await admin.admin.createToken(tenant);
  appendFileSync(path.join(stateDir, "tokens"), created.token + "\n");
  return { runta: new Runta({ endpoint, token: created.token }), token: created.token, tenant };
}

/** Deletes runtimes, ignoring ones already gone. */
export async function deleteAll(...rts: (Runtime | undefined)[]): Promise<void> {
  for (const rt of rts) {
    if (!rt) continue;
    try {
      await rt.delete();
    } catch (e) {
      if ((e as { code?: string }).code !== "not_found") throw e;
    }
  }
}

/** Small default size for test runtimes. */
export const SMALL = { vcpus: 0.5, memoryMiB: 256 } as const;
