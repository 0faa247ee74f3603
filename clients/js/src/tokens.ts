// Where a client gets a fresh connection token: the application's token URL.
//
// `new RoomcastClient(url, name, { token: tokenFromUrl("/roomcast/token") })` fetches the URL
// before every connection and whenever the server says the token is expiring (`token_expiring`);
// the client then sends it as a `refresh` on the open connection. The URL answers the token as
// text/plain, or as JSON `{"token": "<jwt>"}`. In a browser the request carries the page's
// cookies (same origin by default), so the application's own session decides.

/** Options of {@link tokenFromUrl}. */
export interface TokenUrlOptions {
  /** Extra request headers (an API key, a CSRF header). */
  headers?: Record<string, string>;
  /** fetch's credentials mode: "same-origin" (default) or "include" for a token service elsewhere. */
  credentials?: "omit" | "same-origin" | "include";
  /** Milliseconds before the request is given up (10000). */
  timeout?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

/** A token source that GETs `url` for each token; rejects when no token comes back. */
export function tokenFromUrl(url: string, options: TokenUrlOptions = {}): () => Promise<string> {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  return async () => {
    const answer = await doFetch(url, {
      method: "GET",
      headers: { Accept: "application/json, text/plain", ...options.headers },
      credentials: options.credentials ?? "same-origin",
      cache: "no-store",
      signal: AbortSignal.timeout(options.timeout ?? 10_000),
    });
    if (!answer.ok) throw new Error(`the token URL answered ${answer.status}`);
    return parseTokenAnswer(await answer.text(), answer.headers.get("content-type") ?? "");
  };
}

/** The token in a token URL's answer (JSON `{"token": T}` or the bare token). */
export function parseTokenAnswer(body: string, contentType: string): string {
  let token: unknown = body.trim();
  if (contentType.split(";")[0]!.trim().toLowerCase() === "application/json") {
    const data: unknown = JSON.parse(body);
    token = data !== null && typeof data === "object" ? (data as Record<string, unknown>).token : undefined;
  }
  if (typeof token !== "string" || token === "" || /\s/.test(token)) {
    throw new Error("the token URL answered no token");
  }
  return token;
}
