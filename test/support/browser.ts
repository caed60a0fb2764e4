import { createHash, X509Certificate } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

/**
 * Debian's Chromium driven by playwright-core (no browser download). CI
 * installs it with apt (.ci/run); a machine without it skips the browser
 * tests with this reason, and CI fails instead of skipping.
 */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const HAVE_CHROMIUM = existsSync(CHROMIUM)
export const SKIP_WITHOUT_CHROMIUM = !HAVE_CHROMIUM && process.env.CI !== 'true'

/**
 * Headless, as root in a container (no sandbox), and without the background
 * networking a closed network refuses (component updates, sync, QUIC).
 * Playwright gives every launch a new empty profile dir and removes it.
 */
export async function launchChromium(extraArgs: readonly string[] = []): Promise<{ browser: Browser; close: () => Promise<void> }> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', ...extraArgs,
    ],
  })
  return {
    browser,
    async close() {
      await browser.close().catch(() => {})
    },
  }
}

/**
 * Trusts exactly one certificate: Chromium's --ignore-certificate-errors-spki-list
 * takes the base64 SHA-256 of a certificate's SubjectPublicKeyInfo, so it pins
 * that key rather than ignoring every certificate error.
 */
export function trustOnlyCertArg(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' })
  return `--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`
}
