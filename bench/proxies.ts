/**
 * The proxies the HTTPS gateway is measured against, each configured as its users run it for the
 * job, all in front of the same guest with the same certificate (`<data dir>/tls`, RSA 2048),
 * TLS 1.2 and 1.3, resumption on or off like the gateway, and the gateway's forwarding headers:
 *  - nginx with a static upstream: one site, no routing; the floor a routing proxy is held to;
 *  - nginx + Lua (Debian's libnginx-mod-http-lua, the OpenResty/Kong pattern): a shared-dict route
 *    table (Host → guest address:port) filled through an admin location, `balancer_by_lua` picking
 *    the guest per request, upstream keep-alive;
 *  - Caddy (Debian's caddy): a `map` handler from Host to the upstream, reverse_proxy to it with
 *    keep-alive, certificates from files, no ACME, admin endpoint off.
 */
import { join } from "node:path";
import { DATA_DIR } from "../test/e2e/harness.js";
import { startCaddy, startNginx, type Started } from "./tools.js";

export const NGINX_PORT = 18444;
/** nginx proxying WebSocket upgrades to the guest's echo server. */
export const NGINX_WS_PORT = 18446;
export const NGINX_LUA_PORT = 18447;
/** The Lua balancer's route admin, loopback only. */
export const NGINX_LUA_ADMIN_PORT = 18448;
export const CADDY_PORT = 18449;

const CERT = join(DATA_DIR, "tls", "sail.localhost.crt");
const KEY = join(DATA_DIR, "tls", "sail.localhost.key");

/**
 * TLS 1.2 and 1.3 as Debian's nginx.conf has them (the 1.22 built-in default stops at 1.2, whose
 * resumption is cheaper and would compare different protocols); a session cache and tickets, or neither.
 */
const nginxTls = (resumption: boolean) =>
  `ssl_certificate ${CERT}; ssl_certificate_key ${KEY}; ssl_protocols TLSv1.2 TLSv1.3; ` +
  (resumption ? "ssl_session_cache shared:SSL:10m; ssl_session_tickets on;" : "ssl_session_cache off; ssl_session_tickets off;");

/**
 * What the gateway does to a request head (packages/server/src/gateway/haproxy-config.ts): the
 * Host as sent, X-Forwarded-For/-Proto/-Host set from what the proxy saw, a client's
 * X-Forwarded-Port and Forwarded dropped (an empty value removes the header).
 */
const NGINX_FORWARDED =
  'proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $remote_addr; ' +
  'proxy_set_header X-Forwarded-Proto https; proxy_set_header X-Forwarded-Host $http_host; proxy_set_header X-Forwarded-Port ""; proxy_set_header Forwarded "";';

/** nginx with the guest in its config: upstream keep-alive (1024 idle connections), http2. */
export function nginxStatic(guest: string, resumption: boolean): Started {
  return startNginx(`upstream guest { server ${guest}:3000; keepalive 1024; }
 server { listen 127.0.0.1:${NGINX_PORT} ssl http2 backlog=4096; ${nginxTls(resumption)} keepalive_requests 100000;
   location / { proxy_pass http://guest; ${NGINX_FORWARDED} } }
 server { listen 127.0.0.1:${NGINX_WS_PORT} ssl; ${nginxTls(resumption)}
   location / { proxy_pass http://${guest}:3001; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; proxy_set_header Host $host; } }`);
}

/**
 * nginx routing by Host at run time, as OpenResty and Kong do: the access phase looks the Host up
 * in a shared dict (one copy for all workers) and an unknown Host gets 404; `balancer_by_lua`
 * hands that guest to the upstream. The `keepalive` pool keeps idle guest connections per address,
 * so keep-alive works for every routed guest; it comes after the balancer, which it wraps (before
 * it, nginx warns "load balancing method redefined" and every request dials the guest anew).
 * Routes are added with `POST /routes host=…&target=ip:port` on the admin port (addNginxLuaRoute).
 */
