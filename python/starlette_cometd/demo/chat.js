// The starlette-cometd demo chat: one CometD client per page, chatting on /chat/demo.
//
// "cometd" is resolved by the page's import map: the npm cometd 9 package, from a CDN or from
// the server (starlette-cometd --demo --cometd-js DIR).
//
// The transports come from the query string: ?transport=websocket (or long-polling, or
// callback-polling, or a comma-separated list in order of preference) keeps only those;
// without it the library's default order is used (websocket, long-polling, callback-polling).

import { CometD } from "cometd";

const CHANNEL = "/chat/demo";
const MAX_MESSAGES = 200;

const form = document.getElementById("chat");
const nameBox = document.getElementById("name");
const textBox = document.getElementById("text");
const sendButton = document.getElementById("send");
const statusOut = document.getElementById("status");
const transportOut = document.getElementById("transport");
const messageList = document.getElementById("messages");
const notice = document.getElementById("notice");

const params = new URLSearchParams(window.location.search);
const endpoint = document.querySelector('meta[name="cometd-path"]').content;

// The session is usable once /meta/connect succeeds and the subscription is acknowledged.
const state = {
  handshaken: false,
  connected: false,
  wasConnected: false,
  subscribed: false,
  disconnected: false,
  failed: false,
};

function render() {
  let key;
  let label;
  if (state.failed) {
    [key, label] = ["error", "Not connected"];
  } else if (state.disconnected) {
    [key, label] = ["error", "Disconnected"];
  } else if (state.handshaken && state.connected) {
    [key, label] = state.subscribed ? ["connected", "Connected"] : ["connecting", "Subscribing…"];
  } else if (state.wasConnected) {
    [key, label] = ["connecting", "Reconnecting…"];
  } else {
    [key, label] = ["connecting", "Connecting…"];
  }
  statusOut.dataset.state = key;
  statusOut.textContent = label;
  sendButton.disabled = key !== "connected";
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function showTransport(cometd) {
  const transport = cometd.getTransport();
  transportOut.textContent = transport ? transport.type : "none yet";
}

// Keeps only the transports named in ?transport=..., in that order; returns false (and says
// why) when one of them is unknown to this library in this browser.
function chooseTransports(cometd) {
  const wanted = (params.get("transport") || "")
    .split(",")
    .map((type) => type.trim())
    .filter((type) => type);
  if (wanted.length === 0) {
    return true;
  }
  const available = cometd.getTransportTypes();
  const unknown = wanted.filter((type) => !available.includes(type));
  if (unknown.length > 0) {
    showNotice(`Unknown transport ${unknown.join(", ")}; this browser offers ${available.join(", ")}.`);
    return false;
  }
  const transports = new Map(available.map((type) => [type, cometd.unregisterTransport(type)]));
  for (const type of wanted) {
    cometd.registerTransport(type, transports.get(type));
  }
  return true;
}

function appendMessage(data) {
  if (data === null || typeof data !== "object") {
    return;
  }
  const user = String(data.user ?? "anonymous");
  const item = document.createElement("li");
  if (user === nameBox.value.trim()) {
    item.classList.add("mine");
  }
  const who = document.createElement("span");
  who.className = "user";
  who.textContent = user;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = String(data.text ?? "");
  item.append(who, text);
  messageList.append(item);
  while (messageList.children.length > MAX_MESSAGES) {
    messageList.firstElementChild.remove();
  }
  document.body.classList.add("has-messages");
  item.scrollIntoView({ block: "nearest" });
}

function start() {
  const cometd = new CometD();
  if (!chooseTransports(cometd)) {
    state.failed = true;
    render();
    return;
  }
  cometd.configure({
    url: new URL(endpoint, window.location.href).href,
    logLevel: params.has("debug") ? "debug" : "warn",
  });

  // Called when a transport fails; newType is null when none is left to fall back to.
  cometd.onTransportException = (failure, oldType, newType) => {
    if (newType === null) {
      state.failed = true;
      render();
      const tried = cometd.getTransportTypes().join(", ");
      showNotice(`Could not connect with ${tried}${failure?.reason ? `: ${failure.reason}` : "."}`);
    }
  };

  cometd.addListener("/meta/handshake", (message) => {
    state.handshaken = message.successful;
    state.connected = false;
    state.subscribed = false;
    state.disconnected = false;
    if (message.successful) {
      showTransport(cometd);
      // Subscriptions do not survive a new handshake: make them here, each time.
      cometd.subscribe(CHANNEL, (received) => appendMessage(received.data), (reply) => {
        state.subscribed = reply.successful;
        showNotice(reply.successful ? "" : `Could not subscribe: ${reply.error}`);
        render();
      });
    }
    render();
  });
  cometd.addListener("/meta/connect", (message) => {
    if (cometd.isDisconnected()) {
      return;
    }
    state.connected = message.successful;
    if (message.successful) {
      state.wasConnected = true;
      showTransport(cometd);
    }
    render();
  });
  cometd.addListener("/meta/disconnect", (message) => {
    if (message.successful) {
      state.disconnected = true;
      render();
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const user = nameBox.value.trim();
    const text = textBox.value.trim();
    if (!user || !text) {
      return;
    }
    cometd.publish(CHANNEL, { user, text }, (reply) => {
      showNotice(reply.successful ? "" : `Message not sent: ${reply.error ?? "no reply"}`);
    });
    textBox.value = "";
    textBox.focus();
  });

  window.addEventListener("pagehide", () => cometd.disconnect());
  cometd.handshake();
}

nameBox.value = `guest-${Math.floor(1000 + Math.random() * 9000)}`;
render();
// Start once the page has loaded: callback-polling's <script> requests, the held
// /meta/connect among them, would otherwise keep the page loading.
if (document.readyState === "complete") {
  start();
} else {
  window.addEventListener("load", start, { once: true });
}
