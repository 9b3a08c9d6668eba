// Drives the publish page (/publish/APP/STREAM) in headless Chromium with a fake camera and
// microphone: fills the token, clicks Start, and prints `window.publish` (what the page
// shows) as one JSON line whenever it changes. Commands on stdin, one a line:
//   stop    click Stop          close   close the page (pagehide)     quit   exit
//   NODE_PATH=.browser/node_modules node publish_page.js URL [TOKEN]
const readline = require('readline');
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
           '--autoplay-policy=no-user-gesture-required'],
  });
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error('page: ' + m.text()); });
  page.on('pageerror', (e) => console.log(JSON.stringify({ pageerror: String(e) })));
  await page.goto(process.argv[2]);
  if (process.argv[3]) await page.fill('#token', process.argv[3]);
  await page.click('#start');
  let closed = false, last = '';
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', async (line) => {
    const command = line.trim();
    try {
      if (command === 'stop') await page.click('#stop');
      else if (command === 'close') { closed = true; await page.close({ runBeforeUnload: true }); console.log(JSON.stringify({ closed: true })); }
      else if (command === 'quit') { await browser.close(); process.exit(0); }
    } catch (error) { console.log(JSON.stringify({ commandError: String(error) })); }
  });
  lines.on('close', async () => { await browser.close(); process.exit(0); });
  while (!closed) {
    try {
      const state = await page.evaluate(() => ({
        ...window.publish, shown: document.getElementById('state').textContent,
        detail: document.getElementById('detail').textContent,
        bitrateText: document.getElementById('bitrate').textContent }));
      const text = JSON.stringify(state);
      if (text !== last) { console.log(text); last = text; }
    } catch (error) { if (!closed) console.log(JSON.stringify({ evaluateError: String(error) })); }
    await new Promise((r) => setTimeout(r, 200));
  }
})().catch((error) => { console.log(JSON.stringify({ fatal: String(error) })); process.exit(1); });
