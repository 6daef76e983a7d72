import assert from "node:assert/strict";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { InvalidArgumentError, NotFoundError, type Runtime } from "@runta/runta-sdk";

import { deleteAll, newTenant, SMALL, uniqueName } from "./helpers.js";

describe("files", () => {
  let rt: Runtime;
  let local: string;

  before(async () => {
    const { runta } = await newTenant("fs");
    rt = await runta.runtimes.create(uniqueName("files"), SMALL);
    local = mkdtempSync(path.join(tmpdir(), "runta-ts-files-"));
  });
  after(async () => {
    await deleteAll(rt);
    rmSync(local, { recursive: true, force: true });
  });

  it("write then read and readText; parents are created; text and bytes", async () => {
    await rt.files.write("/tmp/deep/er/hello.txt", "héllo wörld\n");
    assert.equal(await rt.files.readText("/tmp/deep/er/hello.txt"), "héllo wörld\n");
    const bytes = new Uint8Array(256).map((_, i) => i);
    await rt.files.write("/tmp/bin.dat", bytes);
    assert.deepEqual(Buffer.from(await rt.files.read("/tmp/bin.dat")), Buffer.from(bytes));
    // The command side sees the same file.
    assert.equal((await rt.exec("cat /tmp/deep/er/hello.txt")).stdoutText, "héllo wörld\n");
    assert.equal((await rt.exec("wc -c < /tmp/bin.dat")).stdoutText.trim(), "256");
    // Empty files and overwrite.
    await rt.files.write("/tmp/empty", "");
    assert.equal((await rt.files.read("/tmp/empty")).length, 0);
    await rt.files.write("/tmp/deep/er/hello.txt", "second");
    assert.equal(await rt.files.readText("/tmp/deep/er/hello.txt"), "second");
  });

  it("a large file round-trips", async () => {
    const big = randomBytes(3 * 1024 * 1024 + 17);
    await rt.files.write("/root/big.bin", big);
    const back = await rt.files.read("/root/big.bin");
    assert.equal(back.length, big.length);
    assert.ok(Buffer.from(back).equals(big));
  });

  it("mode sets permissions; list shows name, type, size, mode", async () => {
    await rt.files.write("/opt/tool/run.sh", "#!/bin/sh\necho ran\n", { mode: 0o755 });
    await rt.files.write("/opt/tool/data.txt", "12345", { mode: "0600" });
    assert.equal((await rt.exec("/opt/tool/run.sh")).stdoutText, "ran\n");
    const entries = await rt.files.list("/opt/tool");
    const byName = Object.fromEntries(entries.map((e) => [e.name, e]));
    assert.equal(byName["run.sh"]?.type, "file");
    assert.equal(byName["run.sh"]!.mode & 0o777, 0o755);
    assert.equal(byName["data.txt"]?.size, 5);
    assert.equal(byName["data.txt"]!.mode & 0o777, 0o600);
    const root = await rt.files.list("/opt");
    assert.equal(root.find((e) => e.name === "tool")?.type, "dir");
    await assert.rejects(rt.files.write("/tmp/x", "x", { mode: "rwx" }), InvalidArgumentError);
  });

  it("exists, mkdir, remove", async () => {
    assert.equal(await rt.files.exists("/etc/hostname"), true);
    assert.equal(await rt.files.exists("/nope/nothing"), false);
    await rt.files.mkdir("/srv/a/b/c");
    assert.equal((await rt.files.list("/srv/a/b")).map((e) => e.name).join(), "c");
    await rt.files.remove("/srv/a");
    assert.equal(await rt.files.exists("/srv/a"), false);
  });

  it("missing files are NotFoundError; relative paths are InvalidArgumentError naming path", async () => {
    await assert.rejects(rt.files.read("/no/such/file"), NotFoundError);
    await assert.rejects(rt.files.list("/no/such/dir"), NotFoundError);
    await assert.rejects(rt.files.read("etc/hostname"), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.field, "path");
      return true;
    });
  });

  it("path traversal stays inside the runtime", async () => {
    const marker = `runta-escape-${randomBytes(6).toString("hex")}`;
    // `..` past the root resolves inside the runtime's root.
    await rt.files.write(`/../../../../tmp/${marker}`, "inside");
    assert.equal(existsSync(`/tmp/${marker}`), false, "nothing was written on the host");
    assert.equal((await rt.exec(["cat", `/tmp/${marker}`])).stdoutText, "inside");
    const hn = await rt.files.readText("/../../../etc/hostname");
    assert.equal(hn.trim(), rt.name, "reads the runtime's /etc/hostname, not the host's");
    assert.notEqual(hn.trim(), hostname());
    // Symlinks pointing at / resolve in the runtime too.
    await rt.exec("ln -sfn / /tmp/rootlink && ln -sfn ../../../../../.. /tmp/uplink");
    assert.equal((await rt.files.readText("/tmp/rootlink/etc/hostname")).trim(), rt.name);
    assert.equal((await rt.files.readText("/tmp/uplink/etc/hostname")).trim(), rt.name);
    await rt.files.write(`/tmp/uplink/tmp/${marker}-2`, "via link");
    assert.equal(existsSync(`/tmp/${marker}-2`), false);
    assert.equal(await rt.files.exists(`/tmp/${marker}-2`), true);
    // Download of a traversal path lands where the caller asked, with runtime content.
    const dl = path.join(local, "hostname-copy");
    await rt.files.download("/../etc/hostname", dl);
    assert.equal(readFileSync(dl, "utf8").trim(), rt.name);
  });

  it("upload and download a single file", async () => {
    const src = path.join(local, "single.txt");
    writeFileSync(src, "single file\n", { mode: 0o640 });
    const up = await rt.files.upload(src, "/data/in/single.txt");
    assert.equal(up.files, 1);
    assert.equal(await rt.files.readText("/data/in/single.txt"), "single file\n");
    const dst = path.join(local, "out", "nested", "single.txt");
    const down = await rt.files.download("/data/in/single.txt", dst);
    assert.equal(down.files, 1);
    assert.equal(down.bytes, 12);
    assert.equal(readFileSync(dst, "utf8"), "single file\n");
    assert.equal(statSync(dst).mode & 0o777, 0o640);
  });

  it("upload and download directories recursively (nested, empty dirs, modes, symlinks, big files)", async () => {
    const src = path.join(local, "tree");
    mkdirSync(path.join(src, "a", "b", "c"), { recursive: true });
    mkdirSync(path.join(src, "empty"));
    writeFileSync(path.join(src, "top.txt"), "top");
    writeFileSync(path.join(src, "a", "one.txt"), "one");
    writeFileSync(path.join(src, "a", "b", "two.txt"), "two");
    writeFileSync(path.join(src, "a", "b", "c", "run.sh"), "#!/bin/sh\necho deep\n", { mode: 0o755 });
    const big = randomBytes(9 * 1024 * 1024);
    writeFileSync(path.join(src, "a", "big.bin"), big);
    symlinkSync("a/one.txt", path.join(src, "link-to-one"));

    const up = await rt.files.upload(src, "/work/tree");
    assert.equal(up.files, 5);
    assert.equal(up.symlinks, 1);
    assert.ok(up.directories >= 5);
    const listing = await rt.exec("cd /work/tree && find . | sort");
    assert.equal(
      listing.stdoutText,
      [".", "./a", "./a/b", "./a/b/c", "./a/b/c/run.sh", "./a/b/two.txt", "./a/big.bin", "./a/one.txt", "./empty", "./link-to-one", "./top.txt", ""].join("\n"),
    );
    assert.equal((await rt.exec("/work/tree/a/b/c/run.sh")).stdoutText, "deep\n");
    assert.equal((await rt.exec("readlink /work/tree/link-to-one")).stdoutText, "a/one.txt\n");
    assert.equal((await rt.exec("sha256sum < /work/tree/a/big.bin")).stdoutText.split(" ")[0], (await import("node:crypto")).createHash("sha256").update(big).digest("hex"));

    const dst = path.join(local, "tree-back");
    const down = await rt.files.download("/work/tree", dst);
    assert.equal(down.files, 5);
    assert.equal(down.symlinks, 1);
    assert.equal(readFileSync(path.join(dst, "top.txt"), "utf8"), "top");
    assert.equal(readFileSync(path.join(dst, "a", "b", "two.txt"), "utf8"), "two");
    assert.ok(readFileSync(path.join(dst, "a", "big.bin")).equals(big));
    assert.equal(statSync(path.join(dst, "a", "b", "c", "run.sh")).mode & 0o777, 0o755);
    assert.ok(statSync(path.join(dst, "empty")).isDirectory());
    assert.ok(lstatSync(path.join(dst, "link-to-one")).isSymbolicLink());
    assert.equal(readlinkSync(path.join(dst, "link-to-one")), "a/one.txt");
  });

  it("file calls on a paused runtime are ConflictError", async () => {
    await rt.pause();
    try {
      await assert.rejects(rt.files.read("/etc/hostname"), (e: unknown) => (e as { status?: number }).status === 409);
    } finally {
      await rt.resume();
    }
  });
});
