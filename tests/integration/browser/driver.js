// Drives the system Chromium with puppeteer-core through the scenario's three phases and prints
// a JSON report: every request the browser made, every console/log/page error, and what the
// page returned. argv[2] is the JSON job written by test_browsers.py.
'use strict'
const puppeteer = require('puppeteer-core')

const job = JSON.parse(process.argv[2])
const report = { requests: [], console: [], targets: [], phases: {}, errors: [] }
let phase = 'start'

async function main () {
  const browser = await puppeteer.launch({
    executablePath: job.chromium,
    headless: true,
    userDataDir: job.userDataDir,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // any host but the local ones fails to resolve, so a stray request cannot leave the
      // machine; it is still recorded below, and fails the test
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      // the network stack's own record of every request, from any document, worker or the
      // browser itself: unlike page events it still sees what a page sends as it unloads
      `--log-net-log=${job.netLog}`, '--net-log-capture-mode=Default'
    ]
  })
  try {
    browser.on('targetcreated', (target) => report.targets.push({ type: target.type(), url: target.url(), phase }))
    const page = await browser.newPage()
    watch(page)
    const cdp = await page.createCDPSession()
    await cdp.send('Log.enable')
    cdp.on('Log.entryAdded', ({ entry }) => report.console.push({
      phase, source: `log:${entry.source}`, level: entry.level, text: entry.text, url: entry.url || ''
    }))
    report.userAgent = await browser.userAgent()

    await enter(page, 'calls')
    report.phases.calls = await page.evaluate((sdk, s) => window.sendCalls(sdk, s), job.sdk, job.scenario)
    await page.waitForNetworkIdle({ idleTime: 500, timeout: 20000 })

    await enter(page, 'unload')
    report.phases.unload = await page.evaluate((sdk, s) => window.queueForUnload(sdk, s), job.sdk, job.scenario)
    await page.waitForNetworkIdle({ idleTime: 500, timeout: 20000 })
    phase = 'left'
    await page.goto(`${job.pageOrigin}/bye.html`, { waitUntil: 'load' })
    await page.waitForNetworkIdle({ idleTime: 500, timeout: 20000 })

    await enter(page, 'probes')
    report.phases.probes = {}
    for (const url of job.probes) {
      report.phases.probes[url] = await page.evaluate((u) => window.probe(u), url)
    }
  } finally {
    await browser.close()
  }
}

async function enter (page, name) {
  phase = name
  await page.goto(`${job.pageOrigin}/page.html?phase=${name}`, { waitUntil: 'load' })
}

function watch (page) {
  const byRequest = new Map()
  page.on('request', (request) => {
    const entry = { phase, url: request.url(), method: request.method(), type: request.resourceType() }
    if (request.method() === 'POST') entry.body = request.postData() ?? null
    byRequest.set(request, entry)
    report.requests.push(entry)
  })
  page.on('response', (response) => {
    const entry = byRequest.get(response.request())
    if (entry) entry.status = response.status()
  })
  page.on('requestfailed', (request) => {
    const entry = byRequest.get(request)
    if (entry) entry.failure = request.failure()?.errorText
  })
  page.on('console', (message) => report.console.push({
    phase, source: 'console', level: message.type(), text: message.text(), url: message.location()?.url || ''
  }))
  page.on('pageerror', (error) => report.console.push({
    phase, source: 'pageerror', level: 'error', text: String(error), url: ''
  }))
}

main()
  .catch((err) => report.errors.push(String(err && err.stack ? err.stack : err)))
  .then(() => process.stdout.write(JSON.stringify(report), () => process.exit(0)))
