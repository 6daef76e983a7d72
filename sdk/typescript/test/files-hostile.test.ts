// Directory and file downloads from a hostile runtime (issue 14 items 2 and 3,
// docs/security.md): links planted by a first download, setuid modes, a FIFO,
// a 2 TiB sparse file, and listings no filesystem can hold (sent by a fetch
// that rewrites the daemon's answers, as a hostile agent could).

import assert from "node:assert/strict";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";

import { Runta, unsafeEntryName, type Runtime } from "@runta/runta-sdk";

import { deleteAll, endpoint, newTenant, SMALL, uniqueName } from "./helpers.js";

describe("hostile downloads", () => {
  let rt: Runtime;
  let token: string;
  let local: string;

  before(async () => {
    const t = await newTenant("fsh");
    token = t.token;
    rt = await t.runta.runtimes.create(uniqueName("fsh"), SMALL);
    local = mkdtempSync(path.join(tmpdir(), "runta-ts-hostile-"));
  });
  after(async () => {
    await deleteAll(rt);
    rmSync(local, { recursive: true, force: true });
  });

  async function sh(cmd: string): Promise<void> {
    const r = await rt.exec(cmd);
    assert.equal(r.exit_code, 0, `${cmd}: ${r.stderr}`);
  }

  it("entry names must be one plain component", () => {
    for (const bad of ["", ".", "..", "../x", "a/b", "/etc", "a\\b", "x\0y", "a".repeat(256)]) {
      assert.notEqual(unsafeEntryName(bad), undefined, JSON.stringify(bad));
    }
    for (const good of ["a", ".hidden", "...", "a..b", "ünï"]) assert.equal(unsafeEntryName(good), undefined, good);
  });

  it("setuid, setgid and sticky bits are dropped; a planted folder link is not followed", async () => {
    const victim = path.join(local, "victim");
    mkdirSync(victim);
    await sh(
      `mkdir -p /h/d && printf 'x' > /h/d/suid && chmod 6755 /h/d/suid && printf 'y' > /h/d/sticky && chmod 1777 /h/d/sticky && ln -s ${victim} /h/d/sub && ln -s /etc /h/d/etc`,
    );
    const out = path.join(local, "out");
    await rt.files.download("/h/d", out);
    assert.equal(statSync(path.join(out, "suid")).mode & 0o7777, 0o755);
    assert.equal(statSync(path.join(out, "sticky")).mode & 0o7777, 0o777);
    assert.ok(lstatSync(path.join(out, "sub")).isSymbolicLink());
    // Now the runtime turns the link into a folder: a second download must not
    // follow the local link into `victim` (or /etc).
    await sh("rm /h/d/sub /h/d/etc && mkdir /h/d/sub /h/d/etc && echo pwned > /h/d/sub/p && echo pwned > /h/d/etc/runta-ts-pwned");
    await assert.rejects(rt.files.download("/h/d", out), /refusing to write through it/);
    assert.deepEqual(readdirSync(victim), []);
    assert.equal(existsSync("/etc/runta-ts-pwned"), false);
  });

  it("a planted file link is replaced, not written through", async () => {
    const victim = path.join(local, "victim-file");
    writeFileSync(victim, "mine");
    await sh(`mkdir -p /h/f && ln -s ${victim} /h/f/x`);
    const out = path.join(local, "fout");
    await rt.files.download("/h/f", out);
    await sh("rm /h/f/x && echo evil > /h/f/x");
    await rt.files.download("/h/f", out);
    assert.equal(readFileSync(victim, "utf8"), "mine");
    assert.ok(lstatSync(path.join(out, "x")).isFile());
    // A single-file download onto a link replaces the link too.
    await rt.files.download("/h/f/x", path.join(out, "x"));
    assert.equal(readFileSync(victim, "utf8"), "mine");
  });

  it("huge files are refused, maxBytes bounds the total, and nothing the user had is removed", async () => {
    await sh("truncate -s 2T /h/huge && mkdir -p /h/many && for i in 1 2 3; do head -c 400000 /dev/urandom > /h/many/f$i; done");
    const dir = path.join(local, "big");
    mkdirSync(dir);
    await assert.rejects(rt.files.download("/h/huge", path.join(dir, "huge")), /2199023255552/);
    await assert.rejects(rt.files.download("/h/huge", path.join(dir, "huge"), { maxBytes: 4 * 2 ** 40 }), /limited to/);
    writeFileSync(path.join(dir, "keep"), "keep me");
    await assert.rejects(rt.files.download("/h/many/f1", path.join(dir, "keep"), { maxBytes: 1000 }), /maxBytes/);
    assert.equal(readFileSync(path.join(dir, "keep"), "utf8"), "keep me");
    await assert.rejects(rt.files.download("/h/many", path.join(dir, "many"), { maxBytes: 1_000_000 }), /maxBytes/);
    assert.deepEqual(readdirSync(dir).sort(), ["keep"]);
    const ok = await rt.files.download("/h/many", path.join(dir, "many"), { maxBytes: 2_000_000 });
    assert.equal(ok.bytes, 1_200_000);
    // read() with maxBytes: a prefix, even of a 2 TiB file.
    const head = await rt.files.read("/h/huge", { maxBytes: 16 });
    assert.deepEqual(Array.from(head), new Array(16).fill(0));
  });

  it("a FIFO or a device is refused quickly", async () => {
    await sh("mkfifo /h/fifo");
    for (const p of ["/h/fifo", "/dev/zero"]) {
      const t0 = Date.now();
      await assert.rejects(rt.files.download(p, path.join(local, "fifo-copy")), /not a regular file/);
      assert.ok(Date.now() - t0 < 20_000);
    }
    assert.equal(existsSync(path.join(local, "fifo-copy")), false);
  });

  it("a hostile listing (.., /, NUL, duplicates) or a lying size writes nothing", async () => {
    await sh("mkdir -p /h/x");
    const cases: [string, { name: string; type: string; size: number; mode: number }[], RegExp][] = [
      ["dotdot", [{ name: "../escape", type: "file", size: 1, mode: 0o644 }], /name contains a path separator/],
      ["parent", [{ name: "..", type: "file", size: 1, mode: 0o644 }], /parent or self/],
      ["abs", [{ name: "/tmp/runta-ts-abs", type: "file", size: 1, mode: 0o644 }], /path separator/],
      ["nul", [{ name: "a\0b", type: "file", size: 1, mode: 0o644 }], /NUL/],
      ["empty", [{ name: "", type: "file", size: 1, mode: 0o644 }], /empty/],
      ["dup", [{ name: "a", type: "symlink", size: 0, mode: 0o777 }, { name: "a", type: "dir", size: 0, mode: 0o755 }], /twice/],
      ["size", [{ name: "a", type: "file", size: 2 ** 40, mode: 0o644 }], /maxBytes/],
    ];
    for (const [label, entries, expected] of cases) {
      const hostile: typeof fetch = async (input, init) => {
        const url = new URL(String(input));
        if (url.pathname.endsWith("/files/list") && url.searchParams.get("path") === "/h/x") {
          return new Response(JSON.stringify({ data: entries }), { status: 200, headers: { "content-type": "application/json" } });
        }
        if (url.pathname.endsWith("/files") && (url.searchParams.get("path") ?? "").startsWith("/h/x/")) {
          return new Response("bad", { status: 200 });
        }
        return fetch(input, init);
      };
      const client = new Runta({ endpoint, token, fetch: hostile });
      const r = await client.runtimes.get(rt.id);
      const out = path.join(local, `hostile-${label}`);
      await assert.rejects(r.files.download("/h/x", out), expected, label);
      assert.equal(existsSync(out), false, `${label}: wrote ${out}`);
      assert.equal(existsSync(path.join(local, "escape")), false);
      assert.equal(existsSync("/tmp/runta-ts-abs"), false);
    }
    // A stream longer than what the listing said is cut at maxBytes.
    const liar: typeof fetch = async (input, init) => {
      const url = new URL(String(input));
      if (url.pathname.endsWith("/files/list") && url.searchParams.get("path") === "/h/x") {
        return new Response(JSON.stringify({ data: [{ name: "a", type: "file", size: 1, mode: 0o644 }] }), { status: 200 });
      }
      if (url.pathname.endsWith("/files") && url.searchParams.get("path") === "/h/x/a") {
        const body = new ReadableStream<Uint8Array>({
          start(c) {
            for (let i = 0; i < 64; i++) c.enqueue(new Uint8Array(65536));
            c.close();
          },
        });
        return new Response(body, { status: 200 });
      }
      return fetch(input, init);
    };
    const r = await new Runta({ endpoint, token, fetch: liar }).runtimes.get(rt.id);
    const out = path.join(local, "liar");
    await assert.rejects(r.files.download("/h/x", out, { maxBytes: 1 << 20 }), /maxBytes/);
    assert.deepEqual(readdirSync(out), [], "a partial file was left");
  });
});
