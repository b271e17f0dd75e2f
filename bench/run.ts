/** `npm run bench [-- scenario...]`: scenarios run in one process, baselines in the same run. */
import { clusterBench } from "./cluster.js";
import { egress } from "./egress.js";
import { emulation } from "./emulation.js";
import { http } from "./http.js";
import { lifecycle } from "./lifecycle.js";
import { tcp } from "./tcp.js";
import { wake } from "./wake.js";

const SCENARIOS: Record<string, () => Promise<void>> = { lifecycle, http, tcp, wake, egress, emulation, cluster: clusterBench };

const wanted = process.argv.slice(2);
const names = wanted.length ? wanted : Object.keys(SCENARIOS);
for (const name of names) {
  const scenario = SCENARIOS[name];
  if (!scenario) {
    console.error(`unknown scenario "${name}"; known: ${Object.keys(SCENARIOS).join(", ")}`);
    process.exit(2);
  }
  console.log(`\n== ${name} ==`);
  await scenario();
}