export function nginxLua(resumption: boolean): Started {
  return startNginx(
    `lua_shared_dict routes 10m;
 upstream guests {
   server 0.0.0.1; # never used: the balancer sets the peer
   balancer_by_lua_block {
     local ok, err = require("ngx.balancer").set_current_peer(ngx.ctx.guest_ip, ngx.ctx.guest_port)
     if not ok then ngx.log(ngx.ERR, "set_current_peer: ", err); return ngx.exit(500) end
   }
   keepalive 1024;
 }
 server { listen 127.0.0.1:${NGINX_LUA_PORT} ssl http2 backlog=4096; ${nginxTls(resumption)} keepalive_requests 100000;
   location / {
     access_by_lua_block {
       local route = ngx.shared.routes:get(ngx.var.host)
       if not route then return ngx.exit(404) end
       local ip, port = route:match("^(.+):(%d+)$")
       ngx.ctx.guest_ip, ngx.ctx.guest_port = ip, tonumber(port)
     }
     proxy_pass http://guests; ${NGINX_FORWARDED}
   } }
 server { listen 127.0.0.1:${NGINX_LUA_ADMIN_PORT};
   location = /routes { content_by_lua_block {
     if ngx.req.get_method() ~= "POST" then return ngx.exit(405) end
     ngx.req.read_body()
     local args = ngx.req.get_post_args()
     if type(args.host) ~= "string" or type(args.target) ~= "string" or not args.target:match("^.+:%d+$") then return ngx.exit(400) end
     local ok, err = ngx.shared.routes:set(args.host:lower(), args.target)
     if not ok then ngx.log(ngx.ERR, "routes:set: ", err); return ngx.exit(500) end
     ngx.say("ok")
   } } }`,
    { modules: ["ndk_http_module", "ngx_http_lua_module"] },
  );
}

/** Publish `host` → `target` (ip:port) in the Lua balancer's route table. */
export async function addNginxLuaRoute(host: string, target: string): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${NGINX_LUA_ADMIN_PORT}/routes`, {
    method: "POST",
    body: new URLSearchParams({ host, target }),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  if (response.status !== 200 || text.trim() !== "ok") throw new Error(`nginx+Lua route admin answered ${response.status}: ${text}`);
}

/**
 * Caddy 2 routing by Host with a `map` (Host → upstream, a placeholder the proxy dials per request),
 * in its native JSON config. It proxies with its defaults otherwise: X-Forwarded-For/-Proto/-Host
 * set from what it saw (a client's are not trusted), TLS 1.2 and 1.3 with session tickets, and
 * keep-alive to the upstream, whose idle pool goes from its default 32 to the 1024 nginx has.
 * Nothing reaches the internet: the certificate is loaded from files, automatic HTTPS (ACME,
 * redirects) is off, the admin endpoint is off (routes change by reloading the config), no HTTP/3.
 */
export function caddy(routes: Record<string, string>, resumption: boolean): Started {
  return startCaddy({
    admin: { disabled: true },
    logging: { logs: { default: { level: "ERROR" } } },
    apps: {
      tls: {
        certificates: { load_files: [{ certificate: CERT, key: KEY }] },
        ...(resumption ? {} : { session_tickets: { disabled: true } }),
      },
      http: {
        grace_period: "1s",
        servers: {
          sail: {
            listen: [`127.0.0.1:${CADDY_PORT}`],
            protocols: ["h1", "h2"],
            automatic_https: { disable: true },
            tls_connection_policies: [{}],
            routes: [
              {
                handle: [
                  {
                    handler: "map",
                    source: "{http.request.host}",
                    destinations: ["{sail.upstream}"],
                    mappings: Object.entries(routes).map(([host, target]) => ({ input: host, outputs: [target] })),
                  },
                  {
                    handler: "reverse_proxy",
                    upstreams: [{ dial: "{sail.upstream}" }],
                    headers: { request: { delete: ["Forwarded", "X-Forwarded-Port"] } },
                    transport: { protocol: "http", keep_alive: { max_idle_conns_per_host: 1024 } },
                  },
                ],
              },
            ],
          },
        },
      },
    },
  });
}
