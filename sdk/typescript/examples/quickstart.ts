import { Runta } from "@runta/runta-sdk";
const runta = new Runta();
const runtime = await runta.runtimes.create("worker", { vcpus: 2, memoryMiB: 2048 });
for (const item of await runta.runtimes.list()) console.log(item.id, item.name, item.cachedInfo.status);
const same = await runta.runtimes.get("worker");
const result = await runtime.exec(["sh", "-lc", "pwd && python3 --version"], { timeoutSecs: 30, env: { APP_ENV: "dev" } });
console.log(result.exit_code); console.log(result.stdoutText);
await runtime.pause(); await runtime.resume(); await runtime.stop(); await runtime.start(); await runtime.resizeMemory(4096); await runtime.delete();
