// Opens the WHEP player page in headless Chromium (playwright-core) and prints, every
// 500 ms, one JSON line with the page's window.whep (state, pictures shown, size).
//   node whep_check.js URL SECONDS
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox',
           '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
  const page = await browser.newPage();
  await page.goto(process.argv[2]);
  const end = Date.now() + 1000 * Number(process.argv[3] || 30);
  while (Date.now() < end) {
    await page.waitForTimeout(500);
    console.log(JSON.stringify({ whep: await page.evaluate(() => window.whep) }));
  }
  await browser.close();
})();
