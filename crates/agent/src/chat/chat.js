// The chat page of the Latchkey agent. It posts each message to /invocations (the
// browser's session cookie is turned into the signed-in user by the gateway in front of
// the agent), reads the Server-Sent Events as they stream, and renders them. Text from the
// stream is only ever set with textContent, never parsed as HTML.
"use strict";

const log = document.getElementById("log");
const form = document.getElementById("ask");
const input = document.getElementById("message");
const send = document.getElementById("send");

function conversationId(fresh) {
  let id = sessionStorage.getItem("latchkey-conversation");
  if (!id || fresh) {
    id = crypto.randomUUID();
    sessionStorage.setItem("latchkey-conversation", id);
  }
  return id;
}

function item(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  if (text !== undefined) li.textContent = text;
  log.appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function render(name, data, turn) {
  switch (name) {
    case "text_delta":
      if (!turn.answer) turn.answer = item("assistant", "");
      turn.answer.textContent += data.text;
      turn.answer.scrollIntoView({ block: "end" });
      break;
    case "tool_call": {
      turn.answer = null;
      const li = item("tool");
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "Tool call: " + data.name;
      const pre = document.createElement("pre");
      pre.textContent = JSON.stringify(data.arguments);
      details.append(summary, pre);
      li.appendChild(details);
      turn.tools[data.id] = details;
      break;
    }
    case "tool_result": {
      const details = turn.tools[data.id] || item("tool").appendChild(document.createElement("details"));
      const summary = details.querySelector("summary") || details.appendChild(document.createElement("summary"));
      summary.textContent = (data.ok ? "Tool result: " : "Tool failed: ") + data.name;
      const pre = document.createElement("pre");
      pre.textContent = data.content;
      details.appendChild(pre);
      break;
    }
    case "authorization_required": {
      turn.answer = null;
      const li = item("consent");
      const p = document.createElement("p");
      p.textContent = data.message;
      li.appendChild(p);
      const url = safeUrl(data.authorizationUrl);
      if (url) {
        const a = document.createElement("a");
        a.className = "authorize";
        a.href = url;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        a.textContent = "Authorize " + data.provider;
        li.appendChild(a);
        const note = document.createElement("p");
        note.className = "note";
        note.textContent = "Opens in a new tab. When the binding page says the authorization is complete, the answer continues here.";
        li.appendChild(note);
        a.focus();
      }
      break;
    }
    case "error":
      turn.answer = null;
      item("err", data.message);
      break;
    case "done":
      if (data.stopReason === "authorization_required") {
        item("note", "Still waiting for your consent. Once you have authorized, send any message (for example \"continue\") to carry on.");
      }
      break;
  }
}

async function ask(message) {
  item("user", message);
  send.disabled = true;
  const turn = { answer: null, tools: {} };
  try {
    const response = await fetch("/invocations", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({ sessionId: conversationId(false), message }),
      credentials: "same-origin",
    });
    if (!response.ok) {
      let text = "The agent answered " + response.status + ".";
      try {
        const body = await response.json();
        if (body.message) text = body.message;
      } catch {}
      item("err", text);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length) {
          try {
            render(name, JSON.parse(data.join("\n")), turn);
          } catch {}
        }
      }
    }
  } catch (e) {
    item("err", "The connection to the agent broke off. Send your message again.");
  } finally {
    send.disabled = false;
    input.focus();
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const message = input.value.trim();
  if (!message || send.disabled) return;
  input.value = "";
  ask(message);
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

document.getElementById("new").addEventListener("click", () => {
  conversationId(true);
  log.replaceChildren();
  input.focus();
});

input.focus();
