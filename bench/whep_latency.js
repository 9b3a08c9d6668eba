// Glass-to-glass-ish latency in headless Chromium: opens the daemon's WHEP player page,
// reads the publisher's time code (40 black/white 8 px blocks, ms) from every decoded
// picture through a canvas and compares it with the page's clock (same machine).
//   NODE_PATH=.browser/node_modules node bench/whep_latency.js URL SECONDS
// Prints one JSON line: {"samples", "latencies": [ms...]}.
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox'],
  });
  const page = await browser.newPage();
  await page.goto(process.argv[2]);
  await page.evaluate(() => {
    const video = document.getElementById('v');
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    window.latencies = [];
    const span = 2 ** 40;
    const tick = () => {
      if (video.videoWidth) {
        canvas.width = video.videoWidth; canvas.height = video.videoHeight;
        ctx.drawImage(video, 0, 0);
        const row = ctx.getImageData(0, 8, 320, 1).data;
        let stamp = 0;
        for (let bit = 0; bit < 40; bit++) stamp = stamp * 2 + (row[(bit * 8 + 4) * 4] > 128 ? 1 : 0);
        const late = (Date.now() % span) - stamp;
        if (late >= 0 && late < 10000) window.latencies.push(late);
      }
      video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  });
  await page.waitForTimeout(1000 * Number(process.argv[3] || 20));
  const latencies = await page.evaluate(() => window.latencies);
  console.log(JSON.stringify({ samples: latencies.length, latencies }));
  await browser.close();
})();
