// Lianluo web and H5 chat: embed with one tag,
//   <script src="https://<gateway>/v1/web/<tenant id>/<channel id>/widget.js"
//           data-title="Chat with us" data-prechat="name,order_number"></script>
// `data-prechat` asks for those fields before the first message; the answers start the
// conversation (self-service reads them as collected data; "name" is how the customer is shown).
//
// It keeps the visitor's id and the open interaction in localStorage, so a reload or a lost
// connection resumes the same conversation: the gateway replays every item after the last
// sequence number this page showed, and an item already shown is never shown twice.
import { Timeline, messageId } from "./timeline.js";

const script = document.currentScript;
const base = script.src.replace(/widget\.js(\?.*)?$/, "");
const origin = new URL(base).origin;
const socketUrl = base.replace(/^http/, "ws") + "ws";
const key = "lianluo:" + base;
const saved = JSON.parse(localStorage.getItem(key) || "{}");
const prechat = (script.dataset.prechat || "").split(",").map((f) => f.trim()).filter(Boolean);
const timeline = new Timeline();
let socket = null;
let ended = false;
let retry = 500;
let upload = "";
let rate = "";
let form = {};
let typingSince = 0;
let typingStop = null;

function save() {
  localStorage.setItem(key, JSON.stringify(saved));
}

const css = `
#lianluo-chat{position:fixed;right:12px;bottom:12px;width:min(360px,calc(100vw - 24px));
height:min(520px,calc(100vh - 24px));display:flex;flex-direction:column;font:14px sans-serif;
background:#fff;border:1px solid #ccc;border-radius:8px;box-shadow:0 2px 12px #0003;z-index:2147483647}
#lianluo-chat header{padding:10px;background:#0b5cad;color:#fff;border-radius:8px 8px 0 0}
#lianluo-chat ol{flex:1;overflow-y:auto;margin:0;padding:8px;list-style:none}
#lianluo-chat li{margin:4px 0;padding:6px 8px;border-radius:6px;max-width:85%;white-space:pre-wrap;word-wrap:break-word}
#lianluo-chat li.me{margin-left:auto;background:#dbeafe}#lianluo-chat li.them{background:#f1f5f9}
#lianluo-chat li.note{color:#555;font-style:italic;background:none}
#lianluo-chat li.me.read::after{content:" \\2713\\2713";color:#0b5cad;font-size:11px}
#lianluo-chat li img{max-width:100%;display:block}
#lianluo-chat .typing{padding:0 10px;height:18px;color:#555;font-size:12px}
#lianluo-chat form{display:flex;border-top:1px solid #ddd}
#lianluo-chat form.prechat{flex-direction:column;padding:8px;gap:6px;border:0}
#lianluo-chat input{flex:1;border:0;padding:10px;font-size:16px;min-width:0}
#lianluo-chat form.prechat input{border:1px solid #ccc;border-radius:4px}
#lianluo-chat button,#lianluo-chat label.attach{border:0;background:#0b5cad;color:#fff;padding:0 14px;cursor:pointer;display:flex;align-items:center}
#lianluo-chat form.prechat button{padding:10px}
#lianluo-chat label.attach{background:#e2e8f0;color:#111}
#lianluo-chat label.attach input{display:none}
#lianluo-chat li.rating button{background:none;color:#b45309;padding:0 4px;border:0;font-size:14px;cursor:pointer}`;

const style = document.createElement("style");
style.textContent = css;
document.head.appendChild(style);
const box = document.createElement("section");
box.id = "lianluo-chat";
box.setAttribute("aria-label", "chat");
box.innerHTML =
  "<header></header><ol aria-live='polite'></ol><div class='typing' aria-live='polite'></div>" +
  "<form class='compose'><label class='attach' title='Send a file or a photo'>+" +
  "<input type='file' name='file' accept='image/*,application/pdf,text/plain' aria-label='attach'>" +
  "</label><input name='text' autocomplete='off' placeholder='Type a message' " +
  "aria-label='message'><button type='submit'>Send</button></form>";
box.querySelector("header").textContent = script.dataset.title || "Chat with us";
document.body.appendChild(box);
const list = box.querySelector("ol");
const typing = box.querySelector(".typing");
const compose = box.querySelector("form.compose");
const input = compose.querySelector("input[name=text]");
const file = compose.querySelector("input[type=file]");

function add(cls, text, seq) {
  const item = document.createElement("li");
  item.className = cls;
  item.textContent = text;
  if (seq) item.dataset.seq = String(seq);
  list.appendChild(item);
  list.scrollTop = list.scrollHeight;
  return item;
}

