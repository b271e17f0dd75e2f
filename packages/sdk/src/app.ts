import { checkName, type AppInfo } from "@sail/protocol";
import { SailClient, type CallOptions } from "./client.js";

export interface FindAppOptions extends CallOptions {
  name: string;
  /** Create the app when it does not exist yet. @default false */
  mintIfMissing?: boolean;
  client?: SailClient;
}

/**
 * An app groups Sailboxes; names of live Sailboxes are unique within an app.
 *
 * @example
 * const app = await App.find({ name: "web-demo", mintIfMissing: true });
 */
export class App {
  readonly #client: SailClient;

  private constructor(
    client: SailClient,
    readonly id: string,
    readonly name: string,
  ) {
    this.#client = client;
  }

  /** The connection this app was found with; its Sailboxes use it too. */
  get client(): SailClient {
    return this.#client;
  }

  /** Look an app up by name; with `mintIfMissing` it is created if absent (a `NotFoundError` otherwise). */
  static async find(options: FindAppOptions): Promise<App> {
    const name = checkName("app", options.name);
    const client = options.client ?? SailClient.default();
    const path = `/v1/apps/${encodeURIComponent(name)}`;
    const call = { signal: options.signal, timeoutMs: options.timeoutMs };
    const info = options.mintIfMissing ? await client.request<AppInfo>("PUT", path, {}, call) : await client.request<AppInfo>("GET", path, undefined, call);
    return App.fromInfo(client, info);
  }

  /** Every app of your org. */
  static async list(options: CallOptions & { client?: SailClient } = {}): Promise<App[]> {
    const client = options.client ?? SailClient.default();
    const { apps } = await client.request<{ apps: AppInfo[] }>("GET", "/v1/apps", undefined, options);
    return apps.map((info) => App.fromInfo(client, info));
  }

  /** @internal */
  static fromInfo(client: SailClient, info: AppInfo): App {
    return new App(client, info.id, info.name);
  }
}
