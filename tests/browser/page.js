// Drives headless Chromium for tests/it/browser.rs: one JSON command a line on stdin, one JSON
// answer a line on stdout, so that the Rust test decides what to check and when (it changes the
// program's state between two commands).
//
//   {"op":"open","url":"http://…/"}          → {"ok":true}
//   {"op":"wait","js":"<expression>","ms":N}  → {"ok":true,"value":…} once the expression is truthy
//   {"op":"eval","js":"<expression>"}         → {"ok":true,"value":…}
//   {"op":"viewport","width":W,"height":H}    → {"ok":true}
//   {"op":"shot","path":"…png"}               → {"ok":true}
//   {"op":"report"}                            → {"ok":true,"value":{navigations, dialogs, errors, console, foreign}}
//   {"op":"quit"}                              → {"ok":true}, then the browser closes
//
// An error is {"ok":false,"error":"…"}. The report counts what the page must never do: main-frame
// navigations after the first (a reload), dialogs (an injected alert), uncaught errors (and the
// console's error lines, which include Content-Security-Policy violations), and
// requests to any origin other than the page's own (the page must work on an offline LAN).
//
// Chromium is Debian's (`CHROMIUM`, default /usr/bin/chromium), started with a fresh profile
// and without its background traffic, which is refused on machines without a route out.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

function reply(answer) {
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'makler-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1100, height: 800 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const seen = { navigations: 0, dialogs: [], errors: [], console: [], foreign: [] };
  let origin = null;
  page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) seen.navigations += 1; });
  page.on('dialog', (dialog) => { seen.dialogs.push(dialog.message()); dialog.dismiss().catch(() => {}); });
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  page.on('console', (message) => { if (message.type() === 'error') seen.console.push(message.text()); });
  page.on('request', (request) => {
    const url = request.url();
    if (origin !== null && !url.startsWith(`${origin}/`) && url !== origin) seen.foreign.push(url);
  });

  const commands = readline.createInterface({ input: process.stdin });
  for await (const line of commands) {
    if (!line.trim()) continue;
    let command;
    try {
      command = JSON.parse(line);
    } catch (e) {
      reply({ ok: false, error: `not JSON: ${e.message}` });
      continue;
    }
    try {
      switch (command.op) {
        case 'open':
          origin = new URL(command.url).origin;
          await page.goto(command.url, { waitUntil: 'load', timeout: 60000 });
          reply({ ok: true });
          break;
        case 'wait': {
          // Evaluated from outside the page (as `eval` is), not with waitForFunction, whose
          // string form the page's Content-Security-Policy forbids.
          const deadline = Date.now() + (command.ms || 10000);
          let value = await page.evaluate(command.js);
          while (!value && Date.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 100));
            value = await page.evaluate(command.js);
          }
          reply(value ? { ok: true, value } : { ok: false, error: `not true within ${command.ms || 10000} ms: ${command.js}`, value });
          break;
        }
        case 'eval':
          reply({ ok: true, value: await page.evaluate(command.js) });
          break;
        case 'viewport':
          await page.setViewportSize({ width: command.width, height: command.height });
          reply({ ok: true });
          break;
        case 'shot':
          fs.mkdirSync(path.dirname(command.path), { recursive: true });
          await page.screenshot({ path: command.path, fullPage: true });
          reply({ ok: true });
          break;
        case 'report':
          reply({ ok: true, value: seen });
          break;
        case 'quit':
          reply({ ok: true });
          commands.close();
          break;
        default:
          reply({ ok: false, error: `unknown op ${command.op}` });
      }
    } catch (e) {
      reply({ ok: false, error: String(e && e.message ? e.message : e) });
    }
  }
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}

main().catch((e) => {
  reply({ ok: false, error: `the browser did not start: ${e && e.message ? e.message : e}` });
  process.exit(1);
});
