import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api';

/** The hash route without the leading '#', e.g. `/runtimes/web`. */
export function useRoute(): string {
  const read = () => location.hash.replace(/^#/, '') || '/';
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function navigate(path: string) {
  location.hash = path;
}

export interface Poll<T> {
  data: T | undefined;
  error: ApiError | undefined;
  loading: boolean;
  refresh: () => void;
}

/**
 * Calls `fn` now and then every `ms` milliseconds while the page is visible,
 * keeping the last good value. `refresh()` fetches at once.
 */
export function usePoll<T>(fn: () => Promise<T>, ms: number, deps: unknown[]): Poll<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const kick = useRef<() => void>(() => {});
  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let inFlight = false;
    let again = false;
    const run = async () => {
      if (!alive) return;
      if (inFlight) {
        again = true;
        return;
      }
      clearTimeout(timer);
      inFlight = true;
      try {
        const v = await fn();
        if (!alive) return;
        setData(v);
        setError(undefined);
      } catch (e) {
        if (!alive) return;
        setError(e instanceof ApiError ? e : new ApiError(0, 'internal', String(e)));
      } finally {
        inFlight = false;
        if (alive) setLoading(false);
      }
      if (!alive) return;
      if (again) {
        again = false;
        run();
      } else if (!document.hidden) {
        timer = setTimeout(run, ms);
      }
    };
    const onVisible = () => {
      if (!document.hidden) run();
    };
    kick.current = run;
    document.addEventListener('visibilitychange', onVisible);
    run();
    return () => {
      alive = false;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  const refresh = useCallback(() => kick.current(), []);
  return { data, error, loading, refresh };
}

/** Ring buffer of samples that survives re-renders. */
export function useSamples<S>(max: number) {
  const ref = useRef<S[]>([]);
  const push = (s: S) => {
    ref.current = [...ref.current, s].slice(-max);
  };
  const reset = () => {
    ref.current = [];
  };
  return { samples: ref.current, push, reset, ref };
}
