import { checkName, sailError, type AppInfo } from "@sail/protocol";
import type { AppRow, OrgRow, Store } from "../store/store.js";

/** Apps group an org's sailboxes; names of live sailboxes are unique within an app. */
export class Apps {
  constructor(private readonly store: Store) {}

  async find(org: OrgRow, name: string): Promise<AppInfo> {
    checkName("app", name);
    const app = await this.store.findApp(org.id, name);
    if (!app) throw sailError("SAIL_APP_NOT_FOUND", `No app named "${name}": create it with App.find({ name: "${name}", mintIfMissing: true }) or \`sail box create --app ${name}\``, { app: name });
    return appInfo(app);
  }

  /** Find or create (idempotent). */
  async mint(org: OrgRow, name: string): Promise<AppInfo> {
    checkName("app", name);
    return appInfo(await this.store.mintApp(org.id, name));
  }

  async list(org: OrgRow): Promise<AppInfo[]> {
    return (await this.store.listApps(org.id)).map(appInfo);
  }
}

const appInfo = (app: AppRow): AppInfo => ({ id: app.id, name: app.name, createdAt: app.createdAt });
