// Drives Debian's chromium through playwright-core for the dashboard test
// (integration/dashboard_test.go). The Go test sends one JSON command per
// line on stdin; each gets one JSON answer line on stdout with the same id.
// Commands run concurrently, so the test can start waiting for something on
// the page before it makes it happen.
//
//   HOME=<dir with .pki/nssdb> node dashboard.mjs <chromium path>
//
// Chromium on Linux trusts the roots in $HOME/.pki/nssdb besides its own:
// the test puts Caddy's internal CA root there (certutil), so certificates
// are verified as for any site and no certificate error is ignored.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const [executablePath] = process.argv.slice(2);
if (!executablePath) {
  console.error('usage: node dashboard.mjs <chromium>');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    // Chromium's sandbox does not start as root (CI runs as root).
    ...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []),
  ],
});

const pages = new Map(); // name -> { page, logs }

function page(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page ${name}`);
  return p.page;
}

const ops = {
  // open loads url in a new browser context (its own sessionStorage, as a
  // second tab or a second person would have).
  async open({ name, url, width = 1280, height = 900 }) {
    const ctx = await browser.newContext({ viewport: { width, height } });
    const pg = await ctx.newPage();
    const logs = [];
    pg.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
    pg.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    pages.set(name, { page: pg, logs });
    const resp = await pg.goto(url, { waitUntil: 'load' });
    return { status: resp.status(), headers: resp.headers() };
  },
  async reload({ name }) {
    const resp = await page(name).reload({ waitUntil: 'load' });
    return resp.status();
  },
  async fill({ name, selector, value }) {
    await page(name).fill(selector, value);
    return true;
  },
  async select({ name, selector, value }) {
    await page(name).selectOption(selector, value);
    return true;
  },
  async check({ name, selector, value }) {
    await page(name).setChecked(selector, value);
    return true;
  },
  async click({ name, selector }) {
    await page(name).click(selector);
    return true;
  },
  // waitText waits until the selector's text contains text and returns
  // Date.now() at that moment (the page polls every 20 ms).
  async waitText({ name, selector, text, timeout = 10000 }) {
    await page(name).waitForFunction(
      ([s, t]) => {
        const el = document.querySelector(s);
        return el !== null && el.textContent.includes(t);
      },
      [selector, text],
      { timeout, polling: 20 },
    );
    return Date.now();
  },
  async waitVisible({ name, selector, timeout = 10000 }) {
    await page(name).waitForSelector(selector, { state: 'visible', timeout });
    return true;
  },
  async waitChecked({ name, selector, value, timeout = 10000 }) {
    await page(name).waitForFunction(
      ([s, v]) => document.querySelector(s)?.checked === v,
      [selector, value],
      { timeout, polling: 20 },
    );
    return Date.now();
  },
  async text({ name, selector }) {
    return page(name).textContent(selector);
  },
  async eval({ name, expr }) {
    return page(name).evaluate(expr);
  },
  async viewport({ name, width, height }) {
    await page(name).setViewportSize({ width, height });
    return true;
  },
  async screenshot({ name, path, fullPage = false }) {
    await page(name).screenshot({ path, fullPage });
    return path;
  },
  async logs({ name }) {
    return pages.get(name)?.logs ?? [];
  },
  async close() {
    await browser.close();
    setTimeout(() => process.exit(0), 10);
    return true;
  },
};

const send = (o) => process.stdout.write(JSON.stringify(o) + '\n');
send({ id: 0, ok: true, result: browser.version() });

const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    send({ id: -1, ok: false, error: `bad command: ${e.message}` });
    return;
  }
  try {
    const fn = ops[cmd.op];
    if (!fn) throw new Error(`unknown op ${cmd.op}`);
    send({ id: cmd.id, ok: true, result: await fn(cmd.args ?? {}) });
  } catch (e) {
    send({ id: cmd.id, ok: false, error: String(e && e.message ? e.message : e) });
  }
});
rl.on('close', async () => {
  await browser.close().catch(() => {});
  process.exit(0);
});
