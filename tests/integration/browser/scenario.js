// What a site does with each SDK, configured only with the gateway's URL and a write key.
// The driver (driver.mjs) calls these through page.evaluate; `s` is the scenario's data.
'use strict'

const withTimeout = (promise, ms, what) => Promise.race([
  promise,
  new Promise((resolve, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms))
])

async function loadSegment (s, options) {
  const [analytics] = await withTimeout(
    window.SDKS.AnalyticsBrowser.load({ writeKey: s.writeKey, cdnURL: s.gateway }, options),
    10000, 'analytics.js load')
  return analytics
}

function loadRudder (s, options) {
  const analytics = new window.SDKS.RudderAnalytics()
  const ready = new Promise((resolve) => analytics.ready(() => resolve(analytics)))
  analytics.load(s.writeKey, s.gateway, { configUrl: s.gateway, logLevel: 'WARN', ...options })
  return withTimeout(ready, 10000, 'RudderStack ready')
}

// page, alias (the anonymous visitor signs up: previousId = the anonymousId), identify (with
// email), track (with properties), group: each sent with the SDK's own transport. (alias comes
// before identify because analytics.js stamps every event, alias included, with the current
// userId: after identify its alias would say user-42 → user-42.)
window.sendCalls = async function (sdk, s) {
  if (sdk === 'segment') {
    const analytics = await loadSegment(s)
    const anonymousId = analytics.user().anonymousId()
    await analytics.page(s.pageCategory, s.pageName, s.pageProperties)
    await analytics.alias(s.userId)
    await analytics.identify(s.userId, s.traits)
    await analytics.track(s.event, s.properties)
    await analytics.group(s.groupId, s.groupTraits)
    return { anonymousId, userAgent: navigator.userAgent }
  }
  const analytics = await loadRudder(s)
  const anonymousId = analytics.getAnonymousId()
  analytics.page(s.pageCategory, s.pageName, s.pageProperties)
  analytics.alias(s.userId)
  analytics.identify(s.userId, s.traits)
  analytics.track(s.event, s.properties)
  analytics.group(s.groupId, s.groupTraits)
  return { anonymousId, userAgent: navigator.userAgent }
}

// one track held back until the page goes away: analytics.js batches and flushes with
// keepalive on pagehide; RudderStack's beacon queue flushes with navigator.sendBeacon
window.queueForUnload = async function (sdk, s) {
  if (sdk === 'segment') {
    const strategy = { strategy: 'batching', config: { size: 100, timeout: 600000 } }
    const analytics = await loadSegment(s, { integrations: { 'Segment.io': { deliveryStrategy: strategy } } })
    analytics.track(s.unloadEvent, s.unloadProperties) // sent only when the page is left
    return { anonymousId: analytics.user().anonymousId() }
  }
  const analytics = await loadRudder(s, {
    useBeacon: true, beaconQueueOptions: { maxItems: 100, flushQueueInterval: 600000 }
  })
  analytics.track(s.unloadEvent, s.unloadProperties)
  return { anonymousId: analytics.getAnonymousId() }
}

// what a page sees of the gateway's answer (a missing CORS header makes fetch throw instead)
window.probe = async function (url) {
  try {
    const response = await fetch(url)
    return { status: response.status, body: await response.json() }
  } catch (err) {
    return { error: String(err) }
  }
}
