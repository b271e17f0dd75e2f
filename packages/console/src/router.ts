import { useEffect, useState } from "preact/hooks";

/** Hash routes (#/, #/boxes/<id>, #/new): the daemon serves one page, and a reload keeps the place. */
export type Route = { page: "boxes"; app?: string } | { page: "box"; id: string } | { page: "new" };

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, "") || "/";
  const box = /^\/boxes\/([^/?]+)$/.exec(path);
  if (box) return { page: "box", id: decodeURIComponent(box[1]!) };
  if (path === "/new") return { page: "new" };
  const app = /^\/\?app=([^&]+)$/.exec(path);
  return { page: "boxes", app: app ? decodeURIComponent(app[1]!) : undefined };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onChange);
    onChange(); // the hash may have changed between the first render and this effect (a link followed while the page loaded)
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

export const go = (hash: string) => (location.hash = hash);
