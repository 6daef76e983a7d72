/**
 * Egress through the SDK: a policy set on create and changed live, enforced for
 * programs inside a real runtime (curl, and Node's own `fetch`, which ignores
 * proxy variables), and the audits. The outside hosts are HTTP servers in a
 * network namespace this file creates (198.18.63.2 = allowed.test,
 * 198.18.63.3 = other.test, named in the daemon's `--egress-hosts` file).
 */

import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";

import { auditDetail, auditHost, hostOf, InvalidArgumentError, NotFoundError, type Audit, type Runta, type Runtime } from "@runta/runta-sdk";

import { deleteAll, newTenant, SMALL, uniqueName } from "./helpers.js";

const NET = 63;
const ALLOWED_IP = `198.18.${NET}.2`;
const OTHER_IP = `198.18.${NET}.3`;
const IPS: Record<string, string> = { "allowed.test": ALLOWED_IP, "other.test": OTHER_IP };

const SERVER = `
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello %s\\n" % self.connection.getsockname()[0]).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", 80), H).serve_forever()
`;

const tag = String(process.pid % 10000);
const ns = `egts-${tag}`;
const veth = `egtsh${tag}`;
const peer = `egtsp${tag}`;

function sh(cmd: string): void {
  execFileSync("sh", ["-c", cmd], { stdio: ["ignore", "ignore", "inherit"] });
}

function quiet(cmd: string): void {
  try {
    execFileSync("sh", ["-c", cmd], { stdio: "ignore" });
  } catch {
    // Not there: nothing to remove.
  }
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** `curl` inside the runtime; a test host's name is pinned to its address, so a denial is the gateway reading the Host. */
async function curl(rt: Runtime, url: string): Promise<string> {
  const host = url.split("/")[2] ?? "";
  const pin = IPS[host] ? `--resolve ${host}:80:${IPS[host]}` : "";
  const r = await rt.exec(`curl -s -m 5 ${pin} -w ' status=%{http_code}' ${url}`);
  return r.stdoutText + r.stderrText;
}

const reached = (out: string, ip: string): boolean => out.includes(`hello ${ip}`);
const denied = (out: string): boolean => out.includes("status=403") && !out.includes("hello");

/** Retries `probe` until `want` holds (the daemon re-reads its hosts file every 2 s). */
async function until(probe: () => Promise<string>, want: (s: string) => boolean, ms = 15_000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const out = await probe();
    if (want(out) || Date.now() > deadline) return out;
    await sleep(300);
  }
}

async function waitAudit(runta: Runta, rt: Runtime, pred: (a: Audit) => boolean): Promise<Audit> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const found = (await runta.audits.list({ runtime: rt, limit: 1000 })).find(pred);
    if (found) return found;
    assert.ok(Date.now() < deadline, "no such audit");
    await sleep(300);
  }
}

