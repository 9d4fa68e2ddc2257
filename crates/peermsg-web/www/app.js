// The page over the web client: log in, send commands, buffers and files with progress
// and cancel, and take what arrives (files as downloads). Each element tests read has an
// id or a data- attribute.
import init, { PeerMsg, errorName, identityOf } from "./pkg/peermsg_web.js";

const $ = (id) => document.getElementById(id);
const scheme = location.protocol === "https:" ? "wss" : "ws";
$("relay").value = `${scheme}://${location.host}/`;
const params = new URLSearchParams(location.search);
if (params.get("user")) $("user").value = params.get("user");
if (params.get("to")) $("to").value = params.get("to");

const sends = new Map(); // id -> its list item
let client = null;

function log(text) {
  const line = document.createElement("div");
  line.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  $("log").prepend(line);
}

function sendItem(id, what, withProgress = true) {
  const li = document.createElement("li");
  li.className = "send";
  li.dataset.id = id;
  li.innerHTML = `<span class="what"></span> <progress max="1" value="0"></progress>
    <span class="sent"></span> <span class="status">sending</span>
    <button class="cancel">Cancel</button>`;
  if (!withProgress) {
    li.querySelector("progress").remove();
    li.querySelector(".cancel").remove();
  }
  li.querySelector(".what").textContent = what;
  const cancel = li.querySelector(".cancel");
  if (cancel) cancel.onclick = () => client.cancelSend(id, "cancel");
  $("sends").prepend(li);
  sends.set(id, li);
}

function ended(id, code) {
  const li = sends.get(id);
  if (!li) return;
  const status = li.querySelector(".status");
  status.textContent = code === 0 ? "delivered" : errorName(code);
  status.className = `status ${code === 0 ? "ok" : "failed"}`;
  li.dataset.code = code;
  const cancel = li.querySelector(".cancel");
  if (cancel) cancel.disabled = true;
}

async function received(kind, from, text, file) {
  const li = document.createElement("li");
  li.className = "received";
  li.dataset.kind = kind;
  li.dataset.from = from;
  li.textContent = `${kind} from ${from}: `;
  if (file) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(file);
    a.download = file.name;
    a.textContent = `${file.name} (${file.size} bytes)`;
    li.append(a);
    li.dataset.size = file.size;
    const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
    li.dataset.sha256 = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  } else {
    li.append(text);
  }
  $("received").prepend(li);
}

const handlers = {
  onState: (state, code) => {
    $("state").textContent = state;
    log(`${state} (${errorName(code)})`);
  },
  onLogin: (code) => log(`login: ${errorName(code)}`),
  sendCmdRlst: (id, code) => ended(id, code),
  sendBufferRlst: (id, code) => ended(id, code),
  sendFileRlst: (id, name, code) => ended(id, code),
  sendProgress: (id, sent, total) => {
    const li = sends.get(id);
    if (!li) return;
    const bar = li.querySelector("progress");
    if (!bar) return;
    bar.value = total ? sent / total : 1;
    li.querySelector(".sent").textContent = `${sent} of ${total}`;
    li.dataset.sent = sent;
  },
  sendWaiting: (id, code) => {
    const li = sends.get(id);
    if (li) li.querySelector(".status").textContent = `waiting (${errorName(code)})`;
  },
  sendResumed: (id, offset) => {
    const li = sends.get(id);
    if (li) li.dataset.resumedAt = offset;
    log(`send ${id} resumed at byte ${offset}`);
  },
  cancelSendRlst: (id, code) => log(`cancel ${id}: ${errorName(code)}`),
  notifyCmdData: (from, data) => received("command", from, new TextDecoder().decode(data)),
  notifyBufferData: (from, data) =>
    received("buffer", from, `${data.length} bytes: ${new TextDecoder().decode(data.slice(0, 64))}`),
  notifyFileOffer: (id, from, name, size) => log(`file ${name} (${size} bytes) from ${from}`),
  receiveProgress: (id, got, total) => {
    $("state").dataset.receiving = `${got}/${total}`;
  },
  notifyFileData: (from, file) => received("file", from, "", file),
  notifyCancelSend: (id, from, code) => log(`from ${from}: ended, ${errorName(code)}`),
};

// With ?e2e, messages are sealed end to end: this user's secret and the peers' keys it
// learned are kept in the browser's storage; a changed key is refused and shown.
const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (text) => new Uint8Array(text.match(/../g).map((h) => parseInt(h, 16)));
function sealing(user) {
  const mine = `peermsg.${user}.secret`;
  if (!localStorage.getItem(mine)) {
    localStorage.setItem(mine, hex(crypto.getRandomValues(new Uint8Array(32))));
  }
  const secret = unhex(localStorage.getItem(mine));
  const peers = JSON.parse(localStorage.getItem(`peermsg.${user}.peers`) || "{}");
  const pinned = Object.fromEntries(Object.entries(peers).map(([u, k]) => [u, unhex(k)]));
  $("state").dataset.e2e = hex(identityOf(secret)).slice(0, 32);
  log(`end to end: your key ${$("state").dataset.e2e}`);
  return { secret, trustFirstUse: true, pinned };
}
handlers.onPeerKey = (user, key, status) => {
  log(`${user}'s key ${key ? hex(key).slice(0, 32) : "(none)"}: ${status}`);
  if (status === "learned") {
    const store = `peermsg.${$("user").value}.peers`;
    const peers = JSON.parse(localStorage.getItem(store) || "{}");
    peers[user] = hex(key);
    localStorage.setItem(store, JSON.stringify(peers));
  }
  $("state").dataset[`key_${user}`] = status;
};
handlers.onRefused = (from, kind, code) => log(`refused a ${kind} from ${from}: ${errorName(code)}`);

await init();
$("login").onclick = () => {
  if (client) client.close();
  handlers.sealing = params.get("e2e") !== null ? sealing($("user").value) : undefined;
  client = new PeerMsg($("relay").value, $("user").value, $("token").value, handlers);
  window.peermsgPage.client = client;
};
$("send-cmd").onclick = () => {
  const id = client.sendCmd($("to").value, $("cmd").value, null);
  sendItem(id, `command "${$("cmd").value}" to ${$("to").value}`, false);
};
$("send-buffer").onclick = () => {
  const data = new TextEncoder().encode($("buffer").value);
  const id = client.sendBuffer($("to").value, data, null);
  sendItem(id, `buffer of ${data.length} bytes to ${$("to").value}`);
};
$("send-file").onclick = () => {
  const file = $("file").files[0];
  if (!file) return log("choose a file first");
  const id = client.sendFile($("to").value, file, null, null);
  sendItem(id, `file ${file.name} (${file.size} bytes) to ${$("to").value}`);
};
window.peermsgPage = { ready: true, client: null };
if (params.get("login") !== null) $("login").click();
