import type { Architecture } from "@sail/protocol";
import type { Store } from "../store/store.js";

/** Whose request it is: the API authenticates a token to an org and passes it to every room. */
export type { OrgRow } from "../store/store.js";
import { Apps } from "./apps.js";
import { BoxCreator, type BoxDefaults, type TcpSettings } from "./create.js";
import { Creates } from "./creates.js";
import type { PublicAddresses } from "./endpoints.js";
import { Endings } from "./endings.js";
import { Execs } from "./execs.js";
import { Images } from "./images.js";
import { Lifecycle } from "./lifecycle.js";
import { Listeners } from "./listeners.js";
import type { Logger } from "./logger.js";
import { Nodes, type NodeLeaseSettings } from "./nodes.js";
import { OrgLimitsRoom } from "./org-limits.js";
import { OutboundPolicies } from "./outbound.js";
import { Power } from "./power.js";
import { Tokens } from "./tokens.js";
import { SailboxViews } from "./views.js";

export interface BoxesSettings {
  defaults: BoxDefaults;
  tcp: TcpSettings;
  addresses: PublicAddresses;
  /** A client of a node's wire at a URL (nodes that joined over the network). */
  dialNode: ConstructorParameters<typeof Nodes>[3];
  nodeLease?: NodeLeaseSettings;
}

/**
 * The control plane's domain, as rooms around the lifecycle core: orgs, tokens, apps, names,
 * quotas, public TCP ports and the store are here; the box's node (reached through `nodes`,
 * the NodeApi) runs it. This function is where the rooms meet (the daemon calls it once).
 * Nothing here runs SQL, shells or sockets: the store and the node do, behind their interfaces.
 */
export function createBoxes(store: Store, settings: BoxesSettings, log: Logger) {
  const lifecycle = new Lifecycle(store, log);
  const nodes = new Nodes(store, lifecycle, log, settings.dialNode, settings.nodeLease);
  // boxes made before Sail kept whether they are emulated: an attached node's architecture says
  const hostArch = (): Architecture | undefined => nodes.all()[0]?.info.hostArch;
  const views = new SailboxViews(store, lifecycle, nodes, hostArch, settings.addresses);
  const describe = views.describe.bind(views);
  const outbound = new OutboundPolicies(store, lifecycle, nodes, describe, log);
  const power = new Power(lifecycle, nodes, describe, log);
  const images = new Images(nodes, log);
  const creator = new BoxCreator(store, lifecycle, nodes, images, settings.defaults, settings.tcp, outbound, describe, log);
  return {
    store,
    lifecycle,
    nodes,
    views,
    power,
    images,
    apps: new Apps(store),
    tokens: new Tokens(store, log),
    orgLimits: new OrgLimitsRoom(store, settings.tcp.defaultLimitPerOrg, log),
    outbound,
    creator,
    creates: new Creates(store, creator, describe, log),
    endings: new Endings(store, lifecycle, nodes, describe, log),
    execs: new Execs(store, lifecycle, power, nodes),
    listeners: new Listeners(store, lifecycle, power, nodes, settings.addresses),
  };
}

export type Boxes = ReturnType<typeof createBoxes>;
