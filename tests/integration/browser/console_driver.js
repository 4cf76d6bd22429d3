// A headless Chromium the console tests steer one step at a time: each stdin line is a JSON
// command ({op, ...}), each stdout line the JSON answer ({ok, value} or {ok: false, error}).
// The test keeps the scenario in Python; this file only knows how to click, type and look.
'use strict'
const puppeteer = require('puppeteer-core')
const readline = require('readline')

const job = JSON.parse(process.argv[2])
const consoleErrors = []

async function main () {
  const browser = await puppeteer.launch({
    executablePath: job.chromium,
    headless: true,
    userDataDir: job.userDataDir,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1']
  })
  const page = await browser.newPage()
  await page.setViewport({ width: 1280, height: 800 })
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()) })
  page.on('pageerror', (e) => consoleErrors.push(String(e)))
  const ops = {
    goto: async ({ url }) => {
      const response = await page.goto(url, { waitUntil: 'domcontentloaded' })
      return { status: response ? response.status() : null, url: page.url() }
    },
    click: async ({ selector, navigate }) => {
      if (navigate) {
        const [response] = await Promise.all([
          page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click(selector)])
        return { status: response ? response.status() : null, url: page.url() }
      }
      await page.click(selector)
      return { url: page.url() }
    },
    type: async ({ selector, text }) => {
      await page.$eval(selector, (el) => { el.value = '' })
      await page.type(selector, text)
      return null
    },
    select: async ({ selector, value }) => page.select(selector, value),
    // innerText: what is shown; textContent (raw) also what a closed <details> holds
    text: async ({ selector, raw }) => page.$eval(selector, (el, r) => r ? el.textContent : el.innerText, raw),
    count: async ({ selector }) => (await page.$$(selector)).length,
    wait: async ({ selector, text, timeout }) => {
      const started = Date.now()
      await page.waitForFunction((s, t) => {
        const el = document.querySelector(s)
        return el && (!t || el.innerText.includes(t))
      }, { timeout: timeout || 10000, polling: 50 }, selector, text || '')
      return Date.now() - started
    },
    screenshot: async ({ path }) => { await page.screenshot({ path, fullPage: false }); return path },
    cookies: async () => page.cookies(),
    fetch: async ({ url, method, form }) => page.evaluate(async (u, m, f) => {
      const init = { method: m || 'GET', credentials: 'same-origin' }
      if (f) { init.body = new URLSearchParams(f) }
      const r = await fetch(u, init)
      return { status: r.status, text: (await r.text()).slice(0, 2000) }
    }, url, method, form),
    errors: async () => consoleErrors.splice(0)
  }
  const lines = readline.createInterface({ input: process.stdin })
  for await (const line of lines) {
    const command = JSON.parse(line)
    if (command.op === 'quit') break
    let answer
    try {
      answer = { ok: true, value: await ops[command.op](command) }
    } catch (error) {
      answer = { ok: false, error: String(error && error.stack ? error.stack : error) }
    }
    process.stdout.write(JSON.stringify(answer) + '\n')
  }
  await browser.close()
}

main().then(() => process.exit(0), (error) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(error) }) + '\n')
  process.exit(1)
})
