import { describe, expect, it } from 'vitest'
import { silentLogger } from '../common/logger.js'
import { loadHubConfig } from '../hub/config.js'
import { createHub } from '../hub/hub.js'
import { tempDir } from './support/hub.js'

/** Starting the hub (issue #16): a second start while the first runs is the same start. */
describe('hub start', () => {
  it('answers two concurrent starts with one hub: one set of listeners, one admin token', async () => {
    const tmp = tempDir('start')
    const hub = createHub(loadHubConfig({ dataDir: tmp.dir, mqttPort: 0, mqttTlsPort: 0, httpPort: 0, logLevel: 'silent' }, {}), { logger: silentLogger() })
    try {
      const [a, b] = await Promise.all([hub.start(), hub.start()])
      expect(b).toBe(a)
      expect(a.mqttPort).toBeGreaterThan(0)
      expect(hub.running).toBe(a)
      // The HTTP API answers on the one port both were given.
      const health = await fetch(`http://127.0.0.1:${a.httpPort}/healthz`)
      expect(health.status).toBe(200)
    } finally {
      await hub.stop()
      tmp.remove()
    }
  })
})
