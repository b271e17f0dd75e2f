import { useEffect, useRef, useState } from "preact/hooks";
import { describeError, SailError } from "./api.js";

/** Live data without reload: fetch now, then every `intervalMs`; the latest error is kept beside the last good value. */
export function usePoll<T>(load: () => Promise<T>, intervalMs: number, deps: unknown[]): { data: T | undefined; error: string | undefined; unauthenticated: boolean; refresh: () => void } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [unauthenticated, setUnauthenticated] = useState(false);
  const tick = useRef<() => void>(() => {});
  useEffect(() => {
    let live = true;
    let timer: number | undefined;
    const run = async () => {
      clearTimeout(timer);
      try {
        const value = await load();
        if (!live) return;
        setData(value);
        setError(undefined);
      } catch (err) {
        if (!live) return;
        setError(describeError(err));
        if (err instanceof SailError && err.status === 401) setUnauthenticated(true);
      }
      if (live) timer = window.setTimeout(run, intervalMs);
    };
    tick.current = () => void run();
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, deps);
  return { data, error, unauthenticated, refresh: () => tick.current() };
}
