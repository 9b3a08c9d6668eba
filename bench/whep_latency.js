// Glass-to-glass latency in headless Chromium, WHEP vs LL-HLS vs HTTP-FLV in the same run:
// bench/latency_page.html on the daemon's own origin plays one source three ways at once
// and reads the publisher's time code (40 black/white 8 px blocks, ms) from every decoded
// picture through a canvas, against the page's clock (same machine).
//   NODE_PATH=.browser/node_modules node bench/whep_latency.js BASE STREAM SECONDS HLSJS_PATH \
//     [PLAYERS]   (comma-separated, default whep,ll-hls,http-flv)
// The page and mpegts.js are answered by playwright's request routing from local files
// (mpegts.js from .browser/node_modules, `make browser`), hls.js by the daemon itself:
// nothing comes from the internet. Prints one JSON line:
//   {"states": {name: state}, "samples": {name: [[wall ms, latency ms], ...]}}
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [base, stream, seconds, hlsjs, players = 'whep,ll-hls,http-flv'] = process.argv.slice(2);
const here = __dirname;
const mpegts = require.resolve('mpegts.js/dist/mpegts.js');

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox',
           '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
  const page = await browser.newPage();
  await page.route(`${base}/bench-latency.html`, (route) => route.fulfill({
    contentType: 'text/html; charset=utf-8',
    body: fs.readFileSync(path.join(here, 'latency_page.html'), 'utf8')
      .replace('__STREAM__', stream).replace('__HLSJS__', hlsjs).replace('__PLAYERS__', players),
  }));
  await page.route(`${base}/bench-assets/mpegts.js`, (route) => route.fulfill({
    contentType: 'text/javascript; charset=utf-8', body: fs.readFileSync(mpegts, 'utf8'),
  }));
  page.on('pageerror', (error) => console.error('page error:', String(error)));
  await page.goto(`${base}/bench-latency.html`);
  await page.waitForTimeout(1000 * Number(seconds || 30));
  const result = await page.evaluate(() => ({ states: window.states, samples: window.samples }));
  console.log(JSON.stringify(result));
  await browser.close();
})();
