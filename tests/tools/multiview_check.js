// Opens the multiview page in headless Chromium (playwright-core) and prints, every 500 ms,
// one JSON line with every tile: its label, how it plays (mode: webrtc | ll-hls), pictures
// shown, picture width and latency.   node multiview_check.js URL SECONDS
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox'],
  });
  const page = await browser.newPage();
  await page.goto(process.argv[2]);
  const end = Date.now() + 1000 * Number(process.argv[3] || 30);
  while (Date.now() < end) {
    await page.waitForTimeout(500);
    const tiles = await page.evaluate(() => [...document.querySelectorAll('.tile')].map(t => {
      const v = t.querySelector('video');
      return { label: t.querySelector('.label').textContent, mode: t.mode || null,
               frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth,
               latency: t.mode === 'webrtc' ? t.latency : (t.hls ? t.hls.latency : null),
               fallback: t.noWebrtc || null };
    }));
    console.log(JSON.stringify({ tiles }));
  }
  await browser.close();
})();
