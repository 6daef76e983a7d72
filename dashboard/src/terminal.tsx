import { useEffect, useRef, useState } from 'preact/hooks';
import type { Terminal } from '@xterm/xterm';
import type { FitAddon } from '@xterm/addon-fit';
import { getToken } from './api';

type State = 'idle' | 'connecting' | 'open' | 'closed';

const enc = new TextEncoder();

function toB64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function fromB64(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Starts a login shell (bash when the image has it) for the interactive terminal. */
const SHELL = 'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi';

/**
 * An interactive terminal over `GET /v1/runtimes/{id}/exec/ws`. Browsers cannot
 * set headers on a WebSocket, so the token travels as the `runta-token.<token>`
 * subprotocol next to `runta-v1`.
 */
export function TerminalPanel({ runtimeId, canConnect, hint }: { runtimeId: string; canConnect: boolean; hint: string }) {
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<Terminal | null>(null);
  const fit = useRef<FitAddon | null>(null);
  const ws = useRef<WebSocket | null>(null);
  const [state, setState] = useState<State>('idle');
  const leave = useRef<HTMLButtonElement>(null);

  useEffect(
    () => () => {
      ws.current?.close();
      term.current?.dispose();
    },
    [],
  );

  useEffect(() => {
    if (!host.current) return;
    const ro = new ResizeObserver(() => {
      if (term.current && host.current?.offsetParent) fit.current?.fit();
    });
    ro.observe(host.current);
    return () => ro.disconnect();
  }, []);

  const send = (frame: object) => {
    if (ws.current?.readyState === WebSocket.OPEN) ws.current.send(JSON.stringify(frame));
  };

  const connect = async () => {
    const token = getToken();
    if (!token || !host.current) return;
    if (!term.current) {
      setState('connecting');
      // xterm.js is the bulk of the bundle: load it only when a terminal opens.
      const [{ Terminal }, { FitAddon }] = await Promise.all([import('@xterm/xterm'), import('@xterm/addon-fit')]);
      if (!host.current || term.current) return;
      const t = new Terminal({
        cursorBlink: true,
        fontFamily: 'ui-monospace, "JetBrains Mono", "DejaVu Sans Mono", Menlo, Consolas, monospace',
        fontSize: 13,
        lineHeight: 1.15,
        scrollback: 5000,
        theme: {
          background: '#0f1420',
          foreground: '#dce3ee',
          cursor: '#8fb3ff',
          selectionBackground: '#33415c',
        },
      });
      const f = new FitAddon();
      t.loadAddon(f);
      t.open(host.current);
      f.fit();
      t.onData((d) => send({ type: 'stdin', data_base64: toB64(enc.encode(d)) }));
      t.onBinary((d) => {
        const b = new Uint8Array(d.length);
        for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
        send({ type: 'stdin', data_base64: toB64(b) });
      });
      t.onResize(({ rows, cols }) => send({ type: 'resize', rows, cols }));
      // The shell wants Tab; Ctrl+] (as in telnet) moves focus out of the terminal.
      t.attachCustomKeyEventHandler((e) => {
        if (e.type === 'keydown' && e.ctrlKey && e.key === ']') {
          leave.current?.focus();
          return false;
        }
        return true;
      });
      term.current = t;
      fit.current = f;
    } else {
      term.current.reset();
      fit.current?.fit();
    }
    const t = term.current;
    setState('connecting');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const sock = new WebSocket(`${proto}//${location.host}/v1/runtimes/${encodeURIComponent(runtimeId)}/exec/ws`, [
      'runta-v1',
      `runta-token.${token}`,
    ]);
    sock.binaryType = 'arraybuffer';
    ws.current = sock;
    sock.onopen = () => {
      setState('open');
      sock.send(
        JSON.stringify({
          type: 'start',
          command: '/bin/sh',
          args: ['-c', SHELL],
          env: { TERM: 'xterm-256color' },
          tty: true,
          rows: t.rows,
          cols: t.cols,
        }),
      );
      t.focus();
    };
    sock.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        t.write(new Uint8Array(ev.data as ArrayBuffer));
        return;
      }
      let f: any;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (f.type === 'stdout' || f.type === 'stderr') t.write(fromB64(f.data_base64));
      else if (f.type === 'exit') t.write(`\r\n\x1b[2m[process exited with code ${f.exit_code}]\x1b[0m\r\n`);
      else if (f.type === 'error') t.write(`\r\n\x1b[31m[${f.code}: ${f.message}]\x1b[0m\r\n`);
    };
    sock.onclose = () => {
      if (ws.current === sock) {
        ws.current = null;
        setState('closed');
      }
    };
  };

  const disconnect = () => {
    ws.current?.close();
  };

  const label =
    state === 'open' ? 'connected' : state === 'connecting' ? 'connecting…' : state === 'closed' ? 'disconnected' : '';

  return (
    <section class="card term-card" aria-labelledby="term-title">
      <div class="card-head">
        <h2 id="term-title">Terminal</h2>
        {label && <span class={`term-state term-${state}`}>{label}</span>}
        {state === 'open' && <span class="muted small term-hint">Ctrl+] leaves the terminal</span>}
        <div class="card-head-end">
          {state === 'open' || state === 'connecting' ? (
            <button ref={leave} type="button" class="btn btn-secondary btn-sm" onClick={disconnect}>
              Disconnect
            </button>
          ) : (
            <button ref={leave} type="button" class="btn btn-primary btn-sm" onClick={connect} disabled={!canConnect}>
              {state === 'closed' ? 'Reconnect' : 'Open terminal'}
            </button>
          )}
        </div>
      </div>
      <div class="term-wrap">
        <div ref={host} class={`term${state === 'idle' ? ' term-hidden' : ''}`} data-testid="terminal" />
        {state === 'idle' && (
          <div class="term-placeholder">
            <p>{canConnect ? 'Open an interactive shell inside this runtime.' : hint}</p>
          </div>
        )}
      </div>
    </section>
  );
}
