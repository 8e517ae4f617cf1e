// The admin UI: every view and action is one server API method, posted to /admin/api/<method>
// with the session's CSRF token. Text from clients (channel names, user ids, data) only ever goes
// into the page as text nodes, never as HTML.

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const view = document.getElementById("view");
const status = document.getElementById("status");
const PAGE = 20; // presence members and history publications per page
const TAIL_LIMIT = 100; // live-tail rows kept; the oldest go first
const REFRESH_MS = 3000;
const TAIL_MS = 1000;
let timers = [];

export async function api(method, body = {}) {
  const response = await fetch(`/admin/api/${method}`, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body),
  });
  const found = await response.json().catch(() => ({}));
  if (response.status === 401) window.location.assign("/admin"); // the session ended: sign in again
  if (!response.ok) {
    const error = found.error || {};
    throw new Error(`${error.message || "HTTP " + response.status} (${error.code ?? response.status})`);
  }
  return found;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function table(heads, rows, empty = "nothing here") {
  const head = el("tr", {}, ...heads.map((h) => el("th", {}, h)));
  const body = rows.length
    ? rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))
    : [el("tr", {}, el("td", {colspan: String(heads.length), class: "empty"}, empty))];
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

const channelLink = (name) => el("a", {href: `#/channel/${encodeURIComponent(name)}`, class: "channel"}, name);
const userLink = (user) => (user ? el("a", {href: `#/user/${encodeURIComponent(user)}`, class: "user"}, user) : "(anonymous)");
const json = (value, max = 300) => {
  const text = JSON.stringify(value) ?? "";
  return text.length > max ? text.slice(0, max) + "…" : text;
};

function say(text, bad = false) {
  status.textContent = text;
  status.className = bad ? "bad" : "good";
}

// A button that runs one action, says how it went, and then redraws what it changed.
function action(label, work, after) {
  return el("button", {type: "button", onclick: async () => {
    try {
      say(await work());
      if (after) await after();
    } catch (err) {
      say(`${label} failed: ${err.message}`, true);
    }
  }}, label);
}

function missingNote(reply) {
  return reply.missing && reply.missing.length
    ? el("p", {class: "warn"}, `no answer in time from: ${reply.missing.join(", ")} (this view is partial)`)
    : "";
}

function every(ms, work) {
  timers.push(setInterval(work, ms));
}

