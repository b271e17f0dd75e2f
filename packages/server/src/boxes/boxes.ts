import type { Runtime } from "../runtime/runtime.js";
import type { Store } from "../store/store.js";

/** Whose request it is: the API authenticates a token to an org and passes it to every room. */
export type { OrgRow } from "../store/store.js";
import { Apps } from "./apps.js";
import { BoxCreator, type BoxDefaults, type TcpSettings } from "./create.js";
import { Creates } from "./creates.js";
import type { PublicAddresses } from "./endpoints.js";
import { Endings } from "./endings.js";
import { Execs } from "./execs.js";
import { IdleSleeper } from "./idle.js";
import { Images } from "./images.js";
import { Lifecycle } from "./lifecycle.js";
import { Listeners } from "./listeners.js";
import { OrgLimitsRoom } from "./org-limits.js";
import { Outbound, type OutboundSettings } from "./outbound.js";
import type { Logger } from "./logger.js";
import { Power } from "./power.js";
import { RoutePublisher } from "./routes.js";
import { SailboxViews } from "./views.js";
import { TcpBinds } from "./tcp-binds.js";

export interface BoxesSettings {
  defaults: BoxDefaults;
  tcp: TcpSettings;
  addresses: PublicAddresses;
  outbound: OutboundSettings;
}

/**
 * The domain, as rooms around the lifecycle core. Each room takes only what it uses; this
 * function is where they meet (the daemon calls it once). Nothing here runs SQL, shells or
 * sockets: the store and the runtime do, behind their interfaces.
 */
export function createBoxes(store: Store, runtime: Runtime, settings: BoxesSettings, log: Logger) {
  const lifecycle = new Lifecycle(store);
  const routes = new RoutePublisher(store, runtime, lifecycle);
  const routesSynced = () => routes.synced();
  const tcpBinds = new TcpBinds();
  const views = new SailboxViews(store, lifecycle, runtime.hostArch, settings.addresses, tcpBinds);
  const describe = views.describe.bind(views);
  const outbound = new Outbound(store, lifecycle, runtime, settings.outbound, describe, log);
  const power = new Power(lifecycle, runtime, routesSynced, describe, log);
  const idle = new IdleSleeper(store, lifecycle, (id, reason) => power.sleepBox(id, reason), log);
  const images = new Images(runtime, log);
  const creator = new BoxCreator(store, lifecycle, runtime, images, settings.defaults, settings.tcp, outbound, describe, log);
  return {
    lifecycle,
    routes,
    tcpBinds,
    views,
    power,
    idle,
    apps: new Apps(store),
    orgLimits: new OrgLimitsRoom(store, settings.tcp.defaultLimitPerOrg, log),
    outbound,
    images,
    creator,
    creates: new Creates(store, creator, describe, log),
    endings: new Endings(store, lifecycle, runtime, describe, log),
    execs: new Execs(store, lifecycle, power, idle, runtime),
    listeners: new Listeners(store, lifecycle, power, idle, runtime, routesSynced, settings.addresses, tcpBinds),
  };
}

export type Boxes = ReturnType<typeof createBoxes>;
