/**
 * Test entry point: starts a fresh `runtad`, runs every `*.test.js` with node's test
 * runner against it, then deletes every runtime (and then every checkpoint) of every
 * tenant the tests minted a token for, and only then stops the daemon (killing runtad
 * leaves runtimes running by design).
 *
 * Env: RUNTAD_BIN (default $CARGO_TARGET_DIR/debug/runtad, CARGO_TARGET_DIR defaulting to <repo>/target), RUNTA_TEST_PORT (18183),
 * RUNTA_TEST_SUBNET_OCTET (152), RUNTA_TEST_IMAGES_DIR (/var/lib/runta/images),
 * RUNTA_TEST_FILES (space-separated test files to run instead of all).
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url)); // build-test/test
const sdkDir = path.resolve(here, "..", "..");
const repo = path.resolve(sdkDir, "..", "..");
// Where cargo puts the binaries: CARGO_TARGET_DIR (relative to the repository), else ./target.
const target = path.resolve(repo, process.env["CARGO_TARGET_DIR"] || "target");
const bin = process.env["RUNTAD_BIN"] ?? path.join(target, "debug", "runtad");
const port = process.env["RUNTA_TEST_PORT"] ?? "18183";
const endpoint = `http://127.0.0.1:${port}`;

function log(msg: string): void {
  process.stderr.write(`[harness] ${msg}\n`);
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function healthy(): Promise<boolean> {
  try {
    const r = await fetch(`${endpoint}/healthz`);
    await r.arrayBuffer();
    return r.status === 200;
  } catch {
    return false;
  }
}

async function cleanup(stateDir: string): Promise<number> {
  const file = path.join(stateDir, "tokens");
  if (!existsSync(file)) return 0;
  const tokens = [...new Set(readFileSync(file, "utf8").split("\n").filter((t) => t.trim() !== ""))];
  let leftovers = 0;
  for (const token of tokens) {
    const h = { authorization: `Bearer ${token}` };
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await fetch(`${endpoint}/v1/runtimes?limit=100`, { headers: h });
      if (r.status !== 200) {
        await r.arrayBuffer();
        break;
      }
      const body = (await r.json()) as { data: { id: string; name: string; tenant: string }[] };
      if (body.data.length === 0) break;
      for (const rt of body.data) {
        const d = await fetch(`${endpoint}/v1/runtimes/${rt.id}`, { method: "DELETE", headers: h });
        await d.arrayBuffer();
        if (attempt === 0) leftovers++;
        log(`cleanup: deleted leftover runtime ${rt.tenant}/${rt.name} (${d.status})`);
      }
    }
    // Then checkpoints; one that others are built on is refused until they are gone.
    for (let round = 0; round < 5; round++) {
      const r = await fetch(`${endpoint}/v1/checkpoints`, { headers: h });
      if (r.status !== 200) {
        await r.arrayBuffer();
        break;
      }
      const body = (await r.json()) as { data: { id: string; name: string; tenant: string }[] };
      if (body.data.length === 0) break;
      for (const c of body.data) {
        const d = await fetch(`${endpoint}/v1/checkpoints/${c.id}`, { method: "DELETE", headers: h });
        await d.arrayBuffer();
        if (d.status === 200) log(`cleanup: deleted leftover checkpoint ${c.tenant}/${c.name}`);
      }
    }
  }
  return leftovers;
}

/** A port nothing listens on now (for the daemon's ingress listeners). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const p = typeof a === "object" && a !== null ? a.port : 0;
      s.close(() => resolve(p));
    });
  });
}

async function main(): Promise<number> {
  if (!existsSync(bin)) {
    log(`runtad not found at ${bin}: build it (bash scripts/build.sh) or set RUNTAD_BIN`);
    return 1;
  }
  if (await healthy()) {
    log(`something already answers on ${endpoint}: refusing to run against it (set RUNTA_TEST_PORT)`);
    return 1;
  }
  const dataDir = mkdtempSync(path.join(tmpdir(), "runta-ts-sdk-"));
  const stateDir = mkdtempSync(path.join(tmpdir(), "runta-ts-sdk-state-"));
  const logFile = path.join(dataDir, "runtad.log");
  const out = openSync(logFile, "a");
  const daemon: ChildProcess = spawn(
    bin,
    [
      "--data-dir", dataDir,
      "--listen", `127.0.0.1:${port}`,
      "--images-dir", process.env["RUNTA_TEST_IMAGES_DIR"] ?? "/var/lib/runta/images",
      "--subnet-octet", process.env["RUNTA_TEST_SUBNET_OCTET"] ?? "152",
      "--no-prebuild",
      // Free ports: a daemon refuses to start without its ingress ports, and
      // the defaults may be another daemon's.
      "--ingress-listen-https", `127.0.0.1:${await freePort()}`,
      "--ingress-listen-http", `127.0.0.1:${await freePort()}`,
    ],
    { stdio: ["ignore", out, out] },
  );
  let exited = false;
  daemon.on("exit", () => (exited = true));
  let code = 1;
  try {
    const t0 = Date.now();
    while (!(await healthy())) {
      if (exited) throw new Error(`runtad exited during start-up; log:\n${readFileSync(logFile, "utf8").slice(-4000)}`);
      if (Date.now() - t0 > 60_000) throw new Error("runtad did not become healthy within 60 s");
      await sleep(100);
    }
    const adminToken = readFileSync(path.join(dataDir, "admin-token"), "utf8").trim();
    log(`runtad up at ${endpoint} (data dir ${dataDir}) in ${Date.now() - t0} ms`);

    const only = (process.env["RUNTA_TEST_FILES"] ?? "").split(/\s+/).filter(Boolean);
    const files = (only.length > 0 ? only : readdirSync(here).filter((f) => f.endsWith(".test.js")).sort()).map((f) =>
      path.isAbsolute(f) ? f : path.join(here, path.basename(f).replace(/\.ts$/, ".js")),
    );
    const child = spawn(process.execPath, ["--test", "--test-reporter=spec", ...files], {
      stdio: "inherit",
      cwd: sdkDir,
      env: {
        ...process.env,
        RUNTA_TEST_ENDPOINT: endpoint,
        RUNTA_TEST_ADMIN_TOKEN: adminToken,
        RUNTA_TEST_STATE_DIR: stateDir,
        RUNTA_TEST_DATA_DIR: dataDir,
        RUNTA_TOKEN: "",
        RUNTA_ENDPOINT: "",
      },
    });
    // Ctrl-C / SIGTERM stop the tests but still run the clean-up below.
    const forward = (sig: NodeJS.Signals) => {
      log(`${sig}: stopping the tests, then cleaning up`);
      child.kill(sig);
    };
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    code = await new Promise<number>((resolve) => child.on("exit", (c, sig) => resolve(c ?? (sig ? 1 : 0))));
    process.off("SIGINT", forward);
    process.off("SIGTERM", forward);
  } catch (e) {
    log(String(e instanceof Error ? e.message : e));
    code = 1;
  } finally {
    try {
      if (!exited) {
        const n = await cleanup(stateDir);
        if (n > 0) log(`cleanup removed ${n} runtime(s) the tests left behind`);
      }
    } catch (e) {
      log(`cleanup failed: ${String(e)}`);
      code = code || 1;
    }
    if (!exited) {
      daemon.kill("SIGTERM");
      for (let i = 0; i < 50 && !exited; i++) await sleep(100);
      if (!exited) daemon.kill("SIGKILL");
    }
    rmSync(stateDir, { recursive: true, force: true });
    const mounted = readFileSync("/proc/mounts", "utf8")
      .split("\n")
      .some((l) => (l.split(" ")[1] ?? "").startsWith(dataDir));
    if (mounted) {
      log(`left ${dataDir} in place: something is still mounted under it`);
    } else if (code === 0) {
      try {
        rmSync(dataDir, { recursive: true, force: true });
      } catch (e) {
        log(`left ${dataDir} in place: ${String(e)}`);
      }
    } else {
      log(`daemon log kept at ${logFile}`);
    }
  }
  return code;
}

process.exitCode = await main();
