// The part of the WebSocket API the client uses: the browser's, Node.js' global one (Node 22+),
// or an injected implementation such as the `ws` package's WebSocket class.

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: any) => void): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export const OPEN = 1;

/** The global WebSocket, or null (Node.js 20 has none: pass `WebSocket` from `ws`). */
export function globalWebSocket(): WebSocketConstructor | null {
  const candidate = (globalThis as { WebSocket?: unknown }).WebSocket;
  return typeof candidate === "function" ? (candidate as WebSocketConstructor) : null;
}

/**
 * The HTTP status of a refused handshake, when the implementation tells it: `ws` reports
 * "Unexpected server response: 401" in its error event. Browsers never expose it (a refused
 * handshake is a plain close 1006 there), so a browser keeps retrying with backoff.
 */
export function handshakeStatus(event: unknown): number | null {
  const error = (event as { error?: unknown; message?: unknown } | null) ?? {};
  const text = [error.message, (error.error as { message?: unknown } | undefined)?.message]
    .filter((part): part is string => typeof part === "string")
    .join(" ");
  const match = /Unexpected server response: (\d{3})/.exec(text);
  return match ? Number(match[1]) : null;
}