describe("egress: policies, live changes, audits", () => {
  let runta: Runta;
  let server: ChildProcess | undefined;
  const made: Runtime[] = [];
  const skip = process.getuid?.() !== 0 ? "skipped: making a network namespace for the test hosts needs root" : false;

  before(async () => {
    ({ runta } = await newTenant("eg"));
    if (skip) return;
    quiet(`ip netns del ${ns}`);
    quiet(`ip link del ${veth}`);
    sh(`ip netns add ${ns}`);
    sh(`ip link add ${veth} type veth peer name ${peer} && ip link set ${peer} netns ${ns}`);
    sh(`ip addr add 198.18.${NET}.1/24 dev ${veth} && ip link set ${veth} up`);
    sh(
      `ip -n ${ns} addr add ${ALLOWED_IP}/24 dev ${peer} && ip -n ${ns} addr add ${OTHER_IP}/24 dev ${peer} && ` +
        `ip -n ${ns} link set ${peer} up && ip -n ${ns} link set lo up && ip -n ${ns} route add default via 198.18.${NET}.1`,
    );
    server = spawn("ip", ["netns", "exec", ns, "python3", "-c", SERVER], { stdio: "ignore" });
    writeFileSync(process.env["RUNTA_TEST_EGRESS_HOSTS"] ?? "", `${ALLOWED_IP} allowed.test\n${OTHER_IP} other.test\n`);
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        execFileSync("curl", ["-sf", "-m", "1", `http://${ALLOWED_IP}/`], { stdio: "ignore" });
        break;
      } catch {
        assert.ok(Date.now() < deadline, "test server not up");
        await sleep(100);
      }
    }
  });

  after(async () => {
    await deleteAll(...made);
    server?.kill("SIGKILL");
    quiet(`ip netns del ${ns}`);
    quiet(`ip link del ${veth}`);
  });

  it("creates with allowedHosts, enforces it, changes it live both ways, audits it", { skip }, async () => {
    const rt = await runta.runtimes.create(uniqueName("eg"), { ...SMALL, allowedHosts: ["https://Allowed.TEST/simple"] });
    made.push(rt);
    // The URL was cut to its host; the record answers both spellings.
    assert.deepEqual(rt.cachedInfo.egress_policy, { enabled: true, mode: "allowlist", allowed_hosts: ["allowed.test"], denied_hosts: [] });
    assert.deepEqual(await rt.egress.list(), ["allowed.test"]);

    let out = await until(() => curl(rt, "http://allowed.test/"), (o) => reached(o, ALLOWED_IP));
    assert.ok(reached(out, ALLOWED_IP), out);
    out = await curl(rt, "http://other.test/");
    assert.ok(denied(out), out);
    assert.ok(out.includes("other.test"), `the 403 names the host: ${out}`);

    const a = await waitAudit(runta, rt, (x) => auditDetail(x).action === "deny" && auditHost(x) === "other.test");
    assert.equal(a.category, "egress");
    assert.equal(a.runtime_id, rt.id);
    assert.ok(auditDetail(a).reason, JSON.stringify(a));
    assert.ok((await rt.egress.audit({ limit: 100 })).some((x) => auditDetail(x).action === "allow" && auditHost(x) === "allowed.test"));
    const dns = await runta.audits.list({ runtime: rt.name, kind: "dns_query" });
    assert.ok(dns.every((x) => x.payload.egress.kind === "dns_query"), JSON.stringify(dns));
    const page = await runta.audits.listPage({ runtime: rt.id, limit: 1 });
    assert.equal(page.items.length, 1);
    if (page.nextCursor) {
      const older = await runta.audits.listPage({ runtime: rt.id, limit: 1, after: page.nextCursor });
      assert.ok((older.items[0]?.observed_unix_ms ?? 0) <= (page.items[0]?.observed_unix_ms ?? 0));
    }

    // Live: allow, then remove.
    const p = await rt.egress.allow("other.test");
    assert.deepEqual(p.allowed_hosts, ["allowed.test", "other.test"]);
    assert.deepEqual(rt.cachedInfo.egress_policy?.allowed_hosts, ["allowed.test", "other.test"]);
    out = await until(() => curl(rt, "http://other.test/"), (o) => reached(o, OTHER_IP));
    assert.ok(reached(out, OTHER_IP), out);
    await rt.egress.remove(["other.test"]);
    out = await until(() => curl(rt, "http://other.test/"), denied);
    assert.ok(denied(out), out);

    // A denylist; deny/enable/disable keep the lists; the 0.1.1 shape; open again.
    await rt.egress.setPolicy({ mode: "denylist", denied_hosts: ["other.test"] });
    out = await until(() => curl(rt, "http://allowed.test/"), (o) => reached(o, ALLOWED_IP));
    assert.ok(reached(out, ALLOWED_IP), out);
    assert.ok(denied(await curl(rt, "http://other.test/")));
    assert.deepEqual((await rt.egress.deny("allowed.test")).denied_hosts, ["other.test", "allowed.test"]);
    assert.equal((await rt.egress.enable()).mode, "allowlist");
    assert.equal((await rt.egress.disable()).enabled, false);
    await rt.egress.updatePolicy({ enabled: true, allowed_hosts: ["other.test"] });
    assert.deepEqual(await rt.egress.get(), { enabled: true, mode: "allowlist", allowed_hosts: ["other.test"], denied_hosts: [] });
    out = await until(() => curl(rt, "http://allowed.test/"), denied);
    assert.ok(denied(out), out);
    const open = await rt.egress.clear();
    assert.deepEqual(open, { enabled: false, mode: "denylist", allowed_hosts: [], denied_hosts: [] });
    out = await until(() => curl(rt, "http://other.test/"), (o) => reached(o, OTHER_IP));
    assert.ok(reached(out, OTHER_IP), out);
  });

  it("holds Node's own fetch inside the runtime to the policy (no proxy variables involved)", { skip }, async (t) => {
    const node = process.execPath;
    // The base image is Debian with the libraries the host's node links (libstdc++,
    // libc); only the binary is copied in.
    if (!existsSync(node)) {
      t.skip(`skipped: no node binary at ${node} to copy in`);
      return;
    }
    const rt = await runta.runtimes.create(uniqueName("egnode"), { vcpus: 1, memoryMiB: 512, allowedHosts: ["allowed.test"] });
    made.push(rt);
    await rt.files.upload(node, "/usr/local/bin/node");
    const v = await rt.exec(["/usr/local/bin/node", "--version"]);
    if (v.exitCode !== 0) {
      // Reported rather than passed silently: the host's node cannot run in the image.
      t.skip(`skipped: the host's node does not run in the base image: ${v.stderrText}`);
      return;
    }
    const fetchJs = (url: string) =>
      `fetch(${JSON.stringify(url)}).then(async r => console.log("status=" + r.status + " " + (await r.text()))).catch(e => console.log("error=" + (e.cause?.code ?? e.message)))`;
    const run = async (url: string) => {
      // HTTP(S)_PROXY would be ignored by fetch anyway; set them to prove nothing depends on them.
      const r = await rt.exec(["/usr/local/bin/node", "-e", fetchJs(url)], { env: { HTTP_PROXY: "http://127.0.0.1:9", HTTPS_PROXY: "http://127.0.0.1:9" }, timeoutSecs: 30 });
      return r.stdoutText + r.stderrText;
    };
    let out = await until(() => run("http://allowed.test/"), (o) => reached(o, ALLOWED_IP));
    assert.ok(out.includes("status=200") && reached(out, ALLOWED_IP), out);
    // A denied name does not resolve; the raw address of the other host is not on the list either.
    out = await run("http://other.test/");
    assert.ok(out.includes("error=") && !out.includes("hello"), out);
    out = await run(`http://${OTHER_IP}/`);
    assert.ok(!reached(out, OTHER_IP), out);
    assert.ok(out.includes("status=403") || out.includes("error="), out);
    await waitAudit(runta, rt, (x) => auditDetail(x).action === "deny" && JSON.stringify(x).includes(OTHER_IP));
    // Live: allowing the address lets the same fetch through.
    await rt.egress.allow(OTHER_IP);
    out = await until(() => run(`http://${OTHER_IP}/`), (o) => reached(o, OTHER_IP));
    assert.ok(reached(out, OTHER_IP), out);
  });

  it("refuses bad input naming the field", async () => {
    const rt = await runta.runtimes.create(uniqueName("egbad"), SMALL);
    made.push(rt);
    assert.equal(hostOf("https://PyPI.org:443/simple"), "pypi.org");
    assert.equal(hostOf("[2001:db8::1]"), "[2001:db8::1]");
    // Caught before anything is sent.
    await assert.rejects(rt.egress.setPolicy({ mode: "blocklist" as "allowlist" }), (e: unknown) => e instanceof InvalidArgumentError && e.field === "egress_policy.mode");
    await assert.rejects(runta.audits.list({ kind: "everything" as "dns_query" }), (e: unknown) => e instanceof InvalidArgumentError && e.field === "kind");
    await assert.rejects(
      runta.runtimes.create(uniqueName("egx"), { ...SMALL, egressPolicy: { mode: "allowlist" }, allowedHosts: ["a.test"] }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "egress_policy",
    );
    // What only the daemon can judge: a 4xx naming the field or the entry.
    for (const bad of ["exa mple.com", "10.0.0.0/33", "a.test:443", "", "a".repeat(300) + ".test"]) {
      await assert.rejects(rt.egress.allow(bad), (e: unknown) => e instanceof InvalidArgumentError && `${e.field ?? ""} ${e.message}`.includes("egress_policy"), bad);
    }
    await assert.rejects(
      rt.egress.setPolicy({ mode: "allowlist", allowed_hosts: Array.from({ length: 257 }, (_, i) => `h${i}.test`) }),
      (e: unknown) => e instanceof InvalidArgumentError && `${e.field ?? ""} ${e.message}`.includes("egress_policy.allowed_hosts"),
    );
    await assert.rejects(
      rt.egress.setPolicy({ enabled: true, mode: "denylist" }),
      (e: unknown) => e instanceof InvalidArgumentError && `${e.field ?? ""} ${e.message}`.includes("egress_policy.enabled"),
    );
    // The refused changes left the policy open.
    assert.deepEqual(await rt.egress.get(), { enabled: false, mode: "denylist", allowed_hosts: [], denied_hosts: [] });
    assert.deepEqual(await runta.audits.list({ limit: 0 }), []);
    // Another tenant: not found.
    const { runta: other } = await newTenant("egother");
    await assert.rejects(other.audits.list({ runtime: rt.id }), NotFoundError);
    await assert.rejects(other.runtimes.get(rt.id), NotFoundError);
  });
});
