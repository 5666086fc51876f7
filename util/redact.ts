// Secrets never leave the process: every text that may carry a URL with credentials (a --nats URL in a
// summary, a log line, an error, an API answer) goes through redactUrls before it is printed, written or served.

const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#]*)@/gi;

/**
 * Hides the credentials of every URL in a text: scheme://user:pass@host -> scheme://user:***@host, and
 * scheme://token@host (the whole user part is the secret) -> scheme://***@host. Text without URLs is unchanged.
 */
export function redactUrls(text: string): string {
  return text.replace(URL_USERINFO, (_m, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return `${scheme}${colon < 0 ? '***' : `${userinfo.slice(0, colon)}:***`}@`;
  });
}

/** One URL (or a comma-separated server list) with its credentials hidden; see redactUrls. */
export const redactUrl = (url: string): string => redactUrls(url);

/** The secret part of a URL's user info (the password, or the whole token), decoded and raw, or [] if none. */
export function urlSecrets(url: string): string[] {
  const out: string[] = [];
  for (const m of url.matchAll(URL_USERINFO)) {
    const userinfo = m[2];
    const secret = userinfo.includes(':') ? userinfo.slice(userinfo.indexOf(':') + 1) : userinfo;
    if (!secret) continue;
    out.push(secret);
    try {
      out.push(decodeURIComponent(secret));
    } catch {
      /* not percent-encoded */
    }
  }
  return out;
}
