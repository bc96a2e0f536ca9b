// Lianluo web and H5 chat: embed with one tag,
//   <script src="https://<gateway>/v1/web/<tenant id>/<channel id>/widget.js"></script>
// It keeps the visitor's id and the open interaction in localStorage, so a reload or a lost
// connection resumes the same conversation: the gateway replays every item after the last
// sequence number this page showed (all of them after a reload), and an item already shown (by
// its sequence number) is never shown twice.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script.src.replace(/widget\.js(\?.*)?$/, "");
  var socketUrl = base.replace(/^http/, "ws") + "ws";
  var key = "lianluo:" + base;
  var saved = JSON.parse(localStorage.getItem(key) || "{}");
  var shown = {};
  var last = 0;
  var socket = null;
  var ended = false;
  var retry = 500;
  var pending = [];

  function save() {
    localStorage.setItem(key, JSON.stringify(saved));
  }

  var css =
    "#lianluo-chat{position:fixed;right:12px;bottom:12px;width:min(360px,calc(100vw - 24px));" +
    "height:min(520px,calc(100vh - 24px));display:flex;flex-direction:column;font:14px sans-serif;" +
    "background:#fff;border:1px solid #ccc;border-radius:8px;box-shadow:0 2px 12px #0003;z-index:2147483647}" +
    "#lianluo-chat header{padding:10px;background:#0b5cad;color:#fff;border-radius:8px 8px 0 0}" +
    "#lianluo-chat ol{flex:1;overflow-y:auto;margin:0;padding:8px;list-style:none}" +
    "#lianluo-chat li{margin:4px 0;padding:6px 8px;border-radius:6px;max-width:85%;white-space:pre-wrap}" +
    "#lianluo-chat li.me{margin-left:auto;background:#dbeafe}#lianluo-chat li.them{background:#f1f5f9}" +
    "#lianluo-chat li.note{color:#555;font-style:italic;background:none}" +
    "#lianluo-chat form{display:flex;border-top:1px solid #ddd}" +
    "#lianluo-chat input{flex:1;border:0;padding:10px;font-size:16px}" +
    "#lianluo-chat button{border:0;background:#0b5cad;color:#fff;padding:0 14px}";
  var style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  var box = document.createElement("section");
  box.id = "lianluo-chat";
  box.setAttribute("aria-label", "chat");
  box.innerHTML =
    "<header></header><ol aria-live='polite'></ol>" +
    "<form><input name='text' autocomplete='off' placeholder='Type a message' " +
    "aria-label='message'><button type='submit'>Send</button></form>";
  box.querySelector("header").textContent = "__LIANLUO_TITLE__";
  document.body.appendChild(box);
  var list = box.querySelector("ol");
  var form = box.querySelector("form");
  var input = form.querySelector("input");

  function add(cls, text, seq) {
    var item = document.createElement("li");
    item.className = cls;
    item.textContent = text;
    if (seq) item.dataset.seq = String(seq);
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;
  }

  function onItem(item) {
    if (item.type === "welcome") {
      saved.visitor = item.visitor;
      saved.interaction = item.interaction;
      save();
      retry = 500;
      pending.forEach(function (m) { socket.send(JSON.stringify(m)); });
      return;
    }
    if (!item.seq || shown[item.seq]) return;
    shown[item.seq] = true;
    if (item.type === "message") {
      add(item.from === "me" ? "me" : "them", item.text, item.seq);
      pending = pending.filter(function (m) { return m.id !== item.client_id; });
      if (item.from !== "me") socket.send(JSON.stringify({ type: "read", seq: item.seq }));
    } else if (item.type === "prompt") {
      var choices = (item.choices || []).map(function (c) { return "[" + c.digit + "] " + c.label; });
      add("them", [item.text].concat(choices).join("\n"), item.seq);
    } else if (item.type === "joined") {
      add("note", (item.name || "An agent") + " joined", item.seq);
    } else if (item.type === "ended") {
      add("note", "The conversation has ended.", item.seq);
      ended = true;
      delete saved.interaction;
      save();
    }
    last = Math.max(last, item.seq);
  }

  function connect() {
    socket = new WebSocket(socketUrl);
    socket.onopen = function () {
      socket.send(JSON.stringify({
        type: "hello",
        visitor: saved.visitor || "",
        interaction: saved.interaction || "",
        after: last,
      }));
    };
    socket.onmessage = function (event) { onItem(JSON.parse(event.data)); };
    socket.onclose = function (event) {
      if (ended || event.code === 1008 || event.code === 1003) return;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text || ended) return;
    var message = { type: "message", id: "w" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8), text: text };
    pending.push(message);
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    input.value = "";
  });

  window.lianluoChat = {
    // For tests and host pages: drop the connection as a network would; the widget resumes.
    drop: function () { if (socket) socket.close(); },
  };
  connect();
})();
