// Incremental Server-Sent Events parser for fetch() bodies, and the chat-completion chunk reader on top.
// Bytes -> text with TextDecoder in stream mode (a UTF-8 character split across reads is kept whole),
// text -> lines on CR, LF or CRLF (also a CR at the end of one read and its LF at the start of the next),
// lines -> events on a blank line, across any number of reads. Comments (": keep-alive") are ignored.

export class SSEParser {
  constructor() {
    this.decoder = new TextDecoder("utf-8");
    this.buf = "";
    this.skipLF = false;   // the last read ended in CR: an LF starting the next read belongs to it
    this.started = false;  // a BOM is stripped from the very start only
    this.data = [];
    this.event = "";
  }

  /** Feed one read (Uint8Array); returns the events completed by it: [{event, data}]. */
  push(bytes) {
    return this._text(this.decoder.decode(bytes, { stream: true }));
  }

  /** The body ended: flush the decoder. An event without its blank line is discarded, as the spec says. */
  end() {
    const out = this._text(this.decoder.decode());
    this.data = [];
    this.event = "";
    return out;
  }

  _text(text) {
    const events = [];
    let s = this.buf + text;
    let pos = 0;
    if (!this.started && s.length > 0) {
      this.started = true;
      if (s.charCodeAt(0) === 0xfeff) pos = 1;
    }
    if (this.skipLF && s.length > pos) {
      if (s[pos] === "\n") pos += 1;
      this.skipLF = false;
    }
    const eol = /[\r\n]/g;
    for (;;) {
      eol.lastIndex = pos;
      const m = eol.exec(s);
      if (m === null) break;
      const i = m.index;
      const line = s.slice(pos, i);
      if (s[i] === "\r") {
        if (i + 1 < s.length) {
          pos = s[i + 1] === "\n" ? i + 2 : i + 1;
        } else {
          pos = i + 1;
          this.skipLF = true;
        }
      } else {
        pos = i + 1;
      }
      this._line(line, events);
    }
    this.buf = s.slice(pos);
    return events;
  }

  _line(line, events) {
    if (line === "") {
      if (this.data.length > 0 || this.event) {
        events.push({ event: this.event || "message", data: this.data.join("\n") });
      }
      this.data = [];
      this.event = "";
      return;
    }
    if (line[0] === ":") return; // comment, e.g. the gateway's heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    // id and retry have no meaning on chat streams; other fields are ignored per spec
  }
}

/** Read a fetch Response body as SSE events: an async generator of {event, data}. */
export async function* readEvents(body) {
  const reader = body.getReader();
  const parser = new SSEParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const ev of parser.push(value)) yield ev;
    }
    for (const ev of parser.end()) yield ev;
  } finally {
    reader.releaseLock();
  }
}

/**
 * Interpret one event of a chat completion stream.
 * Returns {type: "done"} for [DONE], {type: "error", error} for an error frame,
 * or {type: "chunk", content, finish, usage} (usage is set on the last chunk, whose choices are []).
 */
export function interpretChunk(data) {
  if (data === "[DONE]") return { type: "done" };
  const obj = JSON.parse(data);
  if (obj && obj.error) {
    const error = typeof obj.error === "object" ? obj.error : { message: String(obj.error) };
    return { type: "error", error };
  }
  let content = "";
  let finish = null;
  for (const choice of (obj && Array.isArray(obj.choices)) ? obj.choices : []) {
    if ((choice.index ?? 0) !== 0) continue;
    const piece = choice.delta && choice.delta.content;
    if (typeof piece === "string") content += piece;
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  return { type: "chunk", content, finish, usage: (obj && obj.usage) || null };
}

/** The chat stream as interpreted items; a body that ends without [DONE] yields {type: "truncated"}. */
export async function* chatStream(body) {
  let sawDone = false;
  for await (const ev of readEvents(body)) {
    const item = interpretChunk(ev.data);
    if (item.type === "done") { sawDone = true; break; }
    yield item;
    if (item.type === "error") return;
  }
  if (!sawDone) yield { type: "truncated" };
}
