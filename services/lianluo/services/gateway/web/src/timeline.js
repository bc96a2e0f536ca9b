// What the widget keeps of one conversation: which timeline items it has shown (by sequence
// number, so a replay after a reconnect shows nothing twice), the messages not yet confirmed
// (sent again after a reconnect, and kept once by their id), and how far the others have read.
export class Timeline {
  constructor() {
    this.shown = new Set();
    this.last = 0;
    this.pending = [];
  }

  // True the first time an item is seen; later copies (replays) are dropped.
  admit(item) {
    if (!item.seq || this.shown.has(item.seq)) return false;
    this.shown.add(item.seq);
    this.last = Math.max(this.last, item.seq);
    return true;
  }

  queue(message) {
    this.pending.push(message);
  }

  confirmed(clientId) {
    this.pending = this.pending.filter((m) => m.id !== clientId);
  }
}

export function messageId() {
  return "w" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}
