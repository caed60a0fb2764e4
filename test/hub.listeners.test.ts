import { describe, expect, it } from 'vitest'
import { ConfigError, loadHubConfig } from '../hub/config.js'
import { isLoopback, planListeners, type ListenerInput } from '../hub/listeners.js'

/**
 * Which listeners the hub opens (issue #12, secure by default): plaintext
 * only on loopback unless --allow-plaintext; with TLS, plaintext MQTT only
 * when asked for. Decided from the config alone, before anything is bound.
 */

const base: ListenerInput = { host: '127.0.0.1', tls: false, allowPlaintext: false, mqttPort: 1883, mqttTlsPort: 8883, httpPort: 8080 }
const served = (mqttPlain: boolean, tls: boolean) => ({ ok: true, mqttPlain, mqttTls: tls, https: tls })

describe('the listener plan', () => {
  it.each<[string, Partial<ListenerInput>, object]>([
    ['loopback, no TLS: plaintext MQTT and HTTP, as before', {}, served(true, false)],
    ['::1 without TLS', { host: '::1' }, served(true, false)],
    ['localhost without TLS', { host: 'localhost' }, served(true, false)],
    ['0.0.0.0 without TLS: refused', { host: '0.0.0.0' }, { ok: false, code: 'PLAINTEXT_REFUSED' }],
    ['a LAN address without TLS: refused', { host: '192.168.1.10' }, { ok: false, code: 'PLAINTEXT_REFUSED' }],
    [':: without TLS: refused', { host: '::' }, { ok: false, code: 'PLAINTEXT_REFUSED' }],
    ['a host name without TLS: refused (it may resolve to anything)', { host: 'hub.lan' }, { ok: false, code: 'PLAINTEXT_REFUSED' }],
    ['0.0.0.0 without TLS, --allow-plaintext', { host: '0.0.0.0', allowPlaintext: true }, served(true, false)],
    ['0.0.0.0 with TLS: MQTT over TLS and HTTPS only', { host: '0.0.0.0', tls: true }, served(false, true)],
    ['loopback with TLS: plaintext MQTT off as well', { tls: true }, served(false, true)],
    ['0.0.0.0 with TLS and --allow-plaintext: plaintext MQTT beside TLS', { host: '0.0.0.0', tls: true, allowPlaintext: true }, served(true, true)],
    ['TLS and plaintext MQTT on one fixed port', { tls: true, allowPlaintext: true, mqttPort: 8883 }, { ok: false, code: 'PORT_CONFLICT' }],
    ['TLS and plaintext MQTT both on port 0 (any free port)', { tls: true, allowPlaintext: true, mqttPort: 0, mqttTlsPort: 0 }, served(true, true)],
    ['the same fixed port for MQTT over TLS and HTTPS', { tls: true, mqttTlsPort: 8080 }, { ok: false, code: 'PORT_CONFLICT' }],
    ['plaintext MQTT off, so its port may equal the TLS port', { tls: true, mqttPort: 8883 }, served(false, true)],
  ])('%s', (_what, input, expected) => {
    expect(planListeners({ ...base, ...input })).toMatchObject(expected)
  })

  it('the refusal says exactly what to do: rollcall tls init, --tls-cert/--tls-key, or --allow-plaintext', () => {
    const plan = planListeners({ ...base, host: '0.0.0.0', dataDir: '/var/lib/rollcall' })
    expect(plan.ok).toBe(false)
    const message = plan.ok ? '' : plan.message
    expect(message).toContain('rollcall tls init --data /var/lib/rollcall --host NAME')
    expect(message).toContain('--tls-cert /var/lib/rollcall/tls/hub.pem --tls-key /var/lib/rollcall/tls/hub.key')
    expect(message).toContain('--allow-plaintext')
  })

  it.each([
    ['127.0.0.1', true], ['127.1.2.3', true], ['::1', true], ['[::1]', true], ['::ffff:127.0.0.1', true], ['LOCALHOST', true],
    ['0.0.0.0', false], ['::', false], ['10.0.0.1', false], ['128.0.0.1', false], ['hub.local', false],
  ])('%s is loopback: %s', (host, expected) => {
    expect(isLoopback(host)).toBe(expected)
  })
})

describe('TLS options in the hub config', () => {
  it('refuses a non-loopback host without TLS at load time, naming --allow-plaintext', () => {
    expect(() => loadHubConfig({ host: '0.0.0.0' }, {})).toThrow(ConfigError)
    expect(() => loadHubConfig({ host: '0.0.0.0' }, {})).toThrow(/--allow-plaintext/)
    expect(loadHubConfig({ host: '0.0.0.0', allowPlaintext: true }, {}).allowPlaintext).toBe(true)
  })

  it('needs the certificate and the key together', () => {
    expect(() => loadHubConfig({ tlsCert: 'hub.pem' }, {})).toThrow(/both the certificate and its key.*only the certificate/)
    expect(() => loadHubConfig({ tlsKey: 'hub.key' }, {})).toThrow(/only the key/)
    expect(() => loadHubConfig({ tlsCa: 'chain.pem' }, {})).toThrow(/--tls-ca/)
  })

  it('takes them from the environment and the config file, with absolute paths, and 8883 by default', () => {
    const c = loadHubConfig({}, { ROLLCALL_TLS_CERT: 'certs/hub.pem', ROLLCALL_TLS_KEY: 'certs/hub.key', ROLLCALL_MQTT_TLS_PORT: '9883' }, { tlsCa: 'certs/chain.pem' })
    expect(c.tlsCert).toBe(`${process.cwd()}/certs/hub.pem`)
    expect(c.tlsKey).toBe(`${process.cwd()}/certs/hub.key`)
    expect(c.tlsCa).toBe(`${process.cwd()}/certs/chain.pem`)
    expect(c.mqttTlsPort).toBe(9883)
    expect(loadHubConfig({}, {}).mqttTlsPort).toBe(8883)
  })
})
