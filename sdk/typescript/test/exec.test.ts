import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { ExecResult, InvalidArgumentError, type Runtime } from "@runta/runta-sdk";

import { deleteAll, newTenant, SMALL, uniqueName } from "./helpers.js";

describe("exec and sessions", () => {
  let rt: Runtime;

  before(async () => {
    const { runta } = await newTenant("ex");
    rt = await runta.runtimes.create(uniqueName("exec"), { ...SMALL, env: { FROM_RUNTIME: "rt" } });
  });
  after(async () => {
    await deleteAll(rt);
  });

  it("runs an argv with env and timeout; the result has snake_case and camelCase fields", async () => {
    const r = await rt.exec(["sh", "-lc", "pwd && python3 --version && echo $APP_ENV"], { timeoutSecs: 30, env: { APP_ENV: "dev" } });
    assert.ok(r instanceof ExecResult);
    assert.equal(r.exit_code, 0);
    assert.equal(r.exitCode, 0);
    assert.equal(r.ok, true);
    assert.match(r.stdoutText, /^\/root\nPython 3\.\d+\.\d+\ndev\n$/);
    assert.equal(r.stdout, r.stdoutText);
    assert.equal(r.stderrText, "");
    assert.equal(typeof r.durationMs, "number");
    assert.equal(r.durationMs, r.duration_ms);
    assert.equal(r.timedOut, false);
    assert.equal(r.stdoutTruncated, false);
    assert.equal(r.stderrTruncated, false);
    const json = JSON.parse(JSON.stringify(r));
    assert.equal(json.exit_code, 0);
    assert.equal(json.exitCode, 0);
  });

  it("a string runs through the shell; argv does not", async () => {
    const sh = await rt.exec("echo one | tr a-z A-Z && echo two >&2; exit 7");
    assert.equal(sh.exitCode, 7);
    assert.equal(sh.ok, false);
    assert.equal(sh.stdoutText, "ONE\n");
    assert.equal(sh.stderrText, "two\n");
    const argv = await rt.exec(["echo", "$HOME", "a|b", "*"]);
    assert.equal(argv.stdoutText, "$HOME a|b *\n");
  });

  it("cwd, env merged over the runtime's, and stdin", async () => {
    const r = await rt.exec("pwd; echo $FROM_RUNTIME $EXTRA; cat", { cwd: "/tmp", env: { EXTRA: "x" }, stdin: "piped in\n" });
    assert.equal(r.stdoutText, "/tmp\nrt x\npiped in\n");
    const over = await rt.exec(["printenv", "FROM_RUNTIME"], { env: { FROM_RUNTIME: "call" } });
    assert.equal(over.stdoutText, "call\n");
  });

  it("timeoutSecs kills the command: timedOut, exit code 124", async () => {
    const t0 = Date.now();
    const r = await rt.exec("echo started; sleep 30", { timeoutSecs: 1 });
    assert.equal(r.timedOut, true);
    assert.equal(r.timed_out, true);
    assert.equal(r.exitCode, 124);
    assert.equal(r.stdoutText, "started\n");
    assert.ok(Date.now() - t0 < 15_000, "returned soon after the timeout");
  });

  it("maxOutputBytes caps each stream and sets the truncation flags", async () => {
    const r = await rt.exec("head -c 5000 /dev/zero | tr '\\0' a; head -c 3000 /dev/zero | tr '\\0' b >&2", { maxOutputBytes: 100 });
    assert.equal(r.stdoutText, "a".repeat(100));
    assert.equal(r.stderrText, "b".repeat(100));
    assert.equal(r.stdoutTruncated, true);
    assert.equal(r.stderrTruncated, true);
    const small = await rt.exec("echo hi", { maxOutputBytes: 100 });
    assert.equal(small.stdoutTruncated, false);
  });

  it("non-UTF-8 output is decoded lossily, not an error", async () => {
    const r = await rt.exec("printf 'ok\\377\\n'");
    assert.equal(r.exitCode, 0);
    assert.ok(r.stdoutText.startsWith("ok"));
  });

  it("rejects bad commands before sending them", async () => {
    await assert.rejects(rt.exec(""), InvalidArgumentError);
    await assert.rejects(rt.exec([]), (e: unknown) => e instanceof InvalidArgumentError && e.field === "command");
  });

  it("session keeps cwd between commands: cd /tmp then pwd prints /tmp", async () => {
    const s = rt.session();
    assert.equal(s.cwd, "/root");
    const cd = await s.exec("cd /tmp");
    assert.equal(cd.exitCode, 0);
    assert.equal(cd.stdoutText, "");
    assert.equal(s.cwd, "/tmp");
    const pwd = await s.exec("pwd");
    assert.equal(pwd.stdoutText, "/tmp\n");
    await s.exec("mkdir -p work/sub && cd work/sub");
    assert.equal((await s.exec("pwd")).stdoutText, "/tmp/work/sub\n");
    // argv commands run in the session's directory too.
    assert.equal((await s.exec(["pwd"])).stdoutText, "/tmp/work/sub\n");
  });

  it("session keeps exported variables, drops unset ones, and does not persist per-call env", async () => {
    const s = rt.session({ env: { START: "1" } });
    await s.exec("export FOO=bar; BAZ=local");
    assert.equal((await s.exec("echo $START $FOO ${BAZ:-unset}")).stdoutText, "1 bar unset\n");
    assert.deepEqual(s.env, { START: "1", FOO: "bar" });
    await s.exec("export FOO=changed", { env: { ONCE: "yes" } });
    assert.equal((await s.exec("echo $FOO ${ONCE:-gone}")).stdoutText, "changed gone\n");
    await s.exec("unset FOO");
    assert.equal((await s.exec("echo ${FOO:-unset}")).stdoutText, "unset\n");
    assert.ok(!Object.keys(s.env).includes("FOO"));
    // The runtime's own variables stay available but are not copied into the session.
    assert.equal((await s.exec("echo $FROM_RUNTIME")).stdoutText, "rt\n");
    assert.ok(!Object.keys(s.env).includes("FROM_RUNTIME"));
    s.setEnv("MANUAL", "m");
    assert.equal((await s.exec("echo $MANUAL")).stdoutText, "m\n");
  });

  it("session output is exactly the command's: exit codes, no trailing newline, stderr, stdin", async () => {
    const s = rt.session();
    const r = await s.exec("cd /etc; printf 'no newline'; echo err >&2; exit 3");
    assert.equal(r.exitCode, 3);
    assert.equal(r.stdoutText, "no newline");
    assert.equal(r.stderrText, "err\n");
    assert.equal(s.cwd, "/etc", "cd before exit is kept");
    const cat = await s.exec("cat", { stdin: "abc" });
    assert.equal(cat.stdoutText, "abc");
    const failed = await s.exec("cd /does-not-exist");
    assert.notEqual(failed.exitCode, 0);
    assert.equal(s.cwd, "/etc");
  });

  it("session state survives output larger than maxOutputBytes", async () => {
    const s = rt.session();
    const r = await s.exec("cd /usr; head -c 5000 /dev/zero | tr '\\0' x", { maxOutputBytes: 1000 });
    assert.equal(r.stdoutTruncated, true);
    assert.equal(r.stdoutText, "x".repeat(1000));
    assert.equal(s.cwd, "/usr");
    await s.close();
  });

  it("two sessions are independent", async () => {
    const a = rt.session();
    const b = rt.session({ cwd: "/var" });
    await a.exec("cd /opt");
    assert.equal((await b.exec("pwd")).stdoutText, "/var\n");
    assert.equal((await a.exec("pwd")).stdoutText, "/opt\n");
  });
});
