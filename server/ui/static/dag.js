// The flow drawn as a layered SVG graph: a step's column is its depth (longest path
// from a root), computed here from `depends_on`. Built once; state changes only touch
// the affected node's attributes, so a 1,000-step job stays cheap to update.

const SVG = "http://www.w3.org/2000/svg";
const W = 150, H = 34, COL_GAP = 44, ROW_GAP = 12, PAD = 10;

/** Depth of each node and the layers; nodes: [{name, deps}] (unknown deps ignored). */
export function layout(nodes) {
  const byName = new Map(nodes.map((n, i) => [n.name, { ...n, index: i, depth: 0, children: [] }]));
  const indegree = new Map();
  for (const node of byName.values()) {
    node.deps = (node.deps || []).filter((d) => byName.has(d) && d !== node.name);
    indegree.set(node.name, node.deps.length);
    for (const dep of node.deps) byName.get(dep).children.push(node.name);
  }
  const queue = [...byName.values()].filter((n) => n.deps.length === 0).map((n) => n.name);
  const seen = new Set();
  for (let head = 0; head < queue.length; head++) {
    const node = byName.get(queue[head]);
    seen.add(node.name);
    for (const childName of node.children) {
      const child = byName.get(childName);
      child.depth = Math.max(child.depth, node.depth + 1);
      indegree.set(childName, indegree.get(childName) - 1);
      if (indegree.get(childName) === 0) queue.push(childName);
    }
  }
  let maxDepth = 0;
  for (const n of byName.values()) if (seen.has(n.name)) maxDepth = Math.max(maxDepth, n.depth);
  for (const n of byName.values()) if (!seen.has(n.name)) n.depth = maxDepth + 1; // a cycle: park it
  const layers = [];
  for (const n of byName.values()) (layers[n.depth] ||= []).push(n);
  // One barycenter sweep: order a layer by the mean row of its parents.
  const row = new Map();
  layers.forEach((layer, depth) => {
    if (depth > 0) {
      for (const n of layer) {
        const rows = n.deps.map((d) => row.get(d)).filter((r) => r !== undefined);
        n.bary = rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : n.index;
      }
      layer.sort((a, b) => a.bary - b.bary || a.index - b.index);
    }
    layer.forEach((n, i) => row.set(n.name, i));
  });
  for (const n of byName.values()) n.row = row.get(n.name);
  return { nodes: byName, layers: layers.filter(Boolean) };
}

function short(name, max = 20) {
  return name.length > max ? `${name.slice(0, max - 1)}…` : name;
}

/** Draw into `container`; returns {update(states), select(name)}. */
export function drawDag(container, nodes, { onSelect, label = "Flow graph" } = {}) {
  const { nodes: placed, layers } = layout(nodes);
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const width = PAD * 2 + layers.length * W + (layers.length - 1) * COL_GAP;
  const height = PAD * 2 + tallest * H + (tallest - 1) * ROW_GAP;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "group");
  svg.setAttribute("aria-label", label);
  const pos = (n) => {
    const layerSize = layers[n.depth].length;
    const offset = ((tallest - layerSize) * (H + ROW_GAP)) / 2; // centre short layers
    return { x: PAD + n.depth * (W + COL_GAP), y: PAD + offset + n.row * (H + ROW_GAP) };
  };
  // Every edge in one path element: thousands of edges cost one DOM node.
  let d = "";
  for (const n of placed.values()) {
    const to = pos(n);
    for (const dep of n.deps) {
      const from = pos(placed.get(dep));
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
      const mx = (x1 + x2) / 2;
      d += `M${x1},${y1}C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    }
  }
  const edges = document.createElementNS(SVG, "path");
  edges.setAttribute("d", d);
  edges.setAttribute("class", "edges");
  svg.append(edges);
  const groups = new Map();
  const frag = document.createDocumentFragment();
  for (const n of placed.values()) {
    const { x, y } = pos(n);
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "node");
    g.setAttribute("transform", `translate(${x},${y})`);
    g.setAttribute("tabindex", "0");
    g.setAttribute("role", "button");
    g.dataset.step = n.name;
    g.dataset.status = n.status || "pending";
    g.setAttribute("aria-label", `step ${n.name}: ${n.status || "pending"}`);
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("width", String(W));
    rect.setAttribute("height", String(H));
    rect.setAttribute("rx", "6");
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", "14");
    dot.setAttribute("cy", String(H / 2));
    dot.setAttribute("r", "5");
    dot.setAttribute("class", "dot");
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", "26");
    text.setAttribute("y", String(H / 2 + 4));
    text.textContent = short(n.name);
    const title = document.createElementNS(SVG, "title");
    title.textContent = n.kind ? `${n.name} (${n.kind})` : n.name;
    g.append(title, rect, dot, text);
    frag.append(g);
    groups.set(n.name, g);
  }
  svg.append(frag);
  const pick = (event) => {
    const g = event.target.closest && event.target.closest("g.node");
    if (g && onSelect) onSelect(g.dataset.step);
  };
  svg.addEventListener("click", pick);
  svg.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); pick(event); }
  });
  container.replaceChildren(svg);
  let selected = null;
  return {
    update(states) {
      for (const [name, status] of states) {
        const g = groups.get(name);
        if (!g || g.dataset.status === status) continue;
        g.dataset.status = status;
        g.setAttribute("aria-label", `step ${name}: ${status}`);
      }
    },
    select(name) {
      if (selected) selected.classList.remove("selected");
      selected = groups.get(name) || null;
      if (selected) {
        selected.classList.add("selected");
        const box = container.getBoundingClientRect();
        const r = selected.getBoundingClientRect();
        if (r.left < box.left || r.right > box.right || r.top < box.top || r.bottom > box.bottom) {
          selected.scrollIntoView({ block: "nearest", inline: "nearest" });
        }
      }
    },
    has(name) { return groups.has(name); },
  };
}
