// What the signed-in user may do, from GET /auth/me, evaluated the way
// broker_core/auth.py does: admins may do everything, a disabled user
// nothing; otherwise a permission grants its actions on the queues whose
// whole name matches its pattern, where `*` matches any run of characters
// and `?` exactly one (everything else, `[` included, is literal; case
// matters). Actions don't imply each other.
//
// This only decides which buttons to show: the broker checks every call.

const compiled = new Map();

function compile(pattern) {
  let regex = compiled.get(pattern);
  if (!regex) {
    let source = "";
    for (const char of pattern) {
      if (char === "*") source += "[\\s\\S]*";
      else if (char === "?") source += "[\\s\\S]";
      else source += char.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");
    }
    regex = new RegExp(`^(?:${source})$`, "u");
    compiled.set(pattern, regex);
  }
  return regex;
}

export function matches(pattern, name) {
  return compile(pattern).test(name);
}

export class Permissions {
  constructor(me) {
    this.username = me.username;
    this.admin = Boolean(me.admin) && !me.disabled;
    this.disabled = Boolean(me.disabled);
    this.grants = me.permissions ?? [];
  }

  /** May the user perform `action` ("publish" | "consume" | "manage") on `queue`? */
  allowed(action, queue) {
    if (this.disabled) return false;
    if (this.admin) return true;
    return this.grants.some((grant) => grant.actions.includes(action) && matches(grant.pattern, queue));
  }

  /** Does any permission grant `action` (on some queue)? Decides whether to offer "New queue". */
  any(action) {
    if (this.disabled) return false;
    return this.admin || this.grants.some((grant) => grant.actions.includes(action));
  }

  /** Browsing a queue's messages takes consume or manage (as GET /queues/{name}/messages). */
  canBrowse(queue) {
    return this.allowed("consume", queue) || this.allowed("manage", queue);
  }
}