function uptime(seconds) {
  if (seconds == null) return "?";
  const s = Math.floor(seconds);
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ${s % 60}s`;
}

async function instancesView() {
  const box = el("section", {id: "instances"});
  view.replaceChildren(el("h2", {}, "Instances"), box);
  const draw = async () => {
    const {instances} = await api("info");
    box.replaceChildren(table(
      ["id", "version", "uptime", "connections", "channels", "Redis", "draining"],
      instances.map((i) => [i.id, i.version, uptime(i.uptime), i.connections, i.channels ?? "?", i.redis ?? "?",
        i.draining ? "draining" : "no"]),
    ));
  };
  await draw();
  every(REFRESH_MS, draw);
}

async function channelsView() {
  let sort = "subscribers";
  const box = el("section", {id: "channels"});
  const pick = (to) => el("button", {type: "button", onclick: () => { sort = to; draw(); }}, `by ${to}`);
  const note = "Subscribers on every instance; publications per second over the last 10-20 s.";
  view.replaceChildren(el("h2", {}, "Busiest channels"), el("p", {}, pick("subscribers"), " ", pick("rate"), " ", note), box);
  const draw = async () => {
    const reply = await api("top_channels", {sort, limit: 20});
    box.replaceChildren(missingNote(reply), table(
      ["channel", "subscribers", "publications/s"],
      reply.channels.map((c) => [channelLink(c.channel), c.subscribers, c.rate.toFixed(2)]),
      "no channel has subscribers",
    ));
  };
  await draw();
  every(REFRESH_MS, draw);
}

async function presenceSection(channel, box) {
  let cursor = null;
  const draw = async () => {
    try {
      const stats = await api("presence_stats", {channel});
      const page = await api("presence", {channel, limit: PAGE, ...(cursor ? {cursor} : {})});
      const rows = page.clients.map((m) => [m.client, userLink(m.user), json(m.info, 80), el("span", {},
        action("Unsubscribe", async () => {
          await api("unsubscribe", {user: m.user, channel});
          return `unsubscribed ${m.user} from ${channel}`;
        }, draw), " ",
        action("Disconnect", async () => {
          await api("disconnect", {user: m.user, reason: "disconnected by an admin"});
          return `disconnected ${m.user}`;
        }, draw))]);
      const next = page.cursor
        ? el("button", {type: "button", id: "presence-next", onclick: () => { cursor = page.cursor; draw(); }}, "Next page")
        : "";
      const first = cursor ? el("button", {type: "button", onclick: () => { cursor = null; draw(); }}, "First page") : "";
      box.replaceChildren(
        el("h3", {}, `Presence: ${stats.clients} connection(s), ${stats.users} user(s)`),
        table(["client", "user", "info", ""], rows, "nobody is here"), el("p", {}, first, " ", next));
    } catch (err) {
      box.replaceChildren(el("h3", {}, "Presence"), el("p", {class: "warn"}, err.message));
    }
  };
  await draw();
  every(REFRESH_MS, draw);
}

async function historySection(channel, box, tailBox) {
  let since = null; // null: the newest page
  let limit = PAGE;
  let tailFrom = null;
  const pubRows = (pubs) => pubs.map((p) => [p.offset ?? "", json(p.data)]);
  const draw = async () => {
    try {
      const reply = await api("history", {channel, limit, ...(since != null ? {since} : {})});
      if (tailFrom === null) tailFrom = reply.offset;
      const first = reply.publications.length ? reply.publications[0].offset : null;
      const older = first > 1
        ? el("button", {type: "button", id: "history-older", onclick: () => {
          limit = Math.min(PAGE, first - 1); // the page just before this one, never overlapping it
          since = first - 1 - limit;
          draw();
        }}, "Older")
        : "";
      const newest = since != null ? el("button", {type: "button", onclick: () => { since = null; limit = PAGE; draw(); }}, "Newest") : "";
      box.replaceChildren(el("h3", {}, `History (at offset ${reply.offset})`),
        table(["offset", "data"], pubRows(reply.publications), "no publications kept"), el("p", {}, older, " ", newest));
    } catch (err) {
      box.replaceChildren(el("h3", {}, "History"), el("p", {class: "warn"}, err.message));
      tailBox.replaceChildren();
      return false;
    }
    return true;
  };
  if (!(await draw())) return;
  // Live tail: the history after the last offset seen, polled; at most TAIL_LIMIT rows are kept.
  const rows = el("tbody", {id: "tail-rows"});
  let running = null;
  const poll = async () => {
    try {
      const reply = await api("history", {channel, since: tailFrom, limit: TAIL_LIMIT});
      for (const p of reply.publications) rows.append(el("tr", {}, el("td", {}, p.offset), el("td", {}, json(p.data))));
      while (rows.children.length > TAIL_LIMIT) rows.firstElementChild.remove();
      tailFrom = reply.publications.length ? reply.publications.at(-1).offset : Math.min(tailFrom, reply.offset);
    } catch (err) {
      say(`Live tail: ${err.message}`, true);
    }
  };
  const toggle = el("input", {type: "checkbox", id: "tail-on", onchange: () => {
    if (toggle.checked) running = setInterval(poll, TAIL_MS), timers.push(running);
    else clearInterval(running);
  }});
  tailBox.replaceChildren(el("h3", {}, el("label", {}, toggle, " Live tail"), ` (the last ${TAIL_LIMIT})`),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "offset"), el("th", {}, "data"))), rows));
}

async function channelView(channel) {
  const data = el("textarea", {name: "data", rows: "2", "aria-label": "data (JSON)"}, '{"text": "hello from the admin"}');
  const publish = el("form", {id: "publish", onsubmit: async (e) => {
    e.preventDefault();
    let value;
    try { value = JSON.parse(data.value); } catch { value = data.value; } // not JSON: sent as a string
    try {
      const done = await api("publish", {channel, data: value});
      say(`published to ${channel} at offset ${done.offset}`);
    } catch (err) {
      say(`Publish failed: ${err.message}`, true);
    }
  }}, data, el("button", {type: "submit"}, "Publish"));
  const presence = el("section", {id: "presence"});
  const history = el("section", {id: "history"});
  const tail = el("section", {id: "tail"});
  view.replaceChildren(el("h2", {}, "Channel ", el("code", {id: "channel-name"}, channel)), publish, presence, history, tail);
  await Promise.all([presenceSection(channel, presence), historySection(channel, history, tail)]);
}

async function userView(user) {
  const box = el("section", {id: "connections"});
  const reason = el("input", {name: "reason", value: "disconnected by an admin", maxlength: "120", "aria-label": "reason"});
  const channel = el("input", {name: "channel", placeholder: "channel", "aria-label": "channel"});
  const draw = async () => {
    const reply = await api("user_connections", {user});
    box.replaceChildren(missingNote(reply), table(
      ["client", "instance", "endpoint", "channels"],
      reply.connections.map((c) => [c.client, c.instance, c.endpoint, el("span", {},
        ...c.channels.flatMap((name, i) => [i ? ", " : "", channelLink(name)]),
        c.channel_count > c.channels.length ? ` (+${c.channel_count - c.channels.length} more)` : "")]),
      "no connections anywhere in the cluster",
    ));
  };
  const disconnect = el("form", {id: "disconnect", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("disconnect", {user, reason: reason.value});
      say(`disconnected ${user}`);
    } catch (err) { say(`Disconnect failed: ${err.message}`, true); }
    setTimeout(draw, 300);
  }}, reason, el("button", {type: "submit"}, "Disconnect user"));
  const unsubscribe = el("form", {id: "unsubscribe", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("unsubscribe", {user, channel: channel.value});
      say(`unsubscribed ${user} from ${channel.value}`);
    } catch (err) { say(`Unsubscribe failed: ${err.message}`, true); }
    setTimeout(draw, 300);
  }}, channel, el("button", {type: "submit"}, "Unsubscribe from channel"));
  view.replaceChildren(el("h2", {}, "User ", el("code", {id: "user-name"}, user)), disconnect, unsubscribe, box);
  await draw();
  every(REFRESH_MS, draw);
}

async function route() {
  timers.forEach(clearInterval);
  timers = [];
  const [, kind, ...rest] = (window.location.hash || "#/instances").split("/");
  const arg = decodeURIComponent(rest.join("/"));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("here", a.id === `nav-${kind}`));
  try {
    if (kind === "channels") await channelsView();
    else if (kind === "channel" && arg) await channelView(arg);
    else if (kind === "user" && arg) await userView(arg);
    else await instancesView();
  } catch (err) {
    say(err.message, true);
  }
}

for (const [id, field, kind] of [["goto-channel", "channel", "channel"], ["goto-user", "user", "user"]]) {
  document.getElementById(id).addEventListener("submit", (e) => {
    e.preventDefault();
    const value = e.target.elements[field].value.trim();
    if (value) window.location.hash = `#/${kind}/${encodeURIComponent(value)}`;
  });
}
window.addEventListener("hashchange", route);
route();
