export function age(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60 ? ` ${m % 60}m` : ''}`;
  return `${Math.floor(h / 24)}d`;
}

export function mib(n: number | null | undefined): string {
  if (n == null || !isFinite(n)) return '—';
  if (n >= 1024) return `${(n / 1024).toFixed(n >= 10240 ? 0 : 1)} GiB`;
  return `${n >= 100 ? Math.round(n) : n.toFixed(1).replace(/\.0$/, '')} MiB`;
}

export function cpus(n: number): string {
  return `${+n.toFixed(2)}`;
}

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function time(iso: string): string {
  return new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function seconds(n: number): string {
  if (n < 60) return `${n.toFixed(1)} s`;
  if (n < 3600) return `${(n / 60).toFixed(1)} min`;
  return `${(n / 3600).toFixed(1)} h`;
}