function showAttachment(item, attachment) {
  const url = attachment.url.startsWith("/") ? origin + attachment.url : attachment.url;
  if (attachment.kind === "image") {
    const img = document.createElement("img");
    img.src = url;
    img.alt = attachment.name;
    item.appendChild(img);
  } else {
    const a = document.createElement("a");
    a.href = url;
    a.textContent = attachment.name;
    a.setAttribute("download", attachment.name);
    item.appendChild(a);
  }
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function onItem(item) {
  if (item.type === "welcome") {
    saved.visitor = item.visitor;
    saved.interaction = item.interaction;
    save();
    upload = item.upload;
    rate = item.rate;
    if (!script.dataset.title && item.title) box.querySelector("header").textContent = item.title;
    retry = 500;
    timeline.pending.forEach(send);
    return;
  }
  if (item.type === "typing") {
    typing.textContent = item.active ? "Typing\u2026" : "";
    return;
  }
  if (item.type === "read") {
    list.querySelectorAll("li.me").forEach((li) => {
      if (Number(li.dataset.seq) <= item.upto) li.classList.add("read");
    });
    return;
  }
  if (!timeline.admit(item)) return;
  if (item.type === "message") {
    const mine = item.from === "me";
    const li = add(mine ? "me" : "them", item.text, item.seq);
    if (item.attachment) showAttachment(li, item.attachment);
    if (item.form) {
      // A form to fill opens on its own page, which sends the answers back into the chat.
      const a = document.createElement("a");
      a.href = item.form.url.startsWith("/") ? origin + item.form.url : item.form.url;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = item.form.title || "A form to fill";
      li.appendChild(a);
    }
    timeline.confirmed(item.client_id);
    if (!mine) {
      typing.textContent = "";
      send({ type: "read", seq: item.seq });
    }
  } else if (item.type === "prompt") {
    const choices = (item.choices || []).map((c) => "[" + c.digit + "] " + c.label);
    add("them", [item.text].concat(choices).join("\n"), item.seq);
  } else if (item.type === "joined") {
    add("note", (item.name || "An agent") + " joined", item.seq);
  } else if (item.type === "ended" || (item.type === "state" && item.state === "wrap_up")) {
    // For the customer the conversation is over once the agent wraps up.
    if (!ended) {
      add("note", "The conversation has ended.", item.seq);
      askRating();
    }
    ended = true;
    delete saved.interaction;
    save();
  }
}

// After the end: "How did we do?", one to five, sent once to the signed path `welcome` gave.
function askRating() {
  if (!rate) return;
  const item = document.createElement("li");
  item.className = "note rating";
  item.textContent = "How did we do? ";
  for (let score = 1; score <= 5; score++) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "\u2605".repeat(score);
    button.setAttribute("aria-label", score + " of 5");
    button.dataset.score = String(score);
    button.addEventListener("click", () => {
      fetch(origin + rate, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ score: score }),
      }).then((r) => {
        item.textContent = r.ok ? "Thank you for your rating." : "Your rating was not saved.";
      });
    });
    item.appendChild(button);
  }
  list.appendChild(item);
  list.scrollTop = list.scrollHeight;
}

function connect() {
  socket = new WebSocket(socketUrl);
  socket.onopen = () => {
    socket.send(
      JSON.stringify({
        type: "hello",
        visitor: saved.visitor || "",
        interaction: saved.interaction || "",
        after: timeline.last,
        name: form.name || "",
        form: form,
      }),
    );
  };
  socket.onmessage = (event) => onItem(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (ended || event.code === 1008 || event.code === 1003) return;
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 15000);
  };
}

function stopTyping() {
  clearTimeout(typingStop);
  if (typingSince) send({ type: "typing", active: false });
  typingSince = 0;
}

input.addEventListener("input", () => {
  const now = Date.now();
  if (now - typingSince > 2000) {
    send({ type: "typing", active: true });
    typingSince = now;
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(stopTyping, 3000);
});

compose.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || ended) return;
  const message = { type: "message", id: messageId(), text: text };
  timeline.queue(message);
  stopTyping();
  send(message);
  input.value = "";
});

file.addEventListener("change", () => {
  const chosen = file.files && file.files[0];
  file.value = "";
  if (!chosen || !upload || ended) return;
  fetch(origin + upload, {
    method: "POST",
    headers: {
      "Content-Type": chosen.type || "application/octet-stream",
      "X-Filename": encodeURIComponent(chosen.name),
      "X-Message-Id": messageId(),
    },
    body: chosen,
  }).then(
    (response) => {
      if (!response.ok) {
        return response.text().then((why) => add("note", chosen.name + " was not sent: " + why));
      }
      return null;
    },
    () => add("note", chosen.name + " was not sent: no connection"),
  );
});

function start() {
  if (!prechat.length || saved.interaction) {
    connect();
    return;
  }
  // The pre-chat form: asked once, before the conversation starts.
  const ask = document.createElement("form");
  ask.className = "prechat";
  prechat.forEach((name) => {
    const field = document.createElement("input");
    field.name = name;
    field.required = true;
    field.placeholder = name.replace(/_/g, " ");
    field.setAttribute("aria-label", name);
    ask.appendChild(field);
  });
  const go = document.createElement("button");
  go.type = "submit";
  go.textContent = "Start";
  ask.appendChild(go);
  compose.style.display = "none";
  list.appendChild(ask);
  ask.addEventListener("submit", (event) => {
    event.preventDefault();
    prechat.forEach((name) => {
      form[name] = ask.elements[name].value.trim();
    });
    ask.remove();
    compose.style.display = "";
    connect();
  });
}

window.lianluoChat = {
  // For tests and host pages: drop the connection as a network would; the widget resumes.
  drop: () => {
    if (socket) socket.close();
  },
};
start();
