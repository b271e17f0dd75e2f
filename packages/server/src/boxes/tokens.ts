import { checkName, checkTokenLabel, sailError, type CreateTokenRequest, type CreatedToken, type TokenInfo } from "@sail/protocol";
import type { OrgRow, Store } from "../store/store.js";

import type { Logger } from "./logger.js";

/**
 * API tokens. An org manages its own tokens; the operator's org (the one `sail up` made)
 * may also mint tokens for other orgs, which creates them: that is how tenants are added.
 * Another org's token is "not found", never "forbidden", so ids do not leak across orgs.
 */
export class Tokens {
  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  async create(caller: OrgRow, request: CreateTokenRequest): Promise<CreatedToken> {
    const label = checkTokenLabel(request.label);
    let org = caller;
    if (request.org !== undefined && request.org !== caller.name) {
      const name = checkName("org", request.org);
      if (!caller.operator) {
        throw sailError("SAIL_FORBIDDEN", `Only the operator's org may create tokens for another org; your token belongs to org "${caller.name}"`, { org: name });
      }
      org = await this.store.ensureOrg(name);
    }
    const { id, token } = await this.store.createToken(org.id, label);
    this.log.info({ org: org.name, tokenId: id, by: caller.name }, "token created");
    return { ...(await this.store.getToken(id, org.id))!, token };
  }

  async list(caller: OrgRow, orgName?: string): Promise<TokenInfo[]> {
    if (orgName === undefined || orgName === caller.name) return this.store.listTokens(caller.id);
    if (!caller.operator) throw sailError("SAIL_FORBIDDEN", `Only the operator's org may list another org's tokens`, { org: orgName });
    const org = await this.store.findOrgByName(checkName("org", orgName));
    if (!org) throw sailError("SAIL_TOKEN_NOT_FOUND", `There is no org "${orgName}"`, { org: orgName });
    return this.store.listTokens(org.id);
  }

  /** Revoke at once: every request looks its token up. Idempotent. */
  async revoke(caller: OrgRow, id: string): Promise<TokenInfo> {
    const token = await this.store.getToken(id, caller.operator ? undefined : caller.id);
    if (!token) throw sailError("SAIL_TOKEN_NOT_FOUND", `No token with id ${id} in org "${caller.name}"`, { tokenId: id });
    await this.store.revokeToken(id);
    this.log.info({ org: token.org, tokenId: id, by: caller.name }, "token revoked");
    return (await this.store.getToken(id, undefined))!;
  }
}
