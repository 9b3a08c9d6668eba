// Opens the multiview page in headless Chromium (playwright-core) and prints, once a second,
// one JSON line with every tile's label and its <video> state; then, after an optional wait,
// how many tiles are left.   node browser_check.js URL SECONDS [WAIT_MS]
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox'],
    timeout: 0,  // the test bounds the whole run; a busy machine may start Chromium slowly
  });
  const page = await browser.newPage();
  await page.goto(process.argv[2], { timeout: 0 });
  for (let i = 0; i < Number(process.argv[3] || 10); i++) {
    await page.waitForTimeout(1000);
    const tiles = await page.evaluate(() => [...document.querySelectorAll('.tile')].map(t => {
      const v = t.querySelector('video');
      return { label: t.querySelector('.label').textContent, time: v.currentTime, ready: v.readyState,
               width: v.videoWidth, latency: t.hls && t.hls.latency != null ? t.hls.latency : null,
               frames: v.getVideoPlaybackQuality().totalVideoFrames };
    }));
    console.log(JSON.stringify({ tiles }));
  }
  if (process.argv[4]) {
    await page.waitForTimeout(Number(process.argv[4]));
    console.log(JSON.stringify({ after: await page.evaluate(() => document.querySelectorAll('.tile').length) }));
  }
  await browser.close();
})();
