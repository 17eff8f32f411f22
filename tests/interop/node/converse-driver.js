// Drive Converse.js in Debian's headless Chromium (playwright-core) for tests/interop/test_converse.py.
//
// Usage: node converse-driver.js '{"chromium": "/usr/bin/chromium"}'
//
// Protocol (JSON lines, like xmppjs-driver.js): commands on stdin {"id": 1, "cmd": "open", "url": ...};
// events on stdout {"event": "result", "id": 1, "ok": true, ...}, {"event": "console", ...},
// {"event": "pageerror", ...}. The commands are plain browser actions (open a URL, fill, click, type, read
// text, wait for text); the test decides what to do in the Converse UI and checks the outcome.
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2] ?? "{}");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// Flags from /work/shared/README.md (the test passes the same list in options.args when it starts the shared
// browser itself): root needs --no-sandbox; Chromium blocks WebSockets to loopback from a page unless
// LocalNetworkAccessChecks is off; the rest keeps a headless run quiet and offline.
const FLAGS = options.args ?? [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-features=LocalNetworkAccessChecks",
  "--no-first-run",
];

let browser = null;
let page = null;

async function ensurePage() {
  if (!browser) {
    // options.cdp: a Chromium the test started once per session (saves a browser start per scenario);
    // each driver still gets its own context (cookies, storage) and closes only that.
    browser = options.cdp
      ? await chromium.connectOverCDP(options.cdp, { timeout: 30000 })
      : await chromium.launch({
          executablePath: options.chromium ?? "/usr/bin/chromium",
          args: FLAGS,
          headless: true,
          timeout: 30000,
        });
  }
  if (!page) {
    const context = await browser.newContext();
    // Loopback only: anything else (fonts, avatars, link previews) is refused before any DNS lookup.
    await context.route("**/*", (route) => {
      const host = new URL(route.request().url()).hostname;
      if (["127.0.0.1", "localhost", "[::1]"].includes(host) || host.endsWith(".localhost")) return route.continue();
      out({ event: "blocked", url: route.request().url().slice(0, 200) });
      return route.abort("blockedbyclient");
    });
    page = await context.newPage();
    page.on("console", (m) => {
      if (["error", "warning"].includes(m.type()) || options.verbose) {
        out({ event: "console", level: m.type(), text: m.text().slice(0, 500) });
      }
    });
    page.on("pageerror", (e) => out({ event: "pageerror", text: String(e).slice(0, 500) }));
    page.on("websocket", (ws) => out({ event: "websocket", url: ws.url() }));
  }
  return page;
}

const ms = (req) => req.timeout_ms ?? 10000;

// Texts of all elements matching `selector` (Playwright locators pierce shadow roots).
async function texts(p, selector) {
  return await p.locator(selector).evaluateAll((els) => els.map((e) => (e.innerText ?? e.textContent ?? "").trim()));
}

const commands = {
  async version() {
    await ensurePage();
    return { browser: browser.version() };
  },
  async open(req) {
    const p = await ensurePage();
    await p.goto(req.url, { timeout: ms(req), waitUntil: "load" });
    return {};
  },
  async new_page() {
    if (page) await page.context().close();
    page = null;
    await ensurePage();
    return {};
  },
  async fill(req) {
    const p = await ensurePage();
    await p.locator(req.selector).first().fill(req.value, { timeout: ms(req) });
    return {};
  },
  async click(req) {
    const p = await ensurePage();
    await p.locator(req.selector).first().click({ timeout: ms(req) });
    return {};
  },
  async type_enter(req) {
    // Type like a user (key events, so Converse's keydown handler sees Enter and sends).
    const p = await ensurePage();
    const box = p.locator(req.selector).first();
    await box.click({ timeout: ms(req) });
    await box.pressSequentially(req.text, { delay: 5, timeout: ms(req) });
    await box.press("Enter", { timeout: ms(req) });
    return {};
  },
  async wait_visible(req) {
    const p = await ensurePage();
    await p.locator(req.selector).first().waitFor({ state: "visible", timeout: ms(req) });
    return { texts: await texts(p, req.selector) };
  },
  async wait_text(req) {
    // Resolve once some element matching `selector` contains `text`; on timeout say what was there.
    const p = await ensurePage();
    const deadline = Date.now() + ms(req);
    let seen = [];
    while (Date.now() < deadline) {
      seen = await texts(p, req.selector);
      if (seen.some((t) => t.includes(req.text))) return { texts: seen };
      await p.waitForTimeout(100);
    }
    throw new Error(`no ${req.selector} containing ${JSON.stringify(req.text)} within ${ms(req)}ms; saw ${JSON.stringify(seen.slice(-5))}`);
  },
  async texts(req) {
    const p = await ensurePage();
    return { texts: await texts(p, req.selector) };
  },
  async attrs(req) {
    const p = await ensurePage();
    const values = await p.locator(req.selector).evaluateAll(
      (els, name) => els.map((e) => e.getAttribute(name)),
      req.name,
    );
    return { values };
  },
  async probe() {
    const p = await ensurePage();
    return { probe: await p.evaluate(() => window.interopProbe ?? null) };
  },
  async wait_probe(req) {
    // Wait for the page's interop-probe to report `connected` (or fail with Converse's feedback text).
    const p = await ensurePage();
    const deadline = Date.now() + ms(req);
    while (Date.now() < deadline) {
      const probe = await p.evaluate(() => window.interopProbe ?? null);
      if (probe?.connected === req.connected) return { probe };
      await p.waitForTimeout(100);
    }
    const feedback = await texts(p, ".conn-feedback");
    const probe = await p.evaluate(() => window.interopProbe ?? null);
    throw new Error(`Converse connected=${probe?.connected} after ${ms(req)}ms; feedback ${JSON.stringify(feedback)}; log ${JSON.stringify(probe?.log ?? [])}`);
  },
  async screenshot(req) {
    const p = await ensurePage();
    await p.screenshot({ path: req.path, fullPage: true });
    return {};
  },
  async stop() {
    if (page) await page.context().close();
    if (browser) await browser.close(); // over CDP this only disconnects
    browser = null;
    setTimeout(() => process.exit(0), 20);
    return {};
  },
};

let chain = Promise.resolve(); // one command at a time, in order
let buffer = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  buffer += chunk;
  let nl;
  while ((nl = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, nl).trim();
    buffer = buffer.slice(nl + 1);
    if (!line) continue;
    const req = JSON.parse(line);
    const fn = commands[req.cmd];
    chain = chain.then(async () => {
      if (!fn) return out({ event: "result", id: req.id, ok: false, error: `unknown command ${req.cmd}` });
      try {
        out({ event: "result", id: req.id, ok: true, ...(await fn(req)) });
      } catch (err) {
        out({ event: "result", id: req.id, ok: false, error: String(err?.message ?? err).split("\n")[0] });
      }
    });
  }
});
process.stdin.on("end", () => {
  chain.then(() => (browser ? browser.close() : null)).finally(() => process.exit(0));
});
