import { createServer, type Server } from "node:http";

/**
 * The Prometheus endpoint: `GET /metrics` in the text exposition format, on its own
 * listener (`--metrics-listen`), without auth: bind it where only your scraper reaches.
 */
export function createMetricsServer(scrape: () => Promise<{ contentType: string; body: string }>): Server {
  return createServer(async (req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("Sail serves its metrics at GET /metrics\n");
      return;
    }
    try {
      const { contentType, body } = await scrape();
      res.writeHead(200, { "content-type": contentType }).end(body);
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" }).end(`could not collect metrics: ${(err as Error).message}\n`);
    }
  });
}
