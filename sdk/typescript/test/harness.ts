/**
 * Test entry point: starts a fresh `runtad` (scripts/test-daemon.sh, as every suite does), runs every `*.test.js` with node's test
 * runner against it, then deletes every runtime (and then every checkpoint) of every
 * tenant the tests minted a token for, and only then stops the daemon (killing runtad
 * leaves runtimes running by design).
 *
 * Env: RUNTAD_BIN (default $CARGO_TARGET_DIR/debug/runtad, CARGO_TARGET_DIR defaulting to <repo>/target), RUNTA_TEST_PORT (18183),
 * RUNTA_TEST_SUBNET_OCTET (152), RUNTA_TEST_IMAGES_DIR (/var/lib/runta/images),
 * RUNTA_TEST_FILES (space-separated test files to run instead of all).
 */

import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url)); // build-test/test
const sdkDir = path.resolve(here, "..", "..");
const repo = path.resolve(sdkDir, "..", "..");
// Starts and stops the daemon; finds runtad under CARGO_TARGET_DIR (default ./target).
const daemonScript = path.join(repo, "scripts", "test-daemon.sh");
let endpoint = "";

function log(msg: string): void {
  process.stderr.write(`[harness] ${msg}\n`);
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Whether the daemon with this pid is still running. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
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

async function main(): Promise<number> {
  const stateDir = mkdtempSync(path.join(tmpdir(), "runta-ts-sdk-state-"));
  // The egress tests name their test hosts here (the daemon re-reads it every 2 s).
  const egressHosts = path.join(stateDir, "egress-hosts");
  writeFileSync(egressHosts, "");
  let info: Record<string, string>;
  try {
    const out = execFileSync("bash", [daemonScript, "start", "--egress-hosts", egressHosts], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        RUNTA_TEST_PORT: process.env["RUNTA_TEST_PORT"] ?? "18183",
        RUNTA_TEST_SUBNET_OCTET: process.env["RUNTA_TEST_SUBNET_OCTET"] ?? "152",
        RUNTA_TEST_DATA_PREFIX: "runta-ts-sdk-",
      },
    });
    info = Object.fromEntries(
      out
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
  } catch (e) {
    const err = e as { stderr?: string };
    log(`runtad did not start: ${err.stderr ?? String(e)}`);
    rmSync(stateDir, { recursive: true, force: true });
    return 1;
  }
  endpoint = info["RUNTA_TEST_ENDPOINT"] ?? "";
  const adminToken = info["RUNTA_TEST_ADMIN_TOKEN"] ?? "";
  const dataDir = info["RUNTA_TEST_DATA_DIR"] ?? "";
  const logFile = info["RUNTA_TEST_DAEMON_LOG"] ?? "";
  const pid = Number(info["RUNTA_TEST_DAEMON_PID"]);
  let code = 1;
  try {
    log(`runtad up at ${endpoint} (data dir ${dataDir})`);

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
        RUNTA_TEST_EGRESS_HOSTS: egressHosts,
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
      if (alive(pid)) {
        const n = await cleanup(stateDir);
        if (n > 0) log(`cleanup removed ${n} runtime(s) the tests left behind`);
      }
    } catch (e) {
      log(`cleanup failed: ${String(e)}`);
      code = code || 1;
    }
    rmSync(stateDir, { recursive: true, force: true });
    // Keeps the data dir (and the log in it) when the tests failed.
    execFileSync("bash", [daemonScript, "stop", dataDir, ...(code === 0 ? [] : ["--keep"])], { stdio: "inherit" });
    if (code !== 0) log(`daemon log kept at ${logFile}`);
  }
  return code;
}

process.exitCode = await main();
