// A small, safe Markdown renderer: text in, DOM nodes out. Every piece of model output becomes a text
// node; no HTML from the input is ever interpreted. Supports headings, paragraphs, bold, italic,
// inline code, fenced code blocks (also unterminated, while streaming), bullet and numbered lists.

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

function isClose(line, open) {
  const t = line.trim();
  return t.length >= open.length && t === open[0].repeat(t.length);
}

/** Render markdown text into a DocumentFragment. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const close = fence[1];
      const body = [];
      i += 1;
      while (i < lines.length && !isClose(lines[i], close)) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or past the end while still streaming)
      const code = document.createElement("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      const pre = document.createElement("pre");
      pre.tabIndex = 0; // scrollable region reachable by keyboard
      pre.append(code);
      frag.append(pre);
      continue;
    }
    if (line.trim() === "") { i += 1; continue; }
    const heading = HEADING.exec(line);
    if (heading) {
      const h = document.createElement(`h${Math.min(heading[1].length + 2, 6)}`);
      inline(h, heading[2]);
      frag.append(h);
      i += 1;
      continue;
    }
    if (RULE.test(line)) { frag.append(document.createElement("hr")); i += 1; continue; }
    if (BULLET.test(line) || ORDERED.test(line)) {
      const ordered = !BULLET.test(line);
      const re = ordered ? ORDERED : BULLET;
      const list = document.createElement(ordered ? "ol" : "ul");
      if (ordered) {
        const start = Number(ORDERED.exec(line)[1]);
        if (start !== 1) list.start = start;
      }
      while (i < lines.length && re.test(lines[i])) {
        const m = re.exec(lines[i]);
        const li = document.createElement("li");
        let content = ordered ? m[2] : m[1];
        i += 1;
        // indented continuation lines belong to the item
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !re.test(lines[i])) {
          content += ` ${lines[i].trim()}`;
          i += 1;
        }
        inline(li, content);
        list.append(li);
      }
      frag.append(list);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() !== "" && !FENCE.test(lines[i]) && !HEADING.test(lines[i]) &&
           !BULLET.test(lines[i]) && !ORDERED.test(lines[i])) {
      para.push(lines[i]);
      i += 1;
    }
    const p = document.createElement("p");
    para.forEach((l, k) => {
      if (k > 0) p.append(document.createElement("br"));
      inline(p, l);
    });
    frag.append(p);
  }
  return frag;
}

const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([\s\S]*?[^\s*])\*|(?<![\w])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\w])/;

/** Append inline-formatted text to a parent node. */
export function inline(parent, text) {
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m) { parent.append(document.createTextNode(rest)); break; }
    if (m.index > 0) parent.append(document.createTextNode(rest.slice(0, m.index)));
    let node;
    if (m[1] !== undefined) {
      node = document.createElement("code");
      node.textContent = m[2].replace(/^ (.*) $/, "$1");
    } else if (m[3] !== undefined || m[4] !== undefined) {
      node = document.createElement("strong");
      inline(node, m[3] ?? m[4]);
    } else {
      node = document.createElement("em");
      inline(node, m[5] ?? m[6]);
    }
    parent.append(node);
    rest = rest.slice(m.index + m[0].length);
  }
  return parent;
}
