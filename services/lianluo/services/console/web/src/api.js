// The console's JSON API and its live events. Every call carries X-Requested-With, which a
// form posted from another site cannot; the session is an HTTP-only cookie the page never sees.
export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || body.error || String(status));
    this.status = status;
    this.error = body.error || "";
    this.fields = body.fields || {};
    this.validation = body.validation || null;
  }
}

export async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", "X-Requested-With": "lianluo" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const found = await response.json().catch(() => ({}));
  if (response.status === 401) window.dispatchEvent(new CustomEvent("lianluo:signed-out"));
  if (!response.ok) throw new ApiError(response.status, found);
  return found;
}

// Live events: the desk, the followed conversations (by the last sequence seen of each), the
// queue figures. A dropped connection opens again, naming what the page has seen, so nothing
// missed is lost.
// When the person's session ends the events stop until they sign in again.
export function live(follows, on, onState) {
  let source = null;
  let closed = false;
  let waiting = false;
  let retry = 500;
  function signedIn() {
    if (!waiting || closed) return;
    waiting = false;
    open();
  }
  window.addEventListener("lianluo:signed-in", signedIn);
  function open() {
    const follow = Object.entries(follows())
      .map(([iid, seq]) => `${iid}:${seq}`)
      .join(",");
    source = new EventSource(`/api/live?follow=${encodeURIComponent(follow)}`);
    source.onopen = () => {
      retry = 500;
      onState(true);
    };
    for (const kind of ["frame", "queues", "conversations", "agents", "closed"]) {
      source.addEventListener(kind, (event) => on(kind, JSON.parse(event.data)));
    }
    source.addEventListener("signed_out", () => {
      source.close();
      onState(false);
      waiting = true;
      window.dispatchEvent(new CustomEvent("lianluo:signed-out"));
    });
    source.onerror = () => {
      source.close();
      onState(false);
      if (closed) return;
      // The session may have ended: ask, and let the page sign in again.
      api("GET", "/api/me").then(
        () => setTimeout(open, retry),
        () => {
          waiting = true;
        },
      );
      retry = Math.min(retry * 2, 10000);
    };
  }
  open();
  return {
    reopen() {
      if (source) source.close();
      open();
    },
    close() {
      closed = true;
      window.removeEventListener("lianluo:signed-in", signedIn);
      if (source) source.close();
    },
  };
}

export function seq(frame) {
  return Number(frame.sequence || 0);
}
