import { useEffect, useState } from 'preact/hooks';

type Kind = 'ok' | 'error';
interface Toast { id: number; kind: Kind; text: string }

let next = 1;
const listeners = new Set<(t: Toast) => void>();

/** Shows a short message in the corner (announced to screen readers). */
export function toast(text: string, kind: Kind = 'ok') {
  const t = { id: next++, kind, text };
  listeners.forEach((l) => l(t));
}

export function Toasts() {
  const [items, setItems] = useState<Toast[]>([]);
  useEffect(() => {
    const on = (t: Toast) => {
      setItems((xs) => [...xs.slice(-3), t]);
      setTimeout(() => setItems((xs) => xs.filter((x) => x.id !== t.id)), t.kind === 'error' ? 8000 : 4000);
    };
    listeners.add(on);
    return () => listeners.delete(on);
  }, []);
  return (
    <div class="toasts" role="status" aria-live="polite">
      {items.map((t) => (
        <div key={t.id} class={`toast toast-${t.kind}`}>
          <span>{t.text}</span>
          <button
            type="button"
            class="toast-close"
            aria-label="Dismiss"
            onClick={() => setItems((xs) => xs.filter((x) => x.id !== t.id))}
          >
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
