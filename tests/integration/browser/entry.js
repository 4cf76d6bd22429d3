// Bundled by esbuild into one offline IIFE, as a site's own bundler would: both SDKs from their
// npm packages (RudderStack's `bundled` build carries its plugins instead of fetching them).
import { AnalyticsBrowser } from '@segment/analytics-next'
import { RudderAnalytics } from '@rudderstack/analytics-js/bundled'

window.SDKS = { AnalyticsBrowser, RudderAnalytics }
