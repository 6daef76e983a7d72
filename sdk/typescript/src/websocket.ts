/**
 * A small RFC 6455 WebSocket client on `node:http`/`node:https`, enough for the exec
 * route: text and binary frames, fragmentation, ping/pong, close. It exists so the
 * SDK needs no runtime dependency (Node 20 has no global WebSocket, and browsers'
 * cannot send an Authorization header anyway).
 */

import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import * as http from "node:http";
import * as https from "node:https";
import type { Duplex } from "node:stream";

import { errorFromResponse, RuntaConnectionError, RuntaTimeoutError } from "./errors.js";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export interface WsMessage {
  text: boolean;
  data: Buffer;
}

/**
 * Events: `message` (WsMessage), `close` (code, reason), `error` (Error).
 */
export class MiniWebSocket extends EventEmitter {
  private buf: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private fragmentText = false;
  private closed = false;
  private closeSent = false;

  private constructor(private readonly socket: Duplex, head: Buffer) {
    super();
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("close", () => this.finish(1006, "connection closed"));
    socket.on("error", (e: Error) => {
      if (!this.closed) this.emit("error", e);
    });
    if (head.length > 0) queueMicrotask(() => this.onData(head));
  }

  /** Opens a connection; rejects with a typed RuntaError when the server refuses the upgrade. */
  static connect(
    url: string,
    headers: Record<string, string>,
    opts: { protocols?: string[]; timeoutMs?: number } = {},
  ): Promise<MiniWebSocket> {
    const u = new URL(url);
    const secure = u.protocol === "https:" || u.protocol === "wss:";
    const key = randomBytes(16).toString("base64");
    const reqHeaders: Record<string, string> = {
      ...headers,
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-key": key,
      "sec-websocket-version": "13",
    };
    if (opts.protocols && opts.protocols.length > 0) reqHeaders["sec-websocket-protocol"] = opts.protocols.join(", ");
    const mod = secure ? https : http;
    return new Promise<MiniWebSocket>((resolve, reject) => {
      const req = mod.request({
        protocol: secure ? "https:" : "http:",
        hostname: u.hostname.replace(/^\[|\]$/g, ""),
        port: u.port || (secure ? 443 : 80),
        path: u.pathname + u.search,
        method: "GET",
        headers: reqHeaders,
      });
      let settled = false;
      const timer =
        opts.timeoutMs && opts.timeoutMs > 0
          ? setTimeout(() => {
              if (settled) return;
              settled = true;
              req.destroy();
              reject(new RuntaTimeoutError({ code: "timeout", message: `WebSocket ${u.pathname}: no upgrade within ${opts.timeoutMs} ms` }));
            }, opts.timeoutMs)
          : undefined;
      req.on("upgrade", (res, socket, head) => {
        clearTimeout(timer);
        if (settled) {
          socket.destroy();
          return;
        }
        settled = true;
        const expected = createHash("sha1").update(key + GUID).digest("base64");
        if (res.headers["sec-websocket-accept"] !== expected) {
          socket.destroy();
          reject(new RuntaConnectionError({ code: "connection_error", message: "WebSocket handshake failed: bad Sec-WebSocket-Accept" }));
          return;
        }
        socket.setNoDelay?.(true);
        resolve(new MiniWebSocket(socket, head));
      });
      req.on("response", (res) => {
        clearTimeout(timer);
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          if (settled) return;
          settled = true;
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            /* not JSON */
          }
          const rid = res.headers["x-request-id"];
          reject(errorFromResponse(res.statusCode ?? 0, body, typeof rid === "string" ? rid : undefined));
        });
      });
      req.on("error", (e) => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        reject(new RuntaConnectionError({ code: "connection_error", message: `WebSocket ${url}: ${e.message}`, cause: e }));
      });
      req.end();
    });
  }

  get isOpen(): boolean {
    return !this.closed && !this.closeSent;
  }

  sendText(s: string): void {
    this.sendFrame(0x1, Buffer.from(s, "utf8"));
  }

  sendBinary(b: Uint8Array): void {
    this.sendFrame(0x2, Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  }

  /** Starts the closing handshake (the server's close frame ends the connection). */
  close(code = 1000, reason = ""): void {
    if (this.closed || this.closeSent) return;
    const r = Buffer.from(reason, "utf8");
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0);
    r.copy(p, 2);
    this.sendFrame(0x8, p);
    this.closeSent = true;
    // Do not wait forever for the server's answer.
    setTimeout(() => this.terminate(), 2000).unref();
  }

  /** Drops the connection at once. */
  terminate(): void {
    this.socket.destroy();
    this.finish(1006, "terminated");
  }

  private sendFrame(opcode: number, payload: Buffer): void {
    if (this.closed || this.closeSent) return;
    const mask = randomBytes(4);
    const len = payload.length;
    let header: Buffer;
    if (len < 126) {
      header = Buffer.alloc(2);
      header[1] = 0x80 | len;
    } else if (len < 65536) {
      header = Buffer.alloc(4);
      header[1] = 0x80 | 126;
      header.writeUInt16BE(len, 2);
    } else {
      header = Buffer.alloc(10);
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(len), 2);
    }
    header[0] = 0x80 | opcode;
    const masked = Buffer.alloc(len);
    for (let i = 0; i < len; i++) masked[i] = (payload[i] as number) ^ (mask[i & 3] as number);
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0] as number;
      const b1 = this.buf[1] as number;
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      const masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        const big = this.buf.readBigUInt64BE(2);
        if (big > BigInt(256 * 1024 * 1024)) {
          this.emit("error", new RuntaConnectionError({ code: "connection_error", message: "WebSocket frame too large" }));
          this.terminate();
          return;
        }
        len = Number(big);
        off = 10;
      }
      let maskKey: Buffer | undefined;
      if (masked) {
        if (this.buf.length < off + 4) return;
        maskKey = this.buf.subarray(off, off + 4);
        off += 4;
      }
      if (this.buf.length < off + len) return;
      let payload = Buffer.from(this.buf.subarray(off, off + len));
      this.buf = this.buf.subarray(off + len);
      if (maskKey) for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (maskKey[i & 3] as number);
      switch (opcode) {
        case 0x0: // continuation
          this.fragments.push(payload);
          if (fin) {
            payload = Buffer.concat(this.fragments);
            this.fragments = [];
            this.emit("message", { text: this.fragmentText, data: payload } satisfies WsMessage);
          }
          break;
        case 0x1:
        case 0x2:
          if (fin) this.emit("message", { text: opcode === 0x1, data: payload } satisfies WsMessage);
          else {
            this.fragmentText = opcode === 0x1;
            this.fragments = [payload];
          }
          break;
        case 0x8: {
          const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
          const reason = payload.length > 2 ? payload.subarray(2).toString("utf8") : "";
          if (!this.closeSent) {
            this.sendFrame(0x8, payload.subarray(0, 2));
            this.closeSent = true;
          }
          this.socket.end();
          this.finish(code, reason);
          return;
        }
        case 0x9: // ping
          this.sendFrame(0xa, payload);
          break;
        case 0xa: // pong
          break;
        default:
          this.emit("error", new RuntaConnectionError({ code: "connection_error", message: `WebSocket: unknown opcode ${opcode}` }));
          this.terminate();
          return;
      }
    }
  }

  private finish(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.emit("close", code, reason);
  }
}
